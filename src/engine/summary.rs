//! What a run did: the summary printed at the end and stored with the
//! execution, and the counts the job repository keeps in columns.

use std::time::Instant;

use crate::jobs::ExecutionCounts;
use crate::pipeline::aggregate::Counts;
use crate::pipeline::exact::ExactPathStats;
use crate::pipeline::publish::WriteStats;
use crate::sys::peak_rss_bytes;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Phases {
    pub plan_s: f64,
    pub read_aggregate_s: f64,
    pub exact_path_s: f64,
    pub settle_s: f64,
    pub write_s: f64,
    pub publish_s: f64,
    pub total_s: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Excluded {
    pub self_play: u64,
    pub rapid_replay: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RejectedCounts {
    pub unknown_video: u64,
    pub bad_position: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PartitionTiming {
    pub no: u32,
    pub rows: u64,
    pub seconds: f64,
    pub attempts: u32,
    pub reused: bool,
    /// Who read it, for a `--remote` run (a worker or the coordinator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// How a run published: `swap` (tables built anew and swapped in) or
/// `diff` (the changed rows written in place), and why.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PublishMethod {
    pub method: &'static str,
    pub why: String,
}

/// Where a run read the log.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReadFrom {
    /// `primary started ...` or `standby started ...`.
    pub server: String,
    /// A standby's last replayed WAL position when the snapshot was taken:
    /// plays committed on the primary after it are not in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
}

/// What a completed run did, printed at the end and stored with the execution.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub execution_id: i64,
    pub attempt: i32,
    pub restarted_from: Option<i64>,
    pub requested: String,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Later settled days re-settled because tiers carry forward.
    pub extended_to: Option<String>,
    /// The day before the requested range, settled again because plays of
    /// its last hours were written after it had been settled.
    pub restated_from: Option<String>,
    /// Changes to settled input since it was settled (deleted, corrected or
    /// late plays; changed videos), settled again by this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_changes: Option<crate::jobs::changes::InputChanges>,
    pub rows_read: u64,
    pub lookback_rows: u64,
    pub counted: u64,
    pub excluded: Excluded,
    pub rejected: RejectedCounts,
    pub partitions: u32,
    pub partitions_reused: u32,
    pub partitions_read: u32,
    pub workers: usize,
    /// COPY streams per worker.
    pub streams: usize,
    pub exact_path: ExactPathStats,
    pub max_disorder_s: f64,
    pub phases: Phases,
    pub rows_per_s: f64,
    pub peak_rss_bytes: u64,
    pub written: WriteStats,
    pub partition_timings: Vec<PartitionTiming>,
    /// Set when the run read from another server than the primary
    /// (`--read-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<ReadFrom>,
    /// How the results were published (none for a run with nothing to
    /// publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_method: Option<PublishMethod>,
    /// Partitions were claimed by `settle worker` processes (`--remote`).
    pub remote: bool,
}

pub(crate) fn finish_summary(summary: &mut RunSummary, written: WriteStats, t0: Instant) {
    summary.written = written;
    summary.phases.total_s = t0.elapsed().as_secs_f64();
    summary.rows_per_s = if summary.phases.total_s > 0.0 {
        summary.rows_read as f64 / summary.phases.total_s
    } else {
        0.0
    };
    summary.peak_rss_bytes = peak_rss_bytes();
}

pub(crate) fn counts_of(s: &RunSummary, c: &Counts) -> ExecutionCounts {
    ExecutionCounts {
        rows_read: c.rows_read as i64,
        counted: s.counted as i64,
        excluded_self_play: c.self_play as i64,
        excluded_rapid_replay: s.excluded.rapid_replay as i64,
        rejected_unknown_video: c.unknown_video as i64,
        rejected_bad_position: c.bad_position as i64,
    }
}

pub(crate) fn min_opt(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(crate) fn max_opt(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
