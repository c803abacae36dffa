//! Reads every partition of the plan (kept results first, then the reader
//! pool) into one merged result, recording each partition in the job
//! repository as it finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;
use tokio_postgres::{Client, Config};

use super::events::{Event, Observer};
use super::summary::{max_opt, min_opt, PartitionTiming};
use super::RunOptions;
use crate::error::{Error, Result};
use crate::jobs::{self, ledger::DayTails};
use crate::pipeline::aggregate::{Counts, PartitionOutput, Rejected};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::exact::{self, Edges};
use crate::pipeline::partition::{Partition, Scope};
use crate::pipeline::totals::Totals;
use crate::pipeline::workers::{worker, WorkerCtx, WorkerEvent};

/// Every partition's output, merged.
pub(crate) struct Merged {
    pub totals: Totals,
    pub counts: Counts,
    pub edges: Vec<Edges>,
    pub rejected: Vec<Rejected>,
    pub max_lag: i64,
    pub day_lo: Option<i32>,
    pub day_hi: Option<i32>,
    /// Rows in each day's last hours; `None` when kept results were reused
    /// (they carry no tail counts).
    pub tails: Option<DayTails>,
    pub timings: Vec<PartitionTiming>,
}

impl Merged {
    pub(super) fn new(catalog: &Catalog, reuse: bool, opts: &RunOptions) -> Merged {
        Merged {
            totals: Totals::new(catalog),
            counts: Counts::default(),
            edges: Vec::new(),
            rejected: Vec::new(),
            max_lag: 0,
            day_lo: None,
            day_hi: None,
            tails: (!reuse).then(|| DayTails {
                allowance: allowance(opts),
                rows: HashMap::new(),
            }),
            timings: Vec::new(),
        }
    }

    pub(super) fn absorb(&mut self, out: PartitionOutput, catalog: &Catalog, plan_lo: &[i64]) {
        if let Some(t) = self.tails.as_mut() {
            for &(d, n) in &out.tails {
                *t.rows.entry(d).or_default() += n;
            }
        }
        self.totals.merge(&out, catalog);
        self.counts.merge(&out.counts);
        self.max_lag = self.max_lag.max(out.max_lag);
        self.day_lo = min_opt(self.day_lo, out.day_lo);
        self.day_hi = max_opt(self.day_hi, out.day_hi);
        self.rejected.extend_from_slice(&out.rejected);
        self.edges.push(Edges {
            partition: out.partition.expect("partition outputs know their range"),
            ts_lo: out.ts_lo,
            ts_hi: out.ts_hi,
            head: out.head,
            late: out.late,
            allowance: out.allowance,
            keys: out.window_keys,
            cleared: 0,
        });
        exact::prune_heads(&mut self.edges, plan_lo);
    }
}

pub(super) fn allowance(opts: &RunOptions) -> i64 {
    opts.disorder_minutes as i64 * 60 * 1_000_000
}

/// A merge begun: the plan's range starts (the exact path's edges are
/// pruned against them) and the kept results already in.
pub(super) async fn start(
    repo: &Client,
    exec: i64,
    opts: &RunOptions,
    catalog: &Catalog,
    plan: &[Partition],
    kept: Vec<(PartitionOutput, i64)>,
) -> Result<(Merged, Vec<i64>)> {
    let mut plan_lo: Vec<i64> = plan.iter().map(|p| p.id_lo).collect();
    plan_lo.sort_unstable();
    let mut merged = Merged::new(catalog, !kept.is_empty(), opts);
    merge_kept(repo, exec, kept, &mut merged, catalog, &plan_lo).await?;
    Ok((merged, plan_lo))
}

/// Records and merges the results kept from an earlier execution.
async fn merge_kept(
    repo: &Client,
    exec: i64,
    kept: Vec<(PartitionOutput, i64)>,
    merged: &mut Merged,
    catalog: &Catalog,
    plan_lo: &[i64],
) -> Result<()> {
    for (out, from) in kept {
        jobs::partition_completed(repo, exec, &out, 0, 0, Some(from)).await?;
        merged.timings.push(PartitionTiming {
            no: out.partition.map(|p| p.no).unwrap_or(0),
            rows: out.counts.rows_read,
            seconds: 0.0,
            attempts: 0,
            reused: true,
            ..Default::default()
        });
        merged.absorb(out, catalog, plan_lo);
    }

    Ok(())
}

/// What the readers (and the exact path after them) need beyond the plan.
#[derive(Clone, Copy)]
pub(crate) struct ReadInputs<'a> {
    pub config: &'a Config,
    pub snapshot: &'a str,
    pub scope: Scope,
    pub catalog: &'a Arc<Catalog>,
    pub workers: usize,
}

/// Merges `kept` results, then reads `todo` on the reader pool. Returns
/// only once every reader thread has ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_all(
    repo: &Client,
    exec: i64,
    opts: &RunOptions,
    inputs: ReadInputs<'_>,
    plan: &[Partition],
    kept: Vec<(PartitionOutput, i64)>,
    todo: &[Partition],
    stop: &Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<Merged> {
    let catalog = inputs.catalog;
    let (mut merged, plan_lo) = start(repo, exec, opts, catalog, plan, kept).await?;

    let rows_seen = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = unbounded_channel::<WorkerEvent>();
    let queue = crossbeam_channel::unbounded::<Partition>();
    for p in todo {
        queue.0.send(*p).expect("queue open");
    }
    drop(queue.0);
    let threads = inputs.workers.min(todo.len().max(1));
    let pool: Vec<_> = (0..threads)
        .map(|_| {
            let ctx = WorkerCtx {
                config: inputs.config.clone(),
                snapshot: inputs.snapshot.to_string(),
                scope: inputs.scope,
                catalog: catalog.clone(),
                allowance: allowance(opts),
                queue: queue.1.clone(),
                events: tx.clone(),
                stop: stop.clone(),
                rows: rows_seen.clone(),
                attempts: opts.attempts.max(1),
                pause: opts.pause_after_partition,
                streams: opts.streams.max(1),
            };
            std::thread::spawn(move || worker(ctx))
        })
        .collect();
    drop(tx);

    let mut failure: Option<Error> = None;
    let mut stopped = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let recorded = match ev {
                    WorkerEvent::Started { no, attempt } => {
                        jobs::partition_running(repo, exec, no, attempt).await
                    }
                    WorkerEvent::Done { out, seconds, attempt } => {
                        let p = out.partition.expect("range");
                        let r = jobs::partition_completed(repo, exec, &out, (seconds * 1000.0) as i64, attempt, None).await;
                        let rows = out.counts.rows_read;
                        merged.timings.push(PartitionTiming { no: p.no, rows, seconds, attempts: attempt, reused: false, ..Default::default() });
                        merged.absorb(*out, catalog, &plan_lo);
                        obs.event(&Event::PartitionDone { no: p.no, rows, seconds, attempts: attempt });
                        r
                    }
                    WorkerEvent::Retrying { no, attempt, error } => {
                        obs.event(&Event::PartitionRetry { no, attempt, error });
                        Ok(())
                    }
                    WorkerEvent::Failed { no, attempt, error } => {
                        stop.store(true, Ordering::SeqCst);
                        let r = jobs::partition_failed(repo, exec, no, "FAILED", attempt, &error.to_string()).await;
                        failure.get_or_insert(error);
                        r
                    }
                    WorkerEvent::Stopped { no } => {
                        stopped = true;
                        jobs::partition_failed(repo, exec, no, "STOPPED", 0, "stopped on request").await
                    }
                };
                // The repository connection (and with it the run lock) is
                // gone: stop the workers and fail, never returning while
                // they still run.
                if let Err(e) = recorded {
                    stop.store(true, Ordering::SeqCst);
                    failure.get_or_insert(e);
                }
            }
            _ = ticker.tick() => {
                obs.event(&Event::RowsRead(rows_seen.load(Ordering::Relaxed)));
            }
        }
    }
    // A reader that panicked sent no outcome for its partition: without
    // this, the run would publish the sums of the others as if complete.
    for h in pool {
        if h.join().is_err() {
            failure.get_or_insert(Error::Tool(
                "a reader thread panicked, so the run publishes nothing; its log above says where. \
                 This is a bug in settle: please report it with that log"
                    .into(),
            ));
        }
    }
    obs.event(&Event::RowsRead(rows_seen.load(Ordering::Relaxed)));
    if let Some(e) = failure {
        return Err(e);
    }
    if stopped || stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    Ok(merged)
}
