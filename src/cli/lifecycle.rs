//! `settle ingest` and `settle retention`: the log's lifecycle. The work is
//! in settle::tools::{ingest, retention}; this prints it.

use std::fmt::Write;
use std::path::PathBuf;

use clap::Args;
use settle::tools::ingest::{self, Format, Outcome, Zone};
use settle::tools::retention;
use settle::Settle;

use super::args::ConnArgs;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Play files: CSV or TSV with a header, NDJSON (one object a line) or
    /// Parquet, with the columns of viewing_log (id optional).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The files' format [default: from each file's extension].
    #[arg(long, value_parser = ["csv", "tsv", "parquet", "ndjson"])]
    pub format: Option<String>,
    /// Load nothing from a file with more unparseable rows than this.
    #[arg(long, default_value_t = 0)]
    pub max_rejects: u64,
    /// Load content that was loaded before.
    #[arg(long)]
    pub force: bool,
    /// Where timestamps without a zone were written: an IANA name
    /// (Asia/Seoul) or an offset (+09:00). Without it they are refused.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Files loaded at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Days of plays kept, counted back from the newest play's Seoul day.
    #[arg(long)]
    pub keep_days: u32,
    /// Say what would go, retire nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Retire for real (without it, a dry run that says so).
    #[arg(long)]
    pub yes: bool,
    /// Detach the partitions, keeping them as tables, instead of dropping them.
    #[arg(long)]
    pub detach: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn ingest(conn: &ConnArgs, a: IngestArgs) -> anyhow::Result<i32> {
    let timezone = match &a.timezone {
        None => None,
        Some(t) => Some(Zone::parse(t).ok_or_else(|| {
            settle::Error::Usage(format!(
                "--timezone {t:?} is neither an IANA zone name nor an offset like +09:00"
            ))
        })?),
    };
    let opts = ingest::Options {
        format: a.format.as_deref().and_then(Format::parse),
        max_rejects: a.max_rejects,
        force: a.force,
        timezone,
        jobs: a.jobs.max(1),
        // Hidden test hook (tests/ingest.rs kills the process there).
        pause_at_row: std::env::var("SETTLE_INGEST_PAUSE_AT_ROW")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let settle = Settle::connect(&conn.config()).await?;
    let report = ingest::ingest(settle.database(), &a.files, &opts).await?;
    let code = ingest_code(&report);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["status"] = match code {
            0 => "ok",
            1 => "refused",
            _ => "error",
        }
        .into();
        println!("{v}");
    } else {
        print!("{}", render_ingest(&report));
    }
    Ok(code)
}

/// 0 every file loaded; 1 one was refused for its content (rejects, a
/// duplicate) or the database; 2 one could not be read as asked.
fn ingest_code(r: &ingest::Report) -> i32 {
    r.files
        .iter()
        .map(|f| match f.outcome {
            Outcome::Loaded => 0,
            Outcome::Failed if f.usage_error => 2,
            _ => 1,
        })
        .max()
        .unwrap_or(0)
}

fn render_ingest(r: &ingest::Report) -> String {
    let mut o = String::new();
    for f in &r.files {
        let what = match f.outcome {
            Outcome::Loaded => format!(
                "loaded {} rows (ids {}..{}) in {:.2}s",
                f.rows_loaded,
                f.first_id.unwrap_or(0),
                f.last_id.unwrap_or(0),
                f.secs
            ),
            Outcome::Duplicate => "refused: already loaded".into(),
            Outcome::TooManyRejects => "refused: too many rejects".into(),
            Outcome::Failed => "failed".into(),
        };
        let _ = writeln!(o, "{}: {what}", f.path);
        if let Some(d) = &f.detail {
            let _ = writeln!(o, "  {d}");
        }
        for p in &f.partitions_created {
            let _ = writeln!(o, "  created partition {p}");
        }
        if f.reject_count > 0 {
            let _ = writeln!(
                o,
                "  {} rejected rows (file {}: settle keeps them in ingest_reject):",
                f.reject_count,
                f.file_id.map_or("-".into(), |i| i.to_string())
            );
            for j in f.rejects.iter().take(20) {
                let _ = writeln!(o, "    line {}, column {}: {}", j.line, j.column, j.reason);
            }
        }
    }
    let _ = writeln!(
        o,
        "{} rows in {:.2}s ({:.0} rows/s)",
        r.rows_loaded, r.secs, r.rows_per_sec
    );
    if let (Some(a), Some(b)) = (r.settled_days.first(), r.settled_days.last()) {
        let days: Vec<String> = r.settled_days.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            o,
            "plays landed in already-settled days {}: settle them again with `settle run --from {a} --to {b}` \
             (the run also re-settles every later settled day, for the tiers)",
            days.join(", ")
        );
    }
    o
}

pub async fn retention(conn: &ConnArgs, a: RetentionArgs) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let opts = retention::Options {
        keep_days: a.keep_days,
        dry_run: a.dry_run || !a.yes,
        detach: a.detach,
    };
    let report = retention::retire(settle.database(), &opts).await?;
    let unconfirmed = !a.dry_run && !a.yes && report.retired > 0;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["status"] = if unconfirmed { "unconfirmed" } else { "ok" }.into();
        println!("{v}");
    } else {
        print!("{}", render_retention(&report));
        if unconfirmed {
            println!("nothing was retired: add --yes to retire these partitions");
        }
    }
    Ok(if unconfirmed { 2 } else { 0 })
}

fn render_retention(r: &retention::Report) -> String {
    let mut o = String::new();
    let (Some(newest), Some(first)) = (r.newest_day, r.first_kept_day) else {
        return "viewing_log is empty: nothing to retire\n".into();
    };
    let _ = writeln!(o, "newest play on {newest}; keeping days from {first} on");
    for p in &r.partitions {
        let span = match (p.first_started_at, p.last_started_at) {
            (Some(a), Some(b)) => format!("{} .. {}", a.format("%F %T"), b.format("%F %T")),
            _ => "-".into(),
        };
        let verdict = if p.retire {
            match (r.dry_run, r.detached) {
                (true, _) => "would retire".to_string(),
                (false, true) => "detached".to_string(),
                (false, false) => "dropped".to_string(),
            }
        } else {
            format!("kept: {}", p.kept_because.as_deref().unwrap_or(""))
        };
        let _ = writeln!(
            o,
            "  {:<28} {:>10} rows  {span:<41}  {verdict}",
            p.name, p.rows
        );
    }
    let _ = writeln!(
        o,
        "{} {} partitions ({} rows)",
        if r.dry_run { "would retire" } else { "retired" },
        r.retired,
        r.rows_retired
    );
    if let Some(d) = r.retired_through {
        let _ = writeln!(
            o,
            "plays through {d} are retired: runs that would read them (--all, or --from a day up to {}) are refused",
            settle::rules::Day(d.0 + 1)
        );
    }
    o
}
