//! `settle bench --scale`: the cost curve. For each size it generates the
//! log with `settle datagen` (replacing it), runs the bench's (a), (b),
//! (b') and (w) on it, and records per size the run's ns/row, run/floor,
//! peak RSS and rows written; then it plots them (results/scale-*.svg), so
//! a performance engineer sees at a glance how cost grows with rows and
//! with the catalogue.

use std::path::{Path, PathBuf};

use crate::db::Database;
use crate::error::{DbContext, Error, Result};

use super::{BenchArgs, BenchRecord, Say};

/// One size of the curve.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScalePoint {
    pub rows: u64,
    pub videos: u64,
    pub datagen_s: f64,
    pub floor_s: f64,
    pub run_s: f64,
    pub run_over_floor: f64,
    pub ns_per_row: f64,
    /// The read-and-aggregate phase alone per row: the part of a run that
    /// grows with the log, without the publish of the result rows, which
    /// grow with videos × days and so weigh most on small logs.
    pub read_ns_per_row: f64,
    pub peak_rss_bytes: u64,
    pub rows_written: u64,
    pub publish_method: String,
    /// The size's own bench record (markdown) in results/.
    pub record: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScaleRecord {
    pub recorded_at: String,
    pub machine: String,
    pub workers: usize,
    pub runs_per_size: u32,
    pub points: Vec<ScalePoint>,
    /// Sizes left out, and why (e.g. not enough disk).
    pub skipped: Vec<String>,
    /// The largest and smallest ns/row from 30M rows up (the default
    /// catalogue), relative to their mean: the flatness target is ±15 %.
    pub ns_per_row_spread: Option<f64>,
    /// The same for the read-and-aggregate phase's ns/row.
    pub read_ns_per_row_spread: Option<f64>,
    pub plot: String,
}

/// The sizes asked for: every `--scale-rows` with the default catalogue,
/// then every other `--scale-videos` at 100M rows, the size the memory
/// target is set at (at the largest row count when 100M is not asked for).
fn sizes(args: &BenchArgs) -> Vec<(u64, u64)> {
    const REFERENCE_ROWS: u64 = 100_000_000;
    let base = args.scale_videos.first().copied().unwrap_or(100_000);
    let mut out: Vec<(u64, u64)> = args.scale_rows.iter().map(|&r| (r, base)).collect();
    let at = if args.scale_rows.contains(&REFERENCE_ROWS) {
        Some(REFERENCE_ROWS)
    } else {
        args.scale_rows.iter().max().copied()
    };
    if let Some(at) = at {
        out.extend(args.scale_videos.iter().skip(1).map(|&v| (at, v)));
    }
    out
}

/// Bytes a generated log of `rows` takes with its indexes, with room for
/// the bench's scratch tables: ~68 B a row measured at 100M, doubled.
fn needed_bytes(rows: u64) -> u64 {
    rows * 140
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs only writes the struct it is given.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail * s.f_frsize)
}

/// Runs the curve. The log is replaced size by size, so this refuses a
/// log settle did not generate unless `--yes`.
pub async fn scale(
    database: &Database,
    url: &str,
    exe: &Path,
    args: &BenchArgs,
    say: Say<'_>,
) -> Result<ScaleRecord> {
    let c = database.connect().await?;
    if !args.yes {
        if let Some(why) = crate::tools::guard::replace_refusal(&c).await? {
            if !why.contains("settled day") {
                return Err(Error::Usage(format!(
                    "settle bench --scale replaces videos and viewing_log at every size, but {why}; \
                     run it on a bench database, or pass --yes"
                )));
            }
        }
    }
    let data_dir: Option<PathBuf> = c
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .ok()
        .map(|r| PathBuf::from(r.get::<_, String>(0)));
    let mut rec = ScaleRecord {
        recorded_at: chrono::Utc::now().to_rfc3339(),
        machine: super::record::machine(),
        runs_per_size: args.runs,
        ..Default::default()
    };
    for (rows, videos) in sizes(args) {
        if let Some(free) = data_dir.as_deref().and_then(free_bytes) {
            if free < needed_bytes(rows) {
                let why = format!(
                    "{rows} rows × {videos} videos: needs ~{} GB of disk, {} GB free",
                    needed_bytes(rows) >> 30,
                    free >> 30
                );
                say(&format!("skipping {why}"));
                rec.skipped.push(why);
                continue;
            }
        }
        say(&format!("{rows} rows, {videos} videos: settle datagen"));
        let t = std::time::Instant::now();
        generate(database, &c, rows, videos).await?;
        let datagen_s = t.elapsed().as_secs_f64();
        let mut a = args.clone();
        a.skip_reference = true;
        a.skip_peer = true;
        a.skip_date = true;
        a.label = format!("scale-{}v", videos);
        let sub = |m: &str| say(&format!("{rows} rows, {videos} videos: {m}"));
        let b = super::bench(database, url, exe, &a, &sub).await?;
        rec.workers = b.workers;
        rec.points.push(point(&b, videos, datagen_s));
    }
    rec.ns_per_row_spread = spread(&rec.points, |p| p.ns_per_row);
    rec.read_ns_per_row_spread = spread(&rec.points, |p| p.read_ns_per_row);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = args.results_dir.join(format!("scale-{stamp}"));
    rec.plot = base.with_extension("svg").display().to_string();
    super::plot::draw(&rec, &base.with_extension("svg"))?;
    write(&rec, &base)?;
    Ok(rec)
}

async fn generate(
    database: &Database,
    c: &tokio_postgres::Client,
    rows: u64,
    videos: u64,
) -> Result<()> {
    let flags = [
        "--rows".to_string(),
        rows.to_string(),
        "--videos".into(),
        videos.to_string(),
    ];
    let g = settle_datagen::DatagenArgs::from_flags(flags)
        .map_err(|e| Error::Usage(format!("datagen flags: {e}")))?;
    settle_datagen::run(&g, database.config())
        .await
        .map_err(|e| {
            Error::Tool(format!(
                "settle datagen --rows {rows} --videos {videos}: {e}"
            ))
        })?;
    crate::tools::guard::mark(c).await?;
    crate::jobs::changes::watch(c).await?;
    c.batch_execute("CHECKPOINT")
        .await
        .db("checkpointing after datagen")
}

fn point(b: &BenchRecord, videos: u64, datagen_s: f64) -> ScalePoint {
    ScalePoint {
        rows: b.rows as u64,
        videos,
        datagen_s,
        floor_s: b.floor.median_s,
        run_s: b.engine_all.median_s,
        run_over_floor: b.ratio_run_over_floor,
        ns_per_row: b.engine_ns_per_row,
        read_ns_per_row: b.engine_phases_last_run.read_aggregate_s * 1e9 / (b.rows.max(1) as f64),
        peak_rss_bytes: b.engine_peak_rss_bytes,
        rows_written: b.engine_rows_written,
        publish_method: b.engine_publish_method.clone(),
        record: b.written_to.clone(),
    }
}

/// (max − min) / mean / 2 of ns/row over the default catalogue's sizes from
/// 30M rows up: 0.15 means within ±15 %.
fn spread(points: &[ScalePoint], value: fn(&ScalePoint) -> f64) -> Option<f64> {
    let base = points.first()?.videos;
    let v: Vec<f64> = points
        .iter()
        .filter(|p| p.videos == base && p.rows >= 30_000_000)
        .map(value)
        .collect();
    if v.len() < 2 {
        return None;
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some((hi - lo) / mean / 2.0)
}

fn write(rec: &ScaleRecord, base: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(rec).expect("record serializes");
    std::fs::write(base.with_extension("json"), json)
        .map_err(|e| Error::io("writing the scale record", e))?;
    std::fs::write(base.with_extension("md"), markdown(rec))
        .map_err(|e| Error::io("writing the scale table", e))
}

pub fn markdown(r: &ScaleRecord) -> String {
    let mut o = format!(
        "# settle bench --scale\n\nRecorded {} on {}; {} worker(s), {} round(s) per size (medians).\n\n\
         ![cost curve]({})\n\n\
         | rows | videos | datagen | floor (a) | run (b) | run/floor | ns/row | read ns/row | peak RSS | rows written | publish |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        r.recorded_at,
        r.machine,
        r.workers,
        r.runs_per_size,
        Path::new(&r.plot)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    for p in &r.points {
        o.push_str(&format!(
            "| {} | {} | {:.1} s | {:.2} s | {:.2} s | {:.2} | {:.1} | {:.1} | {} | {} | {} |\n",
            crate::report::human_count(p.rows),
            crate::report::human_count(p.videos),
            p.datagen_s,
            p.floor_s,
            p.run_s,
            p.run_over_floor,
            p.ns_per_row,
            p.read_ns_per_row,
            crate::report::mib(p.peak_rss_bytes),
            crate::report::human_count(p.rows_written),
            p.publish_method
        ));
    }
    if let Some(s) = r.ns_per_row_spread {
        o.push_str(&format!(
            "\nns/row from 30M rows up (default catalogue) within ±{:.1} % of its mean (target ±15 %).\n",
            s * 100.0
        ));
    }
    if let Some(s) = r.read_ns_per_row_spread {
        o.push_str(&format!(
            "\nread ns/row (the read-and-aggregate phase per row, without the publish of the result \
             rows, which grow with videos × days, not with rows) from 30M rows up within ±{:.1} % of its mean.\n",
            s * 100.0
        ));
    }
    for s in &r.skipped {
        o.push_str(&format!("\nskipped: {s}\n"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(rows: u64, videos: u64, ns: f64) -> ScalePoint {
        ScalePoint {
            rows,
            videos,
            ns_per_row: ns,
            ..Default::default()
        }
    }

    #[test]
    fn spread_counts_only_the_default_catalogue_from_30m_up() {
        let p = [
            pt(10_000_000, 100_000, 900.0),
            pt(30_000_000, 100_000, 300.0),
            pt(100_000_000, 100_000, 360.0),
            pt(100_000_000, 1_000_000, 999.0),
        ];
        let s = spread(&p, |p| p.ns_per_row).unwrap();
        assert!((s - 60.0 / 330.0 / 2.0).abs() < 1e-12, "{s}");
        assert_eq!(spread(&p[..2], |p| p.ns_per_row), None);
    }

    /// Other catalogues go to 100M rows when the curve reaches past it.
    #[test]
    fn other_catalogues_run_at_100m_rows_when_asked_for() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let sizes_of = |rows: &str| {
            let cli = <Cli as clap::Parser>::parse_from([
                "bench",
                "--scale-rows",
                rows,
                "--scale-videos",
                "100000,1000000",
            ]);
            sizes(&cli.bench)
        };
        let m = 1_000_000;
        assert_eq!(
            sizes_of("10000000,100000000,300000000"),
            [
                (10 * m, 100_000),
                (100 * m, 100_000),
                (300 * m, 100_000),
                (100 * m, m)
            ]
        );
        assert_eq!(
            sizes_of("10000000,30000000"),
            [(10 * m, 100_000), (30 * m, 100_000), (30 * m, m)]
        );
    }
}
