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
//!   their tables in one transaction, which is what publishing them in one
//!   backend costs the server with nothing left to compute (a swap publish
//!   splits it over two connections);
//! - (c) sql/reference/ on the same data;
//! - (p) the peer: DuckDB 1.4.4 doing the whole SPEC through
//!   postgres_scanner on the same cluster, results stored back and compared
//!   with (b)'s (skipped, with install advice, without duckdb);
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

mod cases;
mod cpu;
pub mod peer;
mod plot;
mod record;
pub mod scale;

use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio_postgres::Client;

use crate::db::Database;
use crate::engine::RunSummary;
use crate::error::{DbContext, Error, Result};
use crate::pipeline::partition::split;
use crate::pipeline::publish::PUBLISHED_TABLES;
use crate::pipeline::read::PLAY_COLUMNS;
use crate::rules::Day;
use cases::*;
use cpu::CpuMeter;
use record::{machine, percentiles, write_record};
pub use record::{markdown, BenchRecord, Cpu, CpuRecord, Percentiles, Rounds, Stats};

/// How the bench tells its caller what it is doing (the CLI prints it).
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

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
    /// Python for case (p), DuckDB through postgres_scanner: it needs
    /// duckdb==1.4.4 and duckdb-ext-postgres (see docs/benchmarks.md);
    /// without them the case is skipped with install advice.
    #[arg(long, env = "SETTLE_PEER_PYTHON", default_value = "python3")]
    pub peer_python: PathBuf,
    /// Runs of case (p) (slow: minutes and ~10 GB at 100M rows).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub peer_runs: u32,
    /// Skip case (p), the DuckDB peer.
    #[arg(long)]
    pub skip_peer: bool,
    /// Skip case (d), the nightly --date run.
    #[arg(long)]
    pub skip_date: bool,
    /// Run the cost curve instead: `settle datagen` at every --scale-rows
    /// (replacing the log each time), then (a), (b), (b') and (w) on it;
    /// records ns/row, run/floor, peak RSS and rows written per size, and
    /// plots them into results/scale-*.svg.
    #[arg(long)]
    pub scale: bool,
    /// Row counts of the curve (sizes without the disk for them are skipped).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000_000u64, 30_000_000, 100_000_000])]
    pub scale_rows: Vec<u64>,
    /// Catalogue sizes: the first at every row count, the others at 100M
    /// rows (the reference size; the largest row count if 100M is not
    /// among them).
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 1_000_000])]
    pub scale_videos: Vec<u64>,
    /// With --scale: replace a log that settle did not generate.
    #[arg(long)]
    pub yes: bool,
}

/// Runs the bench against `database` using the `settle` binary at `exe`.
pub async fn bench(
    database: &Database,
    url: &str,
    exe: &Path,
    args: &BenchArgs,
    say: Say<'_>,
) -> Result<BenchRecord> {
    let c = database.connect().await?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let (mut rec, id_lo, id_hi) = size_log(&c, args, workers).await?;
    c.batch_execute("CHECKPOINT")
        .await
        .db("checkpointing before the bench")?;
    let meter = CpuMeter::new(&c).await;
    if let Err(why) = &meter.server {
        say(&format!("server CPU not measured: {why}"));
        rec.cpu.server_unmeasured = Some(why.clone());
    }
    let floors = floor_queries(&c, id_lo, id_hi, workers).await?;
    let b = Bench {
        database,
        c: &c,
        url,
        exe,
        args,
        workers,
        meter: &meter,
        say,
    };
    b.rounds(&mut rec, &floors).await?;
    b.write_case(&mut rec).await?;
    if !args.skip_reference {
        b.reference_case(&mut rec).await?;
    }
    if !args.skip_peer {
        b.peer_case(&mut rec).await?;
    }
    if !args.skip_date {
        b.date_case(&mut rec).await?;
    }
    ratios(&mut rec);
    rec.written_to = write_record(&rec, &args.results_dir)?;
    if let Some(n @ 1..) = rec.reference_differing_rows {
        return Err(Error::Tool(format!(
            "the engine's results differ from sql/reference in {n} rows (listed above; the record \
             is written): a timing of wrong results means nothing. This is a bug in one of the \
             two; reproduce it on small data with the differential tests"
        )));
    }
    if let Some(n @ 1..) = rec.peer_differing_rows {
        return Err(Error::Tool(format!(
            "the engine's results differ from the DuckDB peer's in {n} rows (listed above; the \
             record is written): check the peer's script against sql/reference first"
        )));
    }
    Ok(rec)
}

/// The log's size, and a record to fill.
async fn size_log(c: &Client, args: &BenchArgs, workers: usize) -> Result<(BenchRecord, i64, i64)> {
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
    let rec = BenchRecord {
        label: args.label.clone(),
        recorded_at: chrono::Utc::now().to_rfc3339(),
        machine: machine(),
        rows,
        table_bytes: r.get(1),
        workers,
        ..Default::default()
    };
    Ok((rec, r.get(2), r.get(3)))
}

/// The floor's statements a connection each: over id ranges, over ctid
/// ranges of the leaves, and, for a log partitioned by id range, the
/// leaves copied whole as tables.
struct Floors {
    id: Vec<String>,
    ctid: Vec<String>,
    leaves: Option<Vec<String>>,
}

async fn floor_queries(c: &Client, id_lo: i64, id_hi: i64, workers: usize) -> Result<Floors> {
    let id = split(id_lo, id_hi, workers as u32)
        .iter()
        .map(|p| {
            copy_query_to_null(&format!(
                "SELECT {PLAY_COLUMNS} FROM viewing_log WHERE id >= {} AND id <= {}",
                p.id_lo, p.id_hi
            ))
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
    let ctid = split(0, pages.max(1) - 1, workers as u32)
        .iter()
        .map(|p| copy_query_to_null(&ctid_range_query(&leaves, p.id_lo, p.id_hi + 1)))
        .collect();
    let by_id: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'viewing_log'::regclass) \
                AND pg_get_partkeydef('viewing_log'::regclass) = 'RANGE (id)'",
            &[],
        )
        .await
        .db("asking how viewing_log is partitioned")?
        .get(0);
    let leaves = by_id.then(|| whole_leaf_batches(&leaves, workers));
    Ok(Floors { id, ctid, leaves })
}

/// What every case needs.
struct Bench<'a> {
    database: &'a Database,
    c: &'a Client,
    url: &'a str,
    exe: &'a Path,
    args: &'a BenchArgs,
    workers: usize,
    meter: &'a CpuMeter,
    say: Say<'a>,
}

type CpuRuns = Vec<(Option<f64>, f64)>;

/// (a), (b) and (b')'s timings and CPU, gathered over the rounds.
#[derive(Default)]
struct RoundRuns {
    id: Vec<f64>,
    ctid: Vec<f64>,
    id_cpu: CpuRuns,
    ctid_cpu: CpuRuns,
    leaves: Vec<f64>,
    leaves_cpu: CpuRuns,
    engine: Vec<f64>,
    engine_cpu: CpuRuns,
    reads: Vec<f64>,
    reads_cpu: CpuRuns,
}

impl Bench<'_> {
    /// (a), (b) and (b') in rounds, one of each per round, so that a
    /// machine drifting over the bench's half hour moves all three alike,
    /// and each round's ratios compare runs minutes apart.
    async fn rounds(&self, rec: &mut BenchRecord, floors: &Floors) -> Result<()> {
        let (c, meter) = (self.c, self.meter);
        let mut runs = RoundRuns::default();
        let mut last: Option<RunSummary> = None;
        let mut part_secs = Histogram::<u64>::new(3).expect("histogram");
        let mut part_rate = Histogram::<u64>::new(3).expect("histogram");
        for run in 0..self.args.runs {
            let round = format!("{}/{}", run + 1, self.args.runs);
            (self.say)(&format!("round {round}: floor"));
            let m = meter.start(c).await?;
            runs.id.push(floor(self.database, &floors.id).await?);
            runs.id_cpu.push(meter.since(c, m).await?);
            let m = meter.start(c).await?;
            runs.ctid.push(floor(self.database, &floors.ctid).await?);
            runs.ctid_cpu.push(meter.since(c, m).await?);
            if let Some(leaves) = &floors.leaves {
                let m = meter.start(c).await?;
                runs.leaves.push(floor(self.database, leaves).await?);
                runs.leaves_cpu.push(meter.since(c, m).await?);
            }

            (self.say)(&format!("round {round}: settle run --all"));
            let s = self.engine_run(&mut runs).await?;
            rec.engine_peak_rss_bytes = rec.engine_peak_rss_bytes.max(s.peak_rss_bytes);
            for p in &s.partition_timings {
                let _ = part_secs.record((p.seconds * 1000.0) as u64);
                if p.seconds > 0.0 {
                    let _ = part_rate.record((p.rows as f64 / p.seconds) as u64);
                }
            }

            // (b') the same partitions (as that run planned them), read
            // and decoded only.
            let parts = crate::jobs::recorded_plan(c, s.execution_id).await?;
            if parts.is_empty() {
                return Err(Error::Tool(format!(
                    "execution {} recorded no partitions, so there is nothing to read for case (b')",
                    s.execution_id
                )));
            }
            last = Some(s);
            (self.say)(&format!("round {round}: the engine's reads alone"));
            let m = meter.start(c).await?;
            let (secs, n) = tokio::task::block_in_place(|| {
                engine_reads(self.database.config(), &parts, self.workers)
            })?;
            runs.reads_cpu.push(meter.since_in_process(c, m).await?);
            runs.reads.push(secs);
            rec.engine_reads_rows = n;
        }
        record_rounds(rec, runs, last.expect("at least one run"), self.workers);
        rec.partition_seconds = percentiles(&part_secs, 1000.0);
        rec.partition_rows_per_s = percentiles(&part_rate, 1.0);
        Ok(())
    }

    /// (b) the engine, --all, publishing every row: with the results of the
    /// round before left in place it would write only what changed
    /// (nothing), and the first round would differ from the others.
    async fn engine_run(&self, runs: &mut RoundRuns) -> Result<RunSummary> {
        self.c
            .batch_execute(&format!("TRUNCATE {PUBLISHED_TABLES}"))
            .await
            .db("clearing results before a run")?;
        let mut cmd_args = vec![
            "run".to_string(),
            "--all".into(),
            "--force".into(),
            "--fresh".into(),
            "--json".into(),
        ];
        cmd_args.extend(engine_flags(self.args, self.workers));
        let m = self.meter.start(self.c).await?;
        let (secs, s) = run_settle(self.exe, self.url, &cmd_args)?;
        runs.engine_cpu.push(self.meter.since(self.c, m).await?);
        runs.engine.push(secs);
        Ok(s)
    }

    /// (w) the write floor, on the rows (b) published.
    async fn write_case(&self, rec: &mut BenchRecord) -> Result<()> {
        let mut payload = Vec::new();
        for t in WRITTEN_TABLES {
            payload.push(copy_table_out(self.c, t).await?);
        }
        let (mut runs, mut cpu) = (Vec::new(), Vec::new());
        for run in 0..self.args.runs {
            (self.say)(&format!("the write floor {}/{}", run + 1, self.args.runs));
            let mut wc = self.database.connect().await?;
            wc.batch_execute(&scratch_tables_sql())
                .await
                .db("creating the write floor's scratch tables")?;
            let m = self.meter.start(self.c).await?;
            let (secs, n) = write_floor(&mut wc, &payload).await?;
            wc.batch_execute(&drop_scratch_tables_sql())
                .await
                .db("dropping the write floor's scratch tables")?;
            // Its own connection, so its backend's CPU is reaped and counted.
            drop(wc);
            cpu.push(self.meter.since(self.c, m).await?);
            runs.push(secs);
            rec.write_floor_rows = n;
        }
        rec.write_floor = Stats::of(runs);
        rec.cpu.write_floor = Cpu::of(&cpu);
        Ok(())
    }

    /// (c) the reference, and whether (b)'s rows equal its rows.
    async fn reference_case(&self, rec: &mut BenchRecord) -> Result<()> {
        let n = self.args.reference_runs.unwrap_or(self.args.runs).max(1);
        let (mut runs, mut cpu) = (Vec::new(), Vec::new());
        for run in 0..n {
            (self.say)(&format!("sql/reference {}/{}", run + 1, n));
            // Its own connection, so its backend's CPU is reaped and counted.
            let rc = self.database.connect().await?;
            let m = self.meter.start(self.c).await?;
            let t = Instant::now();
            crate::tools::reference::run(&rc).await?;
            runs.push(t.elapsed().as_secs_f64());
            drop(rc);
            cpu.push(self.meter.since(self.c, m).await?);
        }
        (self.say)("comparing (b)'s results with the reference's");
        let diff = crate::tools::reference::compare(self.c).await?;
        if !diff.is_empty() {
            (self.say)(&diff.to_string());
        }
        rec.reference_differing_rows = Some(diff.differing_rows());
        self.c
            .batch_execute("DROP SCHEMA IF EXISTS reference CASCADE")
            .await
            .db("dropping the reference's tables")?;
        rec.reference = Some(Stats::of(runs));
        rec.cpu.reference = Some(Cpu::of(&cpu));
        Ok(())
    }

    /// (p) the peer, and whether (b)'s rows equal its rows.
    async fn peer_case(&self, rec: &mut BenchRecord) -> Result<()> {
        if let Some(why) = peer::unavailable(&self.args.peer_python) {
            (self.say)(&format!(
                "case (p) skipped: {why}. To run it: {}",
                peer::INSTALL
            ));
            rec.peer_skipped = Some(why);
            return Ok(());
        }
        let (mut runs, mut cpu) = (Vec::new(), Vec::new());
        for run in 0..self.args.peer_runs {
            (self.say)(&format!(
                "the DuckDB peer {}/{}",
                run + 1,
                self.args.peer_runs
            ));
            let m = self.meter.start(self.c).await?;
            let (secs, r) = tokio::task::block_in_place(|| {
                peer::run(&self.args.peer_python, self.database.config(), self.workers)
            })?;
            cpu.push(self.meter.since(self.c, m).await?);
            runs.push(secs);
            rec.peer_peak_rss_bytes = rec.peer_peak_rss_bytes.max(r.peak_rss_bytes);
            rec.peer_last_run = Some(r);
        }
        (self.say)("comparing (b)'s results with the peer's");
        let diff = crate::tools::reference::compare_schema(self.c, "peer").await?;
        if !diff.is_empty() {
            (self.say)(&diff.to_string());
        }
        rec.peer_differing_rows = Some(diff.differing_rows());
        self.c
            .batch_execute("DROP SCHEMA IF EXISTS peer CASCADE")
            .await
            .db("dropping the peer's tables")?;
        rec.peer = Some(Stats::of(runs));
        rec.cpu.peer = Some(Cpu::of(&cpu));
        Ok(())
    }

    /// (d) the nightly case: days before D settled, then D alone.
    async fn date_case(&self, rec: &mut BenchRecord) -> Result<()> {
        let (first, last_day) = data_days(self.c).await?;
        let day = self
            .args
            .date
            .map(Day::from_date)
            .unwrap_or(Day((first.0 + last_day.0) / 2));
        rec.date_day = day.to_string();
        self.c
            .batch_execute(&format!("TRUNCATE {PUBLISHED_TABLES}"))
            .await
            .db("clearing results for the date case")?;
        if day > first {
            let before = Day(day.0 - 1);
            (self.say)(&format!("settling {first} .. {before} for the date case"));
            let mut a = vec![
                "run".to_string(),
                "--from".into(),
                first.to_string(),
                "--to".into(),
                before.to_string(),
                "--force".into(),
                "--fresh".into(),
                "--json".into(),
            ];
            a.extend(engine_flags(self.args, self.workers));
            rec.date_setup_s = run_settle(self.exe, self.url, &a)?.0;
        }
        let (mut runs, mut cpu) = (Vec::new(), Vec::new());
        for run in 0..self.args.runs {
            (self.say)(&format!(
                "settle run --date {day} {}/{}",
                run + 1,
                self.args.runs
            ));
            let a = vec![
                "run".to_string(),
                "--date".into(),
                day.to_string(),
                "--force".into(),
                "--fresh".into(),
                "--json".into(),
            ];
            let m = self.meter.start(self.c).await?;
            let (secs, s) = run_settle(self.exe, self.url, &a)?;
            cpu.push(self.meter.since(self.c, m).await?);
            rec.date_rows_read = s.rows_read;
            rec.date_lookback_rows = s.lookback_rows;
            runs.push(secs);
        }
        rec.engine_date = Stats::of(runs);
        rec.cpu.engine_date = Cpu::of(&cpu);
        Ok(())
    }
}

/// Medians and CPU of the rounds, and the last run's details.
fn record_rounds(rec: &mut BenchRecord, runs: RoundRuns, last: RunSummary, workers: usize) {
    rec.floor_id_ranges = Stats::of(runs.id);
    rec.floor_ctid_ranges = Stats::of(runs.ctid);
    rec.cpu.floor_id_ranges = Cpu::of(&runs.id_cpu);
    rec.cpu.floor_ctid_ranges = Cpu::of(&runs.ctid_cpu);
    if !runs.leaves.is_empty() {
        rec.floor_whole_leaves = Some(Stats::of(runs.leaves));
        rec.cpu.floor_whole_leaves = Some(Cpu::of(&runs.leaves_cpu));
    }
    let (method, floor_stats) = rec
        .floor_methods()
        .into_iter()
        .min_by(|a, b| a.1.median_s.total_cmp(&b.1.median_s))
        .map(|(m, s, _)| (m, s.clone()))
        .expect("the id and ctid floors always run");
    rec.floor_method = format!("{workers} parallel {method}");
    rec.floor = floor_stats;
    rec.engine_all = Stats::of(runs.engine);
    rec.cpu.engine_all = Cpu::of(&runs.engine_cpu);
    rec.partitions = last.partitions;
    rec.engine_rows_written = last.written.video_rows + last.written.creator_rows;
    rec.engine_publish_method = last
        .publish_method
        .as_ref()
        .map_or("-".into(), |m| m.method.to_string());
    rec.exact_path_seeds = last.exact_path.seeds;
    rec.exact_path_late_rows = last.exact_path.late_rows;
    rec.exact_path_reread_rows = last.exact_path.reread_rows;
    rec.max_disorder_s = last.max_disorder_s;
    rec.engine_phases_last_run = last.phases.clone();
    rec.engine_ns_per_row = rec.engine_all.median_s * 1e9 / rec.rows as f64;
    rec.engine_reads = Stats::of(runs.reads);
    rec.cpu.engine_reads = Cpu::of(&runs.reads_cpu);
    rec.rounds = Rounds::of(&rec.floor, &rec.engine_all, &rec.engine_reads);
}

/// The record's ratios, from its medians.
fn ratios(rec: &mut BenchRecord) {
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
    rec.ratio_peer_over_run = rec
        .peer
        .as_ref()
        .map(|r| r.median_s / rec.engine_all.median_s);
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
        c.get_user().unwrap_or(crate::db::embedded::ROLE),
        c.get_dbname().unwrap_or("settle"),
        c.get_ports()
            .first()
            .copied()
            .unwrap_or(crate::db::embedded::PORT)
    )
}

#[cfg(test)]
mod tests {
    use super::cpu::reaped_children_seconds;
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
