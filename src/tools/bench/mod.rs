//! `settle bench`: end-to-end timings on the current data, every case on the
//! same cluster in one invocation, reported as ratios against baselines
//! measured in the same run (the machines are shared and noisy).
//!
//! - (a) the floor: server-side `COPY (SELECT <engine columns> ...) TO
//!   '/dev/null'` over as many parallel ranges as workers (id and ctid
//!   ranges; the faster counts);
//! - (b) `settle run --all`, as a subprocess so its own peak RSS is measured,
//!   onto empty result tables each time, so every round publishes every row;
//! - (b') the same partitions read and decoded by as many threads, nothing
//!   aggregated: it splits run/floor into what the engine's reads cost and
//!   what the settlement work adds;
//! - (w) the write floor: (b)'s result rows copied into empty copies of
//!   their tables in one transaction, which is what publishing them costs
//!   the server with nothing left to compute. Publishing follows the last
//!   read (a day's sums are final only once every partition is read) in one
//!   backend, so no run that publishes its rows takes less than (a) + (w);
//! - (c) sql/reference/ on the same data;
//! - (d) one `--date` run of a day after the days before it were settled,
//!   the nightly case.
//!
//! (a), (b) and (b') run in rounds, one of each per round, and the record
//! also gives each round's ratios against its own floor.
//!
//! Each case also records the CPU seconds it cost, split into the server's
//! and the engine process's, because on 2 cores a time ratio alone cannot
//! say which side to work on. Case (c) doubles as a check: the record says
//! whether (b)'s published rows equal the reference's, and the bench fails
//! after writing it when they do not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_postgres::Client;

use crate::db::{self, Database};
use crate::engine::RunSummary;
use crate::error::{DbContext, Error, Result};
use crate::pipeline::partition::{partition_query, split, Partition, Scope};
use crate::pipeline::publish::{copy_in, PUBLISHED_TABLES};
use crate::pipeline::read::{copy_plays, open_reader, PLAY_COLUMNS};
use crate::rules::Day;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Runs of each case; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Runs of the reference SQL (slow on big data).
    #[arg(long)]
    pub reference_runs: Option<u32>,
    /// Skip case (c), the reference SQL.
    #[arg(long)]
    pub skip_reference: bool,
    /// Reader threads for the engine and parallel ranges for the floor
    /// [default: number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Partitions for the engine [default: the engine's own].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// The day for case (d) [default: the middle day of the data].
    #[arg(long)]
    pub date: Option<chrono::NaiveDate>,
    /// Where to write the JSON record and the markdown table.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// A label for the record's file name.
    #[arg(long, default_value = "engine")]
    pub label: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub runs_s: Vec<f64>,
    pub median_s: f64,
}

impl Stats {
    fn of(runs: Vec<f64>) -> Stats {
        Stats {
            median_s: median(runs.clone()).unwrap_or(0.0),
            runs_s: runs,
        }
    }
}

/// The middle value (the upper of the two for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Ratios of the runs of one round, each against the floor of its own
/// round: on a machine that drifts, sturdier than a ratio of medians taken
/// minutes or an hour apart.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Rounds {
    pub run_over_floor: Vec<f64>,
    pub reads_over_floor: Vec<f64>,
    pub median_run_over_floor: f64,
    pub median_reads_over_floor: f64,
}

impl Rounds {
    fn of(floor: &Stats, run: &Stats, reads: &Stats) -> Rounds {
        let over = |x: &Stats| -> Vec<f64> {
            x.runs_s
                .iter()
                .zip(&floor.runs_s)
                .map(|(x, f)| x / f)
                .collect()
        };
        let (run_over_floor, reads_over_floor) = (over(run), over(reads));
        Rounds {
            median_run_over_floor: median(run_over_floor.clone()).unwrap_or(0.0),
            median_reads_over_floor: median(reads_over_floor.clone()).unwrap_or(0.0),
            run_over_floor,
            reads_over_floor,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchRecord {
    pub label: String,
    pub recorded_at: String,
    pub machine: String,
    pub rows: i64,
    pub table_bytes: i64,
    pub workers: usize,
    pub floor_id_ranges: Stats,
    pub floor_ctid_ranges: Stats,
    pub floor_method: String,
    pub floor: Stats,
    pub engine_all: Stats,
    /// (b'): the engine's partitions read and decoded, nothing aggregated.
    pub engine_reads: Stats,
    /// Rows (b') decoded in its last run: all of viewing_log.
    pub engine_reads_rows: u64,
    /// (w): (b)'s result rows copied into empty tables in one transaction.
    pub write_floor: Stats,
    /// Rows (w) copied: settlement_video's and settlement_creator's.
    pub write_floor_rows: u64,
    /// settlement_video and settlement_creator rows (b)'s last run wrote.
    pub engine_rows_written: u64,
    pub reference: Option<Stats>,
    pub date_setup_s: f64,
    pub date_day: String,
    pub engine_date: Stats,
    pub date_rows_read: u64,
    pub date_lookback_rows: u64,
    pub ratio_run_over_floor: f64,
    pub ratio_write_over_floor: f64,
    /// (a + w) / a: the least run/floor of a run that publishes its rows,
    /// were its reads to cost what the floor costs and its own work nothing.
    pub bound_run_over_floor: f64,
    /// run/floor split in two: what the reads cost, and what the rest adds.
    pub ratio_reads_over_floor: f64,
    pub ratio_run_over_reads: f64,
    pub ratio_reference_over_run: Option<f64>,
    pub ratio_date_over_all: f64,
    /// The same ratios within each round of (a), (b) and (b').
    pub rounds: Rounds,
    pub engine_peak_rss_bytes: u64,
    pub partitions: u32,
    pub partition_seconds: Percentiles,
    pub partition_rows_per_s: Percentiles,
    pub exact_path_seeds: u64,
    pub exact_path_late_rows: u64,
    pub exact_path_reread_rows: u64,
    pub max_disorder_s: f64,
    pub engine_phases_last_run: crate::engine::Phases,
    pub engine_ns_per_row: f64,
    /// Rows that differ between (b)'s results and (c)'s; `None` without (c).
    pub reference_differing_rows: Option<u64>,
    /// Median CPU seconds per run of each case.
    pub cpu: CpuRecord,
}

/// Median CPU seconds of one case's runs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Cpu {
    /// The server's: the backends and parallel workers the case used, as the
    /// postmaster reaped them. `None` when the server is not on this machine.
    pub server_s: Option<f64>,
    /// The client's, user + system: the `settle run` process, or the bench's
    /// own threads for (b') (near 0 for server-only cases).
    pub engine_s: f64,
}

impl Cpu {
    fn of(runs: &[(Option<f64>, f64)]) -> Cpu {
        let server: Option<Vec<f64>> = runs.iter().map(|r| r.0).collect();
        Cpu {
            server_s: server.and_then(median),
            engine_s: median(runs.iter().map(|r| r.1).collect()).unwrap_or(0.0),
        }
    }

    fn total(&self) -> Option<f64> {
        self.server_s.map(|s| s + self.engine_s)
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuRecord {
    /// Why server CPU is missing, when it is.
    pub server_unmeasured: Option<String>,
    pub floor_id_ranges: Cpu,
    pub floor_ctid_ranges: Cpu,
    pub engine_all: Cpu,
    pub engine_reads: Cpu,
    pub write_floor: Cpu,
    pub reference: Option<Cpu>,
    pub engine_date: Cpu,
}

/// Counts the CPU seconds of a case: the server's from the postmaster's
/// `cutime + cstime` (the user and system time of its exited children), the
/// engine's from this process's reaped children (`getrusage`).
struct CpuMeter {
    /// `/proc/<postmaster pid>/stat`, or why the server cannot be measured.
    server: std::result::Result<PathBuf, String>,
}

#[derive(Clone, Copy)]
struct CpuMark {
    server: Option<f64>,
    /// This process's reaped children's (a `settle run`).
    children: f64,
    /// This process's own (the bench's reader threads in (b')).
    own: f64,
}

impl CpuMeter {
    /// Finds the postmaster through the server's data directory; only a
    /// server on this machine (the embedded one, say) can be measured.
    async fn new(c: &Client) -> CpuMeter {
        CpuMeter {
            server: Self::find(c).await,
        }
    }

    async fn find(c: &Client) -> std::result::Result<PathBuf, String> {
        let r = c
            .query_one(
                "SELECT current_setting('data_directory'), current_setting('port')",
                &[],
            )
            .await
            .map_err(|e| {
                format!("cannot read data_directory ({e}); needs superuser or pg_read_all_settings")
            })?;
        let (dir, port): (String, String) = (r.get(0), r.get(1));
        let (pid, on_port) = db::embedded::postmaster_pid(Path::new(&dir)).map_err(|e| {
            format!("cannot read {dir}/postmaster.pid ({e}); is the server on another machine?")
        })?;
        // A same-named directory of another server on this machine must not
        // be mistaken for this one.
        if on_port != port.parse().ok() {
            return Err(format!(
                "{dir}/postmaster.pid is not this server's (port {port})"
            ));
        }
        let stat = PathBuf::from(format!("/proc/{pid}/stat"));
        let text = std::fs::read_to_string(&stat)
            .map_err(|e| format!("cannot read {} ({e})", stat.display()))?;
        reaped_children_seconds(&text, clock_ticks())
            .ok_or_else(|| format!("cannot parse {}", stat.display()))?;
        Ok(stat)
    }

    /// Marks the start of a case, after vacuuming the result tables: the
    /// cases before wrote them, and autovacuum would otherwise wake inside
    /// this case's window, on its two cores and in its server CPU (the
    /// `--date` runs right after their setup's 1.7M inserted rows once
    /// showed 37.9 server core-seconds for one day, against 11).
    async fn start(&self, c: &Client) -> Result<CpuMark> {
        c.batch_execute(&format!("VACUUM (ANALYZE) {PUBLISHED_TABLES}"))
            .await
            .db("vacuuming the result tables between cases")?;
        Ok(self.mark())
    }

    fn mark(&self) -> CpuMark {
        CpuMark {
            server: self.server_seconds(),
            children: cpu_seconds(libc::RUSAGE_CHILDREN),
            own: cpu_seconds(libc::RUSAGE_SELF),
        }
    }

    fn server_seconds(&self) -> Option<f64> {
        let stat = self.server.as_ref().ok()?;
        let text = std::fs::read_to_string(stat).ok()?;
        reaped_children_seconds(&text, clock_ticks())
    }

    /// Server and client CPU seconds since `m`, the client being the
    /// subprocesses the case ran.
    async fn since(&self, c: &Client, m: CpuMark) -> Result<(Option<f64>, f64)> {
        let (server, now) = self.settled(c, m).await?;
        Ok((server, now.children - m.children))
    }

    /// As `since`, the client being this process (a case run in-process).
    async fn since_in_process(&self, c: &Client, m: CpuMark) -> Result<(Option<f64>, f64)> {
        let (server, now) = self.settled(c, m).await?;
        Ok((server, now.own - m.own))
    }

    /// The server's CPU seconds since `m` and a fresh mark, once the case's
    /// backends have exited (their time reaches `cutime` only when the
    /// postmaster reaps them).
    async fn settled(&self, c: &Client, m: CpuMark) -> Result<(Option<f64>, CpuMark)> {
        if self.server.is_ok() {
            for _ in 0..200 {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                         AND datname = current_database() \
                         AND backend_type IN ('client backend', 'parallel worker')",
                        &[],
                    )
                    .await
                    .db("waiting for the case's connections to close")?
                    .get(0);
                if n == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // A backend leaves pg_stat_activity just before it exits.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let now = self.mark();
        let server = match (now.server, m.server) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        Ok((server, now))
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system seconds of this process (`RUSAGE_SELF`) or of its
/// waited-for children (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// `cutime + cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line, in
/// seconds. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from its closing parenthesis.
fn reaped_children_seconds(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let cutime: u64 = f.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = f.get(17 - 3)?.parse().ok()?;
    Some((cutime + cstime) as f64 / ticks)
}

/// The tables that hold viewing_log's rows: itself, or its leaf partitions
/// (a full `settle datagen` load partitions it by id range).
const LEAVES: &str = "SELECT relid FROM pg_partition_tree('viewing_log') WHERE isleaf \
     UNION ALL SELECT oid FROM pg_class WHERE oid = 'viewing_log'::regclass AND relkind = 'r'";

/// The floor's query for pages `lo..hi` of the leaves laid end to end: a
/// TID range scan of each leaf's share.
fn ctid_range_query(leaves: &[(String, i64)], lo: i64, hi: i64) -> String {
    let mut parts = Vec::new();
    let mut base = 0;
    for (rel, pages) in leaves {
        let (a, b) = (lo.max(base) - base, hi.min(base + pages) - base);
        if a < b {
            parts.push(format!(
                "SELECT {PLAY_COLUMNS} FROM {rel} WHERE ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid"
            ));
        }
        base += pages;
    }
    if parts.is_empty() {
        return format!("SELECT {PLAY_COLUMNS} FROM viewing_log WHERE false");
    }
    parts.join(" UNION ALL ")
}

/// Runs the bench against `database` using the `settle` binary at `exe`.
pub async fn bench(
    database: &Database,
    url: &str,
    exe: &Path,
    args: &BenchArgs,
) -> Result<BenchRecord> {
    let c = database.connect().await?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let r = c
        .query_one(
            &format!("SELECT count(*), (SELECT sum(pg_table_size(relid))::int8 FROM ({LEAVES}) l), min(id), max(id) FROM viewing_log"),
            &[],
        )
        .await
        .db("sizing viewing_log")?;
    let rows: i64 = r.get(0);
    if rows == 0 {
        return Err(Error::Tool(
            "viewing_log is empty; fill it first, e.g. `settle datagen` (100M rows) or `settle datagen --rows 3000000`".into(),
        ));
    }
    let mut rec = BenchRecord {
        label: args.label.clone(),
        recorded_at: chrono::Utc::now().to_rfc3339(),
        machine: machine(),
        rows,
        table_bytes: r.get(1),
        workers,
        ..Default::default()
    };
    let (id_lo, id_hi): (i64, i64) = (r.get(2), r.get(3));
    c.batch_execute("CHECKPOINT")
        .await
        .db("checkpointing before the bench")?;
    let meter = CpuMeter::new(&c).await;
    if let Err(why) = &meter.server {
        eprintln!("bench: server CPU not measured: {why}");
        rec.cpu.server_unmeasured = Some(why.clone());
    }

    // The floor's queries, both ways.
    let id_queries: Vec<String> = split(id_lo, id_hi, workers as u32)
        .iter()
        .map(|p| {
            format!(
                "SELECT {PLAY_COLUMNS} FROM viewing_log WHERE id >= {} AND id <= {}",
                p.id_lo, p.id_hi
            )
        })
        .collect();
    let leaves: Vec<(String, i64)> = c
        .query(
            &format!(
                "SELECT relid::regclass::text, pg_relation_size(relid) / current_setting('block_size')::int8 \
                 FROM ({LEAVES}) l ORDER BY pg_relation_size(relid) DESC, 1"
            ),
            &[],
        )
        .await
        .db("sizing viewing_log")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let pages: i64 = leaves.iter().map(|l| l.1).sum();
    let ctid_queries: Vec<String> = split(0, pages.max(1) - 1, workers as u32)
        .iter()
        .map(|p| ctid_range_query(&leaves, p.id_lo, p.id_hi + 1))
        .collect();
    // (a), (b) and (b') in rounds, one of each per round, so that a machine
    // drifting over the bench's half hour moves all three alike, and each
    // round's ratios compare runs minutes apart.
    let (mut id_runs, mut ctid_runs) = (Vec::new(), Vec::new());
    let (mut id_cpu, mut ctid_cpu) = (Vec::new(), Vec::new());
    let mut engine_runs = Vec::new();
    let mut engine_cpu = Vec::new();
    let mut last: Option<RunSummary> = None;
    let mut part_secs = Histogram::<u64>::new(3).expect("histogram");
    let mut part_rate = Histogram::<u64>::new(3).expect("histogram");
    let mut reads = Vec::new();
    let mut reads_cpu = Vec::new();
    for run in 0..args.runs {
        let round = format!("{}/{}", run + 1, args.runs);
        // (a) the floor, both ways.
        eprintln!("bench: round {round}: floor");
        let m = meter.start(&c).await?;
        id_runs.push(floor(database, &id_queries).await?);
        id_cpu.push(meter.since(&c, m).await?);
        let m = meter.start(&c).await?;
        ctid_runs.push(floor(database, &ctid_queries).await?);
        ctid_cpu.push(meter.since(&c, m).await?);

        // (b) the engine, --all, publishing every row: with the results of
        // the round before left in place it would write only what changed
        // (nothing), and the first round would differ from the others.
        eprintln!("bench: round {round}: settle run --all");
        c.batch_execute(&format!("TRUNCATE {PUBLISHED_TABLES}"))
            .await
            .db("clearing results before a run")?;
        let mut cmd_args = vec![
            "run".to_string(),
            "--all".into(),
            "--force".into(),
            "--fresh".into(),
            "--json".into(),
        ];
        cmd_args.extend(engine_flags(args, workers));
        let m = meter.start(&c).await?;
        let (secs, s) = run_settle(exe, url, &cmd_args)?;
        engine_cpu.push(meter.since(&c, m).await?);
        engine_runs.push(secs);
        rec.engine_peak_rss_bytes = rec.engine_peak_rss_bytes.max(s.peak_rss_bytes);
        for p in &s.partition_timings {
            let _ = part_secs.record((p.seconds * 1000.0) as u64);
            if p.seconds > 0.0 {
                let _ = part_rate.record((p.rows as f64 / p.seconds) as u64);
            }
        }

        // (b') the same partitions (as that run planned them), read and
        // decoded only.
        let parts = crate::jobs::recorded_plan(&c, s.execution_id).await?;
        if parts.is_empty() {
            return Err(Error::Tool(format!(
                "execution {} recorded no partitions, so there is nothing to read for case (b')",
                s.execution_id
            )));
        }
        last = Some(s);
        eprintln!("bench: round {round}: the engine's reads alone");
        let m = meter.start(&c).await?;
        let (secs, n) =
            tokio::task::block_in_place(|| engine_reads(database.config(), &parts, workers))?;
        reads_cpu.push(meter.since_in_process(&c, m).await?);
        reads.push(secs);
        rec.engine_reads_rows = n;
    }
    rec.floor_id_ranges = Stats::of(id_runs);
    rec.floor_ctid_ranges = Stats::of(ctid_runs);
    rec.cpu.floor_id_ranges = Cpu::of(&id_cpu);
    rec.cpu.floor_ctid_ranges = Cpu::of(&ctid_cpu);
    let (method, floor_stats) = if rec.floor_ctid_ranges.median_s < rec.floor_id_ranges.median_s {
        ("ctid ranges", rec.floor_ctid_ranges.clone())
    } else {
        ("id ranges", rec.floor_id_ranges.clone())
    };
    rec.floor_method = format!("{workers} parallel {method}");
    rec.floor = floor_stats;
    rec.engine_all = Stats::of(engine_runs);
    rec.cpu.engine_all = Cpu::of(&engine_cpu);
    let last = last.expect("at least one run");
    rec.partitions = last.partitions;
    rec.engine_rows_written = last.written.video_rows + last.written.creator_rows;
    rec.exact_path_seeds = last.exact_path.seeds;
    rec.exact_path_late_rows = last.exact_path.late_rows;
    rec.exact_path_reread_rows = last.exact_path.reread_rows;
    rec.max_disorder_s = last.max_disorder_s;
    rec.engine_phases_last_run = last.phases.clone();
    rec.partition_seconds = percentiles(&part_secs, 1000.0);
    rec.partition_rows_per_s = percentiles(&part_rate, 1.0);
    rec.engine_ns_per_row = rec.engine_all.median_s * 1e9 / rows as f64;
    rec.engine_reads = Stats::of(reads);
    rec.cpu.engine_reads = Cpu::of(&reads_cpu);
    rec.rounds = Rounds::of(&rec.floor, &rec.engine_all, &rec.engine_reads);

    // (w) the write floor, on the rows (b) published.
    let mut payload = Vec::new();
    for t in WRITTEN_TABLES {
        payload.push(copy_table_out(&c, t).await?);
    }
    let (mut runs, mut cpu) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        eprintln!("bench: the write floor {}/{}", run + 1, args.runs);
        let mut wc = database.connect().await?;
        wc.batch_execute(&scratch_tables_sql())
            .await
            .db("creating the write floor's scratch tables")?;
        let m = meter.start(&c).await?;
        let (secs, n) = write_floor(&mut wc, &payload).await?;
        wc.batch_execute(&drop_scratch_tables_sql())
            .await
            .db("dropping the write floor's scratch tables")?;
        // Its own connection, so its backend's CPU is reaped and counted.
        drop(wc);
        cpu.push(meter.since(&c, m).await?);
        runs.push(secs);
        rec.write_floor_rows = n;
    }
    drop(payload);
    rec.write_floor = Stats::of(runs);
    rec.cpu.write_floor = Cpu::of(&cpu);

    // (c) the reference.
    if !args.skip_reference {
        let n = args.reference_runs.unwrap_or(args.runs).max(1);
        let mut runs = Vec::new();
        let mut cpu = Vec::new();
        for run in 0..n {
            eprintln!("bench: sql/reference {}/{}", run + 1, n);
            // Its own connection, so its backend's CPU is reaped and counted.
            let rc = database.connect().await?;
            let m = meter.start(&c).await?;
            let t = Instant::now();
            crate::tools::reference::run(&rc).await?;
            runs.push(t.elapsed().as_secs_f64());
            drop(rc);
            cpu.push(meter.since(&c, m).await?);
        }
        eprintln!("bench: comparing (b)'s results with the reference's");
        let diff = crate::tools::reference::compare(&c).await?;
        if !diff.is_empty() {
            eprintln!("bench: {diff}");
        }
        rec.reference_differing_rows = Some(diff.differing_rows());
        c.batch_execute("DROP SCHEMA IF EXISTS reference CASCADE")
            .await
            .db("dropping the reference's tables")?;
        rec.reference = Some(Stats::of(runs));
        rec.cpu.reference = Some(Cpu::of(&cpu));
    }

    // (d) the nightly case: days before D settled, then D alone.
    let (first, last_day) = data_days(&c).await?;
    let day = args
        .date
        .map(Day::from_date)
        .unwrap_or(Day((first.0 + last_day.0) / 2));
    rec.date_day = day.to_string();
    c.batch_execute(&format!("TRUNCATE {PUBLISHED_TABLES}"))
        .await
        .db("clearing results for the date case")?;
    if day > first {
        eprintln!(
            "bench: settling {first} .. {} for the date case",
            Day(day.0 - 1)
        );
        let mut a = vec![
            "run".to_string(),
            "--from".into(),
            first.to_string(),
            "--to".into(),
            Day(day.0 - 1).to_string(),
            "--force".into(),
            "--fresh".into(),
            "--json".into(),
        ];
        a.extend(engine_flags(args, workers));
        rec.date_setup_s = run_settle(exe, url, &a)?.0;
    }
    let mut date_runs = Vec::new();
    let mut cpu = Vec::new();
    for run in 0..args.runs {
        eprintln!("bench: settle run --date {day} {}/{}", run + 1, args.runs);
        let a = vec![
            "run".to_string(),
            "--date".into(),
            day.to_string(),
            "--force".into(),
            "--fresh".into(),
            "--json".into(),
        ];
        let m = meter.start(&c).await?;
        let (secs, s) = run_settle(exe, url, &a)?;
        cpu.push(meter.since(&c, m).await?);
        rec.date_rows_read = s.rows_read;
        rec.date_lookback_rows = s.lookback_rows;
        date_runs.push(secs);
    }
    rec.engine_date = Stats::of(date_runs);
    rec.cpu.engine_date = Cpu::of(&cpu);

    rec.ratio_run_over_floor = rec.engine_all.median_s / rec.floor.median_s;
    rec.ratio_reads_over_floor = rec.engine_reads.median_s / rec.floor.median_s;
    rec.ratio_write_over_floor = rec.write_floor.median_s / rec.floor.median_s;
    rec.bound_run_over_floor = 1.0 + rec.ratio_write_over_floor;
    rec.ratio_run_over_reads = rec.engine_all.median_s / rec.engine_reads.median_s;
    rec.ratio_reference_over_run = rec
        .reference
        .as_ref()
        .map(|r| r.median_s / rec.engine_all.median_s);
    rec.ratio_date_over_all = rec.engine_date.median_s / rec.engine_all.median_s;
    write_record(&rec, &args.results_dir)?;
    if let Some(n @ 1..) = rec.reference_differing_rows {
        return Err(Error::Tool(format!(
            "the engine's results differ from sql/reference in {n} rows (listed above; the record \
             is written): a timing of wrong results means nothing. This is a bug in one of the \
             two; reproduce it on small data with the differential tests"
        )));
    }
    Ok(rec)
}

fn engine_flags(args: &BenchArgs, workers: usize) -> Vec<String> {
    let mut v = vec!["--workers".to_string(), workers.to_string()];
    if let Some(p) = args.partitions {
        v.push("--partitions".into());
        v.push(p.to_string());
    }
    v
}

async fn data_days(c: &Client) -> Result<(Day, Day)> {
    let r = c
        .query_one(
            "SELECT min(period_start), max(period_start) FROM settlement_video WHERE period_kind = 'day'",
            &[],
        )
        .await
        .db("finding the data's days")?;
    let a: Option<chrono::NaiveDate> = r.get(0);
    let b: Option<chrono::NaiveDate> = r.get(1);
    match (a, b) {
        (Some(a), Some(b)) => Ok((Day::from_date(a), Day::from_date(b))),
        _ => Err(Error::Tool(
            "the --all runs settled no day; is viewing_log all invalid?".into(),
        )),
    }
}

/// One floor run: all range queries at once, each on its own connection.
async fn floor(database: &Database, queries: &[String]) -> Result<f64> {
    let mut clients = Vec::new();
    for _ in queries {
        clients.push(database.connect().await?);
    }
    let t = Instant::now();
    try_join_all(clients.iter().zip(queries).map(|(c, q)| async move {
        c.batch_execute(&format!("COPY ({q}) TO '/dev/null' (FORMAT binary)"))
            .await
            .db("running the floor COPY (needs superuser or pg_write_server_files)")
    }))
    .await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The sums tables a run publishes in bulk (top_videos is a few hundred rows).
const WRITTEN_TABLES: [&str; 2] = ["settlement_video", "settlement_creator"];

fn scratch(table: &str) -> String {
    format!("bench_write_floor_{table}")
}

/// Empty copies of the written tables, primary keys included, created in a
/// transaction of their own: one created in the writing transaction would
/// skip the WAL (`wal_level = minimal`), which the engine's writes do not.
fn scratch_tables_sql() -> String {
    WRITTEN_TABLES
        .iter()
        .map(|t| {
            format!(
                "DROP TABLE IF EXISTS {s}; CREATE TABLE {s} (LIKE {t} INCLUDING ALL);",
                s = scratch(t)
            )
        })
        .collect()
}

fn drop_scratch_tables_sql() -> String {
    WRITTEN_TABLES
        .iter()
        .map(|t| format!("DROP TABLE {};", scratch(t)))
        .collect()
}

/// A table's rows as binary COPY chunks, held in memory so that (w) times
/// the server's writing alone.
async fn copy_table_out(c: &Client, table: &str) -> Result<Vec<Bytes>> {
    let ctx = format!("reading {table} for the write floor");
    let stream = c
        .copy_out(format!("COPY {table} TO STDOUT (FORMAT binary)").as_str())
        .await
        .db(ctx.clone())?;
    futures_util::pin_mut!(stream);
    let mut chunks = Vec::new();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.db(ctx.clone())?);
        if buf.len() >= 1 << 20 {
            chunks.push(buf.split().freeze());
        }
    }
    chunks.push(buf.freeze());
    Ok(chunks)
}

/// One run of (w): each payload copied into its scratch table through the
/// engine's own `copy_in`, all in one transaction and committed, as the
/// engine publishes. Returns the time and the rows written.
async fn write_floor(c: &mut Client, payload: &[Vec<Bytes>]) -> Result<(f64, u64)> {
    let t = Instant::now();
    let tx = c.transaction().await.db("starting the write floor")?;
    let mut rows = 0;
    for (table, chunks) in WRITTEN_TABLES.iter().zip(payload) {
        let sql = format!("COPY {} FROM STDIN (FORMAT binary)", scratch(table));
        rows += copy_in(&tx, &sql, chunks.iter().cloned()).await?;
    }
    tx.commit().await.db("committing the write floor")?;
    Ok((t.elapsed().as_secs_f64(), rows))
}

/// One run of (b'): `parts` streamed and decoded by `workers` threads, each
/// with its own connection and runtime as in `settle run`, and nothing
/// aggregated. Its time is what the engine's reads cost before any of the
/// settlement work; returns it and the rows decoded.
fn engine_reads(
    config: &tokio_postgres::Config,
    parts: &[Partition],
    workers: usize,
) -> Result<(f64, u64)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for p in parts {
        tx.send(*p).expect("the queue is open");
    }
    drop(tx);
    let t = Instant::now();
    let rows = std::thread::scope(|s| {
        let readers: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || -> Result<u64> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Error::io("starting a reader runtime", e))?;
                    rt.block_on(async {
                        let c = open_reader(config, None).await?;
                        let (mut rows, mut sum) = (0u64, 0u64);
                        while let Ok(p) = rx.try_recv() {
                            let q = partition_query(&p, &Scope::default());
                            rows += copy_plays(
                                &c,
                                &q,
                                // Touches every field, so no decoding is skipped.
                                |r| {
                                    sum = sum.wrapping_add(
                                        (r.id ^ r.user_id ^ r.video_id ^ r.started_at) as u64
                                            ^ (r.start_position ^ r.end_position) as u64,
                                    )
                                },
                                || Ok(()),
                            )
                            .await?;
                        }
                        std::hint::black_box(sum);
                        Ok(rows)
                    })
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .sum::<Result<u64>>()
    })?;
    Ok((t.elapsed().as_secs_f64(), rows))
}

/// Runs the settle binary with `args`, returning wall seconds and its summary.
fn run_settle(exe: &Path, url: &str, args: &[String]) -> Result<(f64, RunSummary)> {
    let t = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .map_err(|e| Error::io(format!("running {}", exe.display()), e))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "`settle {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let summary = parse_summary(&out.stdout)?;
    Ok((secs, summary))
}

fn parse_summary(stdout: &[u8]) -> Result<RunSummary> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|e| Error::Tool(format!("unreadable run summary: {e}")))?;
    let mut s = RunSummary::default();
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    s.execution_id = num("execution_id") as i64;
    s.rows_read = num("rows_read") as u64;
    s.lookback_rows = num("lookback_rows") as u64;
    s.partitions = num("partitions") as u32;
    s.peak_rss_bytes = num("peak_rss_bytes") as u64;
    s.max_disorder_s = num("max_disorder_s");
    if let Some(e) = v.get("exact_path") {
        s.exact_path.seeds = e.get("seeds").and_then(|x| x.as_u64()).unwrap_or(0);
        s.exact_path.late_rows = e.get("late_rows").and_then(|x| x.as_u64()).unwrap_or(0);
        s.exact_path.reread_rows = e.get("reread_rows").and_then(|x| x.as_u64()).unwrap_or(0);
    }
    if let Some(w) = v.get("written") {
        let n = |k: &str| w.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        s.written.video_rows = n("video_rows");
        s.written.creator_rows = n("creator_rows");
    }
    if let Some(p) = v.get("phases") {
        let f = |k: &str| p.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        s.phases = crate::engine::Phases {
            plan_s: f("plan_s"),
            read_aggregate_s: f("read_aggregate_s"),
            exact_path_s: f("exact_path_s"),
            settle_s: f("settle_s"),
            write_s: f("write_s"),
            publish_s: f("publish_s"),
            total_s: f("total_s"),
        };
    }
    if let Some(parts) = v.get("partition_timings").and_then(|x| x.as_array()) {
        for p in parts {
            s.partition_timings.push(crate::engine::PartitionTiming {
                no: p.get("no").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
                rows: p.get("rows").and_then(|x| x.as_u64()).unwrap_or(0),
                seconds: p.get("seconds").and_then(|x| x.as_f64()).unwrap_or(0.0),
                attempts: p.get("attempts").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
                reused: p.get("reused").and_then(|x| x.as_bool()).unwrap_or(false),
            });
        }
    }
    Ok(s)
}

fn percentiles(h: &Histogram<u64>, scale: f64) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / scale,
        p90: h.value_at_quantile(0.9) as f64 / scale,
        p99: h.value_at_quantile(0.99) as f64 / scale,
        max: h.max() as f64 / scale,
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores, {} GiB, {cpu}", mem / 1024 / 1024)
}

fn write_record(rec: &BenchRecord, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = dir.join(format!("{}-{}rows-{stamp}", rec.label, rec.rows));
    let json = serde_json::to_string_pretty(rec).expect("record serializes");
    std::fs::write(base.with_extension("json"), json)
        .map_err(|e| Error::io("writing the bench record", e))?;
    std::fs::write(base.with_extension("md"), markdown(rec))
        .map_err(|e| Error::io("writing the bench table", e))?;
    eprintln!("bench: wrote {}.{{json,md}}", base.display());
    Ok(())
}

pub fn markdown(r: &BenchRecord) -> String {
    let fmt = |s: &Stats| {
        format!(
            "{:.2} s (runs: {})",
            s.median_s,
            s.runs_s
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut o = format!(
        "# settle bench: {}\n\nRecorded {} on {}. viewing_log: {} rows, {:.2} GB. Workers {}; engine partitions {}.\n\n\
         | case | median | ratio |\n|---|---|---|\n",
        r.label,
        r.recorded_at,
        r.machine,
        crate::report::human_count(r.rows as u64),
        r.table_bytes as f64 / 1e9,
        r.workers,
        r.partitions
    );
    o.push_str(&format!(
        "| (a) floor, {} | {} | 1.00 |\n",
        r.floor_method,
        fmt(&r.floor)
    ));
    o.push_str(&format!(
        "| (a') floor, the other method ({}) | {} | |\n",
        if r.floor_method.contains("ctid") {
            "id ranges"
        } else {
            "ctid ranges"
        },
        fmt(if r.floor_method.contains("ctid") {
            &r.floor_id_ranges
        } else {
            &r.floor_ctid_ranges
        })
    ));
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    o.push_str(&format!(
        "| (b) settle run --all | {} | run/floor = **{:.2}** (per round: median {:.2} of {}) |\n",
        fmt(&r.engine_all),
        r.ratio_run_over_floor,
        r.rounds.median_run_over_floor,
        list(&r.rounds.run_over_floor)
    ));
    o.push_str(&format!(
        "| (b') the engine's reads alone: its {} partitions decoded, nothing aggregated | {} | reads/floor = {:.2} (per round: median {:.2} of {}), run/reads = {:.2} |\n",
        r.partitions,
        fmt(&r.engine_reads),
        r.ratio_reads_over_floor,
        r.rounds.median_reads_over_floor,
        list(&r.rounds.reads_over_floor),
        r.ratio_run_over_reads
    ));
    o.push_str(&format!(
        "| (w) the write floor: (b)'s {} result rows copied into empty copies of their tables in one transaction | {} | write/floor = {:.2}; (a) + (w) = **{:.2}** × the floor |\n",
        crate::report::human_count(r.write_floor_rows),
        fmt(&r.write_floor),
        r.ratio_write_over_floor,
        r.bound_run_over_floor
    ));
    if let (Some(s), Some(x)) = (&r.reference, r.ratio_reference_over_run) {
        o.push_str(&format!(
            "| (c) sql/reference | {} | reference/run = **{:.2}** |\n",
            fmt(s),
            x
        ));
    }
    o.push_str(&format!(
        "| (d) settle run --date {} (after settling the days before it in {:.1} s) | {} | date/all = **{:.3}** |\n\n",
        r.date_day,
        r.date_setup_s,
        fmt(&r.engine_date),
        r.ratio_date_over_all
    ));
    o.push_str(&format!(
        "- engine: {:.1} ns per row end to end; peak RSS {}; last run's phases: read+aggregate {:.2} s, exact path {:.2} s, settle {:.2} s, write {:.2} s, publish {:.2} s\n",
        r.engine_ns_per_row,
        crate::report::mib(r.engine_peak_rss_bytes),
        r.engine_phases_last_run.read_aggregate_s,
        r.engine_phases_last_run.exact_path_s,
        r.engine_phases_last_run.settle_s,
        r.engine_phases_last_run.write_s,
        r.engine_phases_last_run.publish_s
    ));
    o.push_str(&format!(
        "- per-partition duration (s): p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}; throughput (rows/s): p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
        r.partition_seconds.p50,
        r.partition_seconds.p90,
        r.partition_seconds.p99,
        r.partition_seconds.max,
        r.partition_rows_per_s.p50,
        r.partition_rows_per_s.p90,
        r.partition_rows_per_s.p99,
        r.partition_rows_per_s.max
    ));
    o.push_str(&format!(
        "- rapid_replay exact path: {} seeds ({} late rows), {} rows re-read; largest disorder seen {:.0} s\n",
        r.exact_path_seeds, r.exact_path_late_rows, r.exact_path_reread_rows, r.max_disorder_s
    ));
    o.push_str(&format!(
        "- date run read {} rows, of which {} look-back (the 30 s before the day)\n",
        r.date_rows_read, r.date_lookback_rows
    ));
    o.push_str(&format!(
        "- a run publishes after its last read (a day's sums are final only once every partition is \
         read), in one transaction and so one backend: one that publishes all its rows takes at least \
         (a) + (w), run/floor ≥ {:.2}, even were its reads to cost what the floor costs and its own \
         work nothing\n",
        r.bound_run_over_floor
    ));
    match r.reference_differing_rows {
        Some(0) => o.push_str("- (b)'s published rows equal (c)'s, row for row\n"),
        Some(n) => o.push_str(&format!(
            "- **(b)'s published rows differ from (c)'s in {n} rows**\n"
        )),
        None => {}
    }
    o.push_str(&cpu_table(r));
    o
}

/// The CPU table: where each case's time went, server against engine.
fn cpu_table(r: &BenchRecord) -> String {
    let c = &r.cpu;
    let mut o = String::from(
        "\nCPU per run (medians, core-seconds): server = the backends and workers the case used, \
         engine = the `settle` process (for (b'), the bench's reader threads).\n\n\
         | case | server | engine | total | total / floor's |\n|---|---:|---:|---:|---:|\n",
    );
    if let Some(why) = &c.server_unmeasured {
        o = format!("\nServer CPU not measured: {why}.\n{o}");
    }
    let floor = if r.floor_method.contains("ctid") {
        c.floor_ctid_ranges
    } else {
        c.floor_id_ranges
    };
    let base = floor.total().filter(|t| *t > 0.0);
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut row = |name: &str, x: &Cpu| {
        o.push_str(&format!(
            "| {name} | {} | {:.1} | {} | {} |\n",
            opt(x.server_s),
            x.engine_s,
            opt(x.total()),
            match (x.total(), base) {
                (Some(t), Some(b)) => format!("{:.2}", t / b),
                _ => "-".into(),
            }
        ))
    };
    row("(a) floor, ctid ranges", &c.floor_ctid_ranges);
    row("(a) floor, id ranges", &c.floor_id_ranges);
    row("(b) settle run --all", &c.engine_all);
    row("(b') the engine's reads alone", &c.engine_reads);
    row("(w) the write floor", &c.write_floor);
    if let Some(x) = &c.reference {
        row("(c) sql/reference", x);
    }
    row("(d) settle run --date", &c.engine_date);
    o
}

/// The URL a subprocess should use for `database`.
pub fn url_for(database: &Database, explicit: Option<&str>) -> String {
    if let Some(u) = explicit {
        return u.to_string();
    }
    let c = database.config();
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        None => "localhost".into(),
    };
    format!(
        "postgresql://{}@/{}?host={host}&port={}",
        c.get_user().unwrap_or(db::embedded::ROLE),
        c.get_dbname().unwrap_or("settle"),
        c.get_ports().first().copied().unwrap_or(db::embedded::PORT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor's page ranges cover every page of every leaf exactly once,
    /// a range crossing from one leaf into the next reading both.
    /// `cutime`/`cstime` are read after the command name, which may hold
    /// spaces and parentheses of its own.
    #[test]
    fn reaped_children_seconds_reads_fields_16_and_17() {
        let line = "4242 (postgres: a) b) S 1 4242 4242 0 -1 4194560 9 0 0 0 \
                    11 22 1234 566 20 0 1 0 77 0 0";
        assert_eq!(reaped_children_seconds(line, 100.0), Some(18.0));
        assert_eq!(reaped_children_seconds("4242 (postgres) S 1", 100.0), None);
        assert_eq!(reaped_children_seconds("garbage", 100.0), None);
    }

    #[test]
    fn cpu_medians_need_every_server_reading() {
        let c = Cpu::of(&[(Some(3.0), 1.0), (Some(1.0), 5.0), (Some(2.0), 3.0)]);
        assert_eq!(
            (c.server_s, c.engine_s, c.total()),
            (Some(2.0), 3.0, Some(5.0))
        );
        let c = Cpu::of(&[(Some(3.0), 1.0), (None, 2.0)]);
        assert_eq!((c.server_s, c.engine_s, c.total()), (None, 2.0, None));
    }

    #[test]
    fn ctid_ranges_cover_the_leaves_end_to_end() {
        let leaves = [("p0".to_string(), 10), ("p1".to_string(), 6)];
        let q: Vec<String> = split(0, 15, 2)
            .iter()
            .map(|p| ctid_range_query(&leaves, p.id_lo, p.id_hi + 1))
            .collect();
        let range = |rel: &str, a: i64, b: i64| {
            format!("SELECT {PLAY_COLUMNS} FROM {rel} WHERE ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid")
        };
        assert_eq!(q[0], range("p0", 0, 8));
        assert_eq!(
            q[1],
            format!("{} UNION ALL {}", range("p0", 8, 10), range("p1", 0, 6))
        );
        let plain = [("viewing_log".to_string(), 5)];
        assert_eq!(ctid_range_query(&plain, 0, 5), range("viewing_log", 0, 5));
    }
}
