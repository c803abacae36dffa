//! Runs started by the server (from the API, the console or the
//! scheduler): each goes through the front door, `Settle::run`, in a task
//! of its own. The caller learns the execution id from the run's first
//! event, so `POST /api/runs` answers at once while the run goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::api::{Event, Observer, RunOutcome, RunRequest, Settle, StopSignal};
use crate::error::{Error, Result};
use crate::jobs::Requested;

/// What a caller asks the server to run.
#[derive(Clone, Debug)]
pub struct RunAsk {
    pub requested: Requested,
    pub force: bool,
    /// Partitions to plan (default: the engine's choice).
    pub partitions: Option<u32>,
    /// Test hook: a pause after each partition, to make a run long enough
    /// to stop.
    pub pause_after_partition_ms: u64,
}

impl RunAsk {
    pub fn new(requested: Requested) -> RunAsk {
        RunAsk {
            requested,
            force: false,
            partitions: None,
            pause_after_partition_ms: 0,
        }
    }
}

/// How a start went: a new execution began, or the instance had already
/// completed and nothing ran.
pub struct Started {
    pub execution_id: i64,
    pub already_completed: bool,
    /// The run's end (dropped by callers that do not wait).
    pub finished: oneshot::Receiver<Result<RunOutcome>>,
}

/// Live progress of a run in this process, for the console and the API.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub phase: Option<String>,
    pub partitions: u32,
    pub partitions_done: u32,
    pub rows_read: u64,
    pub retries: u32,
}

/// The runs this process has in flight, so a shutdown can stop or await them.
pub struct RunManager {
    settle: Arc<Settle>,
    next: AtomicU64,
    inflight: Mutex<HashMap<u64, StopSignal>>,
    ended: Notify,
    progress: Arc<Mutex<HashMap<i64, Progress>>>,
}

/// Where the run's first answer goes: (execution id, already completed).
type BeganTx = oneshot::Sender<Result<(i64, bool)>>;

struct ServeObserver {
    /// (execution id, already completed), sent once.
    began: Mutex<Option<BeganTx>>,
    execution: Mutex<Option<i64>>,
    progress: Arc<Mutex<HashMap<i64, Progress>>>,
}

impl ServeObserver {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        let Some(id) = *self.execution.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let mut map = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(id).or_default());
    }
}

impl Observer for ServeObserver {
    fn event(&self, event: &Event) {
        match event {
            Event::Began { execution_id } => {
                *self.execution.lock().unwrap_or_else(|e| e.into_inner()) = Some(*execution_id);
                self.update(|_| {});
                if let Some(tx) = self.began.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(Ok((*execution_id, false)));
                }
            }
            Event::Phase(p) => self.update(|g| g.phase = Some(p.name().to_string())),
            Event::Planned { partitions, .. } => self.update(|g| g.partitions = *partitions),
            Event::RowsRead(n) => self.update(|g| g.rows_read = *n),
            Event::PartitionDone { .. } => self.update(|g| g.partitions_done += 1),
            Event::PartitionRetry { .. } => {
                super::metrics::partition_retry();
                self.update(|g| g.retries += 1)
            }
            Event::Note(_) | Event::Claims(_) => {}
        }
    }
}

impl RunManager {
    pub fn new(settle: Arc<Settle>) -> RunManager {
        RunManager {
            settle,
            next: AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
            ended: Notify::new(),
            progress: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts a run and returns once it has an execution id (or has ended
    /// without one: already completed, refused, locked).
    pub async fn start(self: &Arc<Self>, ask: &RunAsk) -> Result<Started> {
        let mut req = RunRequest::new(ask.requested.clone());
        req.options.force = ask.force;
        req.options.partitions = ask.partitions;
        req.options.pause_after_partition = Duration::from_millis(ask.pause_after_partition_ms);
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_inflight().insert(key, req.stop_signal());
        let (began_tx, began_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let obs = Arc::new(ServeObserver {
            began: Mutex::new(Some(began_tx)),
            execution: Mutex::new(None),
            progress: self.progress.clone(),
        });
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.settle.run(&req, &*obs).await;
            if let Some(id) = *obs.execution.lock().unwrap_or_else(|e| e.into_inner()) {
                me.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
            super::metrics::run_ended(&outcome);
            me.lock_inflight().remove(&key);
            me.ended.notify_waiters();
            // Not begun: hand the outcome to the starter instead.
            let unbegun = obs.began.lock().unwrap_or_else(|e| e.into_inner()).take();
            match (unbegun, outcome) {
                (Some(tx), Ok(RunOutcome::AlreadyCompleted { execution_id })) => {
                    let _ = tx.send(Ok((execution_id, true)));
                    let _ = done_tx.send(Ok(RunOutcome::AlreadyCompleted { execution_id }));
                }
                (Some(tx), Err(e)) => {
                    let _ = tx.send(Err(e));
                }
                (_, outcome) => {
                    let _ = done_tx.send(outcome);
                }
            }
        });
        match began_rx.await {
            Ok(Ok((execution_id, already_completed))) => Ok(Started {
                execution_id,
                already_completed,
                finished: done_rx,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Tool("the run ended without a word".into())),
        }
    }

    /// Starts a run and waits for its end (the scheduler).
    pub async fn run_to_end(self: &Arc<Self>, ask: &RunAsk) -> Result<(i64, RunOutcome)> {
        let started = self.start(ask).await?;
        let id = started.execution_id;
        match started.finished.await {
            Ok(outcome) => outcome.map(|o| (id, o)),
            Err(_) => Err(Error::Tool("the run ended without a word".into())),
        }
    }

    pub fn progress(&self, execution: i64) -> Option<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&execution)
            .cloned()
    }

    pub fn running(&self) -> usize {
        self.lock_inflight().len()
    }

    /// Stops every run in flight (they end STOPPED) unless `drain`, then
    /// waits for them all to end.
    pub async fn shutdown(&self, drain: bool) {
        if !drain {
            for s in self.lock_inflight().values() {
                s.raise();
            }
        }
        loop {
            let ended = self.ended.notified();
            if self.running() == 0 {
                return;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, StopSignal>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
}
