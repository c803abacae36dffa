//! `settle bench datagen`: settle's generator against `pgbench -i` on the
//! same cluster, one after the other, with the peak memory of this process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

use crate::{default_jobs, DatagenArgs, Error, Summary};

/// The headline target: datagen at most this fraction of pgbench's time.
pub const TARGET_RATIO: f64 = 0.85;

/// Time `settle datagen --rows N` (generate, load, primary key, BRIN,
/// ANALYZE) against `pgbench -i -s SCALE` (generate, load, vacuum, primary
/// keys) on the same database, and write
/// results/datagen-vs-pgbench-<UTC time>.{json,md}.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Plays for settle datagen to generate.
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    pub rows: u64,

    /// pgbench scale factor, 100,000 pgbench_accounts rows each [default:
    /// --rows / 100000, the same number of rows].
    #[arg(long, value_name = "N")]
    pub scale: Option<u64>,

    /// Time settle datagen only.
    #[arg(long)]
    pub skip_pgbench: bool,

    /// Pairs to time, one after the other, alternating which of the two goes
    /// first. The ratio is the median of the pairs' ratios: on a shared
    /// machine whose speed drifts, more pairs give a steadier figure.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub pairs: u32,

    /// Parallel load streams (and partitions) for datagen [default: the
    /// number of cores].
    #[arg(long, value_name = "N", default_value_t = default_jobs(), hide_default_value = true)]
    pub jobs: usize,
}

/// One benchmark result, as written to the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRecord {
    pub date: String,
    pub cores: usize,
    pub server_version: String,
    pub rows: u64,
    /// datagen's own account of its phases.
    pub datagen: Summary,
    /// Wall time of the whole datagen call.
    pub datagen_secs: f64,
    /// Peak resident memory of this process during datagen (VmHWM), MiB.
    pub datagen_peak_rss_mib: Option<f64>,
    pub pgbench_scale: Option<u64>,
    pub pgbench_secs: Option<f64>,
    /// pgbench's own "done in ..." line with its phase times.
    pub pgbench_report: Option<String>,
    /// The median of the pairs' datagen_secs / pgbench_secs (with one pair,
    /// its ratio). The times above are the medians of the pairs' times;
    /// `datagen` is the last run's account and the peak the highest.
    pub ratio: Option<f64>,
    /// Every pair, in the order run.
    pub pairs: Vec<PairRecord>,
    pub target_ratio: f64,
    pub meets_target: Option<bool>,
    pub json_path: String,
    pub md_path: String,
}

/// One timed pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairRecord {
    pub datagen_first: bool,
    pub datagen_secs: f64,
    pub datagen_peak_rss_mib: Option<f64>,
    pub pgbench_secs: Option<f64>,
    pub ratio: Option<f64>,
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn find_pgbench() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// libpq environment for the database `pg` points at.
fn libpq_env(pg: &Config) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => env.push(("PGHOST", h.clone())),
        Some(Host::Unix(p)) => env.push(("PGHOST", p.display().to_string())),
        None => {}
    }
    if let Some(port) = pg.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = pg.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(db) = pg.get_dbname() {
        env.push(("PGDATABASE", db.to_string()));
    }
    if let Some(pw) = pg.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(pw).into_owned()));
    }
    env
}

/// Runs `pgbench -i -s scale`, echoing its output; returns (seconds, its
/// "done in" line).
fn run_pgbench(pg: &Config, scale: u64) -> Result<(f64, Option<String>), Error> {
    let bin = find_pgbench().ok_or_else(|| {
        Error::Pgbench(
            "no pgbench binary on PATH or in /usr/lib/postgresql/*/bin; install it (Debian: apt-get install postgresql-client) or pass --skip-pgbench".into(),
        )
    })?;
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(["-i", "-s", &scale.to_string()])
        .envs(libpq_env(pg))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {}", bin.display())))?;
    let mut done = None;
    let mut tail = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("pgbench: {line}");
            if line.starts_with("done in") {
                done = Some(line.clone());
            }
            tail.push(line);
            if tail.len() > 5 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(Error::io("waiting for pgbench"))?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(Error::Pgbench(format!(
            "it exited with {status}: {}; check that the database is reachable with the same settings",
            tail.join(" | ")
        )));
    }
    Ok((secs, done))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median (the mean of the middle two for an even count).
fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = xs.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One `settle datagen` with this process's peak memory during it.
async fn time_datagen(
    dargs: &DatagenArgs,
    pg: &Config,
) -> Result<(Summary, f64, Option<f64>), Error> {
    // Writing 5 to clear_refs resets VmHWM, so the peak is datagen's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let summary = crate::run(dargs, pg).await?;
    let secs = round3(started.elapsed().as_secs_f64());
    let peak = vm_hwm_kib().map(|k| round3(k as f64 / 1024.0));
    eprintln!("{summary}");
    Ok((summary, secs, peak))
}

/// One `pgbench -i`, its tables dropped after it whatever its outcome.
async fn time_pgbench(
    client: &tokio_postgres::Client,
    pg: &Config,
    scale: u64,
) -> Result<(f64, Option<String>), Error> {
    let pg2 = pg.clone();
    let result = tokio::task::spawn_blocking(move || run_pgbench(&pg2, scale))
        .await
        .map_err(|e| Error::Internal(format!("pgbench task: {e}")))?;
    // pgbench's tables are no part of the project: drop them either way.
    client
        .batch_execute(
            "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        )
        .await
        .map_err(Error::db("dropping pgbench's tables"))?;
    let (secs, report) = result?;
    Ok((round3(secs), report))
}

/// Runs the benchmark and writes its record into `results_dir`.
pub async fn bench_vs_pgbench(
    args: &BenchArgs,
    pg: &Config,
    results_dir: &Path,
) -> Result<BenchRecord, Error> {
    let dargs = DatagenArgs {
        rows: Some(args.rows),
        jobs: args.jobs.max(1),
        ..DatagenArgs::default()
    };
    let scale = args.scale.unwrap_or((args.rows / 100_000).max(1));

    let (client, conn) = pg
        .connect(NoTls)
        .await
        .map_err(Error::db("connecting for the benchmark"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let server_version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(Error::db("reading the server version"))?
        .get(0);

    let mut pairs = Vec::new();
    let mut last = None;
    let mut pgbench_report = None;
    for i in 0..args.pairs.max(1) {
        let with_pgbench = !args.skip_pgbench;
        let datagen_first = i % 2 == 0 || !with_pgbench;
        if args.pairs > 1 {
            eprintln!(
                "pair {} of {}: {} first",
                i + 1,
                args.pairs,
                if datagen_first { "datagen" } else { "pgbench" }
            );
        }
        let mut pgbench_secs = None;
        if !datagen_first {
            let (secs, report) = time_pgbench(&client, pg, scale).await?;
            (pgbench_secs, pgbench_report) = (Some(secs), report);
        }
        let (summary, datagen_secs, peak) = time_datagen(&dargs, pg).await?;
        if datagen_first && with_pgbench {
            let (secs, report) = time_pgbench(&client, pg, scale).await?;
            (pgbench_secs, pgbench_report) = (Some(secs), report);
        }
        pairs.push(PairRecord {
            datagen_first,
            datagen_secs,
            datagen_peak_rss_mib: peak,
            pgbench_secs,
            ratio: pgbench_secs.map(|p| round3(datagen_secs / p)),
        });
        last = Some(summary);
    }
    let summary = last.expect("at least one pair");
    let datagen_secs = median(pairs.iter().map(|p| p.datagen_secs)).expect("a pair");
    let peak = pairs
        .iter()
        .filter_map(|p| p.datagen_peak_rss_mib)
        .reduce(f64::max);
    let pgbench_secs = median(pairs.iter().filter_map(|p| p.pgbench_secs));
    let ratio = median(pairs.iter().filter_map(|p| p.ratio)).map(round3);

    let date = chrono::Local::now().date_naive().to_string();
    std::fs::create_dir_all(results_dir)
        .map_err(Error::io(format!("creating {}", results_dir.display())))?;
    // Stamped to the second, so a second run the same day adds a record
    // instead of replacing the first.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let json_path = results_dir.join(format!("datagen-vs-pgbench-{stamp}.json"));
    let md_path = results_dir.join(format!("datagen-vs-pgbench-{stamp}.md"));
    let record = BenchRecord {
        date,
        cores: default_jobs(),
        server_version,
        rows: summary.rows,
        datagen: summary,
        datagen_secs,
        datagen_peak_rss_mib: peak,
        pgbench_scale: (!args.skip_pgbench).then_some(scale),
        pgbench_secs,
        pgbench_report,
        ratio,
        pairs,
        target_ratio: TARGET_RATIO,
        meets_target: ratio.map(|r| r <= TARGET_RATIO),
        json_path: json_path.display().to_string(),
        md_path: md_path.display().to_string(),
    };
    let json = serde_json::to_string_pretty(&record)
        .map_err(|e| Error::Internal(format!("serialising the record: {e}")))?;
    std::fs::write(&json_path, json + "\n")
        .map_err(Error::io(format!("writing {}", json_path.display())))?;
    std::fs::write(&md_path, markdown(&record))
        .map_err(Error::io(format!("writing {}", md_path.display())))?;
    Ok(record)
}

fn markdown(r: &BenchRecord) -> String {
    let d = &r.datagen;
    let mut s = format!(
        "# settle datagen vs pgbench -i ({})\n\n\
         PostgreSQL {}, {} cores. Both ran against the same database, {}.\n\n\
         | run | rows | time (s) | rows/s | peak RSS (MiB) |\n\
         |---|---:|---:|---:|---:|\n\
         | settle datagen ({}generate+load {:.1} s, PK+BRIN {:.1} s, ANALYZE {:.1} s) | {} | {:.1} | {:.0} | {} |\n",
        r.date,
        r.server_version,
        r.cores,
        if r.pairs.len() > 1 {
            format!(
                "in {} pairs one after the other, alternating which went first; times are medians",
                r.pairs.len()
            )
        } else {
            "datagen first, then pgbench".into()
        },
        if r.pairs.len() > 1 { "last run: " } else { "" },
        d.generate_load_secs,
        d.index_secs,
        d.analyze_secs,
        r.rows,
        r.datagen_secs,
        r.rows as f64 / r.datagen_secs.max(1e-9),
        r.datagen_peak_rss_mib
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "n/a".into()),
    );
    if let (Some(scale), Some(secs)) = (r.pgbench_scale, r.pgbench_secs) {
        let rows = scale * 100_000;
        s.push_str(&format!(
            "| pgbench -i -s {scale} (generate+load, vacuum, primary keys) | {rows} | {secs:.1} | {:.0} | n/a |\n",
            rows as f64 / secs.max(1e-9)
        ));
    }
    if r.pairs.len() > 1 {
        s.push_str(
            "\n| pair | first | datagen (s) | pgbench (s) | ratio |\n|---:|---|---:|---:|---:|\n",
        );
        for (i, p) in r.pairs.iter().enumerate() {
            let opt = |x: Option<f64>, prec: usize| {
                x.map(|v| format!("{v:.prec$}"))
                    .unwrap_or_else(|| "n/a".into())
            };
            s.push_str(&format!(
                "| {} | {} | {:.1} | {} | {} |\n",
                i + 1,
                if p.datagen_first {
                    "datagen"
                } else {
                    "pgbench"
                },
                p.datagen_secs,
                opt(p.pgbench_secs, 1),
                opt(p.ratio, 3),
            ));
        }
    }
    s.push('\n');
    match r.ratio {
        Some(ratio) => s.push_str(&format!(
            "Ratio datagen / pgbench{}: **{ratio:.3}** (target <= {}: {}).\n",
            if r.pairs.len() > 1 {
                ", median of the pairs"
            } else {
                ""
            },
            r.target_ratio,
            if ratio <= r.target_ratio {
                "met"
            } else {
                "NOT met"
            }
        )),
        None => s.push_str("pgbench was skipped.\n"),
    }
    if let Some(report) = &r.pgbench_report {
        s.push_str(&format!("\npgbench: `{report}`\n"));
    }
    s
}
