//! What a run tells its caller while it works. The engine prints nothing:
//! the CLI turns these into a progress bar and notes on stderr, a daemon
//! into metrics and a live page.

use crate::rules::Day;

/// Receives a run's events, in order, from the task conducting the run.
/// It must return quickly: the run waits for it.
pub trait Observer: Send + Sync {
    fn event(&self, event: &Event);
}

/// An observer that ignores everything (tests, benches).
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event) {}
}

/// The steps of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Plan,
    Read,
    ExactPath,
    Settle,
    Write,
    Publish,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Read => "read",
            Phase::ExactPath => "exact_path",
            Phase::Settle => "settle",
            Phase::Write => "write",
            Phase::Publish => "publish",
        }
    }
}

#[derive(Debug)]
pub enum Event {
    /// The run has an execution id in the job repository.
    Began { execution_id: i64 },
    /// A phase started.
    Phase(Phase),
    /// The plan: how many partitions there are and how many must be read.
    Planned { partitions: u32, to_read: u32 },
    /// Rows read so far by all readers (sent a few times a second).
    RowsRead(u64),
    /// A partition was read and merged.
    PartitionDone {
        no: u32,
        rows: u64,
        seconds: f64,
        attempts: u32,
    },
    /// Who holds which partition, in a `--remote` run (sent when it
    /// changes).
    Claims(Vec<crate::jobs::claims::ClaimState>),
    /// A partition's read failed transiently and will be tried again.
    PartitionRetry {
        no: u32,
        attempt: u32,
        error: String,
    },
    /// Something the operator should know; see [`Note`].
    Note(Note),
}

/// Facts worth telling the operator; the caller words them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// Rows were written into this COMPLETED range after execution
    /// `previous` read it, so it is settled again.
    RowsAdded { previous: i64, rows: i64 },
    /// Executions whose process died while running, now ABANDONED.
    Abandoned { executions: Vec<i64> },
    /// The day before the range is settled again: its last hours now hold
    /// `delta` more (or fewer) plays than when it was settled.
    Restated { day: Day, delta: i64 },
    /// Later settled days are settled again because tiers carry forward.
    Extended { after: Day, to: Day },
    /// The failed execution being continued read other days than this run
    /// must, so every partition is read again.
    ReadAgain {
        previous: i64,
        first: Option<Day>,
        last: Option<Day>,
    },
    /// The log changed since the continued execution read it.
    LogChanged {
        previous: i64,
        changed: usize,
        added: usize,
    },
    /// Settled input changed since it was settled; the run settles again
    /// from the earliest day it touches.
    InputChanged(crate::jobs::changes::InputChanges),
    /// Stored rows of videos no longer in `videos`, left out of creators.
    Unattributed { rows: u64 },
}
