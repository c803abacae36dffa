//! The bench's record: medians, ratios, CPU, and its JSON and markdown.

use std::path::Path;

use hdrhistogram::Histogram;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub runs_s: Vec<f64>,
    pub median_s: f64,
}

impl Stats {
    pub(super) fn of(runs: Vec<f64>) -> Stats {
        Stats {
            median_s: median(runs.clone()).unwrap_or(0.0),
            runs_s: runs,
        }
    }
}

/// The middle value (the upper of the two for an even count).
pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
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
    pub(super) fn of(floor: &Stats, run: &Stats, reads: &Stats) -> Rounds {
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
    /// The leaves copied whole as tables, for a log partitioned by id.
    pub floor_whole_leaves: Option<Stats>,
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
    /// (p): DuckDB doing the whole SPEC through postgres_scanner.
    pub peer: Option<Stats>,
    /// Why (p) did not run, when it did not.
    pub peer_skipped: Option<String>,
    pub peer_last_run: Option<super::peer::PeerRun>,
    pub peer_peak_rss_bytes: u64,
    /// Rows that differ between (b)'s results and (p)'s; `None` without (p).
    pub peer_differing_rows: Option<u64>,
    pub ratio_peer_over_run: Option<f64>,
    /// How (b)'s last run published (`swap` or `diff`).
    pub engine_publish_method: String,
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
    /// Where the record was written (its markdown).
    #[serde(skip)]
    pub written_to: String,
}

impl BenchRecord {
    /// The floor's methods that ran: name, timings and CPU.
    pub fn floor_methods(&self) -> Vec<(&'static str, &Stats, Cpu)> {
        let mut v = vec![
            ("id ranges", &self.floor_id_ranges, self.cpu.floor_id_ranges),
            (
                "ctid ranges",
                &self.floor_ctid_ranges,
                self.cpu.floor_ctid_ranges,
            ),
        ];
        if let Some(s) = &self.floor_whole_leaves {
            let cpu = self.cpu.floor_whole_leaves.unwrap_or_default();
            v.push(("whole leaves", s, cpu));
        }
        v
    }
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
    pub(super) fn of(runs: &[(Option<f64>, f64)]) -> Cpu {
        let server: Option<Vec<f64>> = runs.iter().map(|r| r.0).collect();
        Cpu {
            server_s: server.and_then(median),
            engine_s: median(runs.iter().map(|r| r.1).collect()).unwrap_or(0.0),
        }
    }

    pub(super) fn total(&self) -> Option<f64> {
        self.server_s.map(|s| s + self.engine_s)
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuRecord {
    /// Why server CPU is missing, when it is.
    pub server_unmeasured: Option<String>,
    pub floor_id_ranges: Cpu,
    pub floor_ctid_ranges: Cpu,
    pub floor_whole_leaves: Option<Cpu>,
    pub engine_all: Cpu,
    pub engine_reads: Cpu,
    pub write_floor: Cpu,
    pub reference: Option<Cpu>,
    pub peer: Option<Cpu>,
    pub engine_date: Cpu,
}

pub(super) fn percentiles(h: &Histogram<u64>, scale: f64) -> Percentiles {
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

pub(super) fn machine() -> String {
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

pub(super) fn write_record(rec: &BenchRecord, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = dir.join(format!("{}-{}rows-{stamp}", rec.label, rec.rows));
    let json = serde_json::to_string_pretty(rec).expect("record serializes");
    std::fs::write(base.with_extension("json"), json)
        .map_err(|e| Error::io("writing the bench record", e))?;
    std::fs::write(base.with_extension("md"), markdown(rec))
        .map_err(|e| Error::io("writing the bench table", e))?;
    Ok(base.with_extension("md").display().to_string())
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
    for (method, stats, _) in r.floor_methods() {
        if !r.floor_method.ends_with(method) {
            o.push_str(&format!(
                "| (a') floor, another method ({method}) | {} | |\n",
                fmt(stats)
            ));
        }
    }
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
    if let (Some(s), Some(x)) = (&r.peer, r.ratio_peer_over_run) {
        o.push_str(&format!(
            "| (p) the peer: DuckDB 1.4.4 + postgres_scanner, the whole SPEC, {} threads, results stored back | {} | peer/run = **{:.2}**; peak RSS {} |\n",
            r.workers,
            fmt(s),
            x,
            crate::report::mib(r.peer_peak_rss_bytes)
        ));
    } else if let Some(why) = &r.peer_skipped {
        o.push_str(&format!("| (p) the DuckDB peer | skipped: {why} | |\n"));
    }
    o.push_str(&format!(
        "| (d) settle run --date {} (after settling the days before it in {:.1} s) | {} | date/all = **{:.3}** |\n\n",
        r.date_day,
        r.date_setup_s,
        fmt(&r.engine_date),
        r.ratio_date_over_all
    ));
    o.push_str(&format!(
        "- engine: {:.1} ns per row end to end; peak RSS {}; published by {}; last run's phases: read+aggregate {:.2} s, exact path {:.2} s, settle {:.2} s, write {:.2} s, publish {:.2} s\n",
        r.engine_ns_per_row,
        crate::report::mib(r.engine_peak_rss_bytes),
        r.engine_publish_method,
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
        "- (a) + (w) = {:.2} × the floor bounds a run that publishes in one backend after its last read; \
         a swap publish stages the tables on two connections and may beat it\n",
        r.bound_run_over_floor
    ));
    match r.reference_differing_rows {
        Some(0) => o.push_str("- (b)'s published rows equal (c)'s, row for row\n"),
        Some(n) => o.push_str(&format!(
            "- **(b)'s published rows differ from (c)'s in {n} rows**\n"
        )),
        None => {}
    }
    match r.peer_differing_rows {
        Some(0) => o.push_str("- (b)'s published rows equal (p)'s, row for row\n"),
        Some(n) => o.push_str(&format!(
            "- **(b)'s published rows differ from (p)'s in {n} rows**\n"
        )),
        None => {}
    }
    o.push_str(&cpu_table(r));
    o
}

/// The CPU table: where each case's time went, server against engine.
pub(super) fn cpu_table(r: &BenchRecord) -> String {
    let c = &r.cpu;
    let mut o = String::from(
        "\nCPU per run (medians, core-seconds): server = the backends and workers the case used, \
         engine = the `settle` process (for (b'), the bench's reader threads).\n\n\
         | case | server | engine | total | total / floor's |\n|---|---:|---:|---:|---:|\n",
    );
    if let Some(why) = &c.server_unmeasured {
        o = format!("\nServer CPU not measured: {why}.\n{o}");
    }
    let floor = r
        .floor_methods()
        .into_iter()
        .find(|m| r.floor_method.ends_with(m.0))
        .map_or(c.floor_id_ranges, |m| m.2);
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
    for (method, _, cpu) in r.floor_methods() {
        row(&format!("(a) floor, {method}"), &cpu);
    }
    row("(b) settle run --all", &c.engine_all);
    row("(b') the engine's reads alone", &c.engine_reads);
    row("(w) the write floor", &c.write_floor);
    if let Some(x) = &c.reference {
        row("(c) sql/reference", x);
    }
    if let Some(x) = &c.peer {
        row("(p) the DuckDB peer", x);
    }
    row("(d) settle run --date", &c.engine_date);
    o
}
