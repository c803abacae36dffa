//! Beyond one machine: `settle worker` processes on any host claim the
//! partitions of `settle run --remote` executions through the job
//! repository and read them from the primary or a hot standby, importing
//! the snapshot the coordinator exported there. PostgreSQL is the only
//! thing between them: the repository is the queue (SKIP LOCKED claims,
//! advisory locks, LISTEN/NOTIFY), replication carries the log.

pub mod claimer;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_postgres::Config;

pub use claimer::{ClaimEvent, Until};

use crate::error::Result;

/// How a worker process runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Where to read the log; the primary when `None`.
    pub read: Option<Config>,
    /// Claiming reader threads in this process.
    pub threads: usize,
    pub until: Until,
    pub poll: Duration,
    /// Test hook: pause mid-partition.
    pub pause_mid: Duration,
}

/// A running worker process's claimers.
pub struct Worker {
    pub events: UnboundedReceiver<ClaimEvent>,
    pub rows: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<Result<u32>>>,
}

impl Worker {
    /// Waits for every claimer thread; the partitions they completed, or
    /// the first error.
    pub fn join(self) -> Result<u32> {
        let mut done = 0;
        let mut first_err = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok(n)) => done += n,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(crate::error::Error::Tool(
                        "a claimer thread panicked".into(),
                    ));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }
}

/// Starts `opts.threads` claimers against the job repository at `primary`.
/// They end per `opts.until`, or when `stop` is raised (each gives its
/// current partition back).
pub fn start(primary: &Config, opts: &WorkerOptions, stop: Arc<AtomicBool>) -> Worker {
    let (tx, rx) = unbounded_channel();
    let rows = Arc::new(AtomicU64::new(0));
    let host = crate::jobs::hostname();
    let pid = std::process::id() as i32;
    let handles = (0..opts.threads.max(1))
        .map(|_| {
            let ctx = claimer::ClaimerCtx {
                primary: primary.clone(),
                read: opts.read.clone().unwrap_or_else(|| primary.clone()),
                until: opts.until,
                poll: opts.poll,
                stop: stop.clone(),
                events: tx.clone(),
                rows: rows.clone(),
                pause_mid: opts.pause_mid,
                host: host.clone(),
                pid,
            };
            std::thread::spawn(move || claimer::run(ctx))
        })
        .collect();
    Worker {
        events: rx,
        rows,
        handles,
    }
}
