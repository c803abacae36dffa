//! The reader pool: threads that take partitions from a queue and stream
//! each one through binary COPY into an aggregator, in the run's snapshot,
//! retrying transient errors with backoff. They report over a channel; the
//! conductor records and merges.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};
use crate::pipeline::aggregate::{Aggregator, PartitionOutput, Scratch, BATCH};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::partition::{self, Partition, Scope};
use crate::pipeline::read::{copy_plays, open_reader, Play};

/// What a reader thread tells the conductor.
pub enum WorkerEvent {
    Started {
        no: u32,
        attempt: u32,
    },
    Done {
        out: Box<PartitionOutput>,
        seconds: f64,
        attempt: u32,
    },
    Failed {
        no: u32,
        attempt: u32,
        error: Error,
    },
    Stopped {
        no: u32,
    },
    Retrying {
        no: u32,
        attempt: u32,
        error: String,
    },
}

pub struct WorkerCtx {
    pub config: Config,
    pub snapshot: String,
    pub scope: Scope,
    pub catalog: Arc<Catalog>,
    pub allowance: i64,
    pub queue: crossbeam_channel::Receiver<Partition>,
    pub events: UnboundedSender<WorkerEvent>,
    pub stop: Arc<AtomicBool>,
    pub rows: Arc<AtomicU64>,
    pub attempts: u32,
    pub pause: Duration,
    pub streams: usize,
}

/// One reader thread: its own connection in the run's snapshot, streaming
/// partitions from the queue until it is empty.
pub fn worker(ctx: WorkerCtx) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ctx.events.send(WorkerEvent::Failed {
                no: 0,
                attempt: 0,
                error: Error::io("starting a worker runtime", e),
            });
            return;
        }
    };
    rt.block_on(async {
        futures_util::future::join_all((0..ctx.streams).map(|_| stream_partitions(&ctx))).await;
    });
}

/// One COPY stream of a worker: its own connection in the run's snapshot,
/// taking partitions from the queue until it is empty.
async fn stream_partitions(ctx: &WorkerCtx) {
    let mut client: Option<Client> = None;
    let mut scratch = Some(Scratch::default());
    // The queue is filled before the workers start, so this never blocks.
    while let Ok(p) = ctx.queue.try_recv() {
        if ctx.stop.load(Ordering::SeqCst) {
            let _ = ctx.events.send(WorkerEvent::Stopped { no: p.no });
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = ctx.events.send(WorkerEvent::Started { no: p.no, attempt });
            let started = Instant::now();
            match read_partition(ctx, &mut client, &mut scratch, &p).await {
                Ok(out) => {
                    let _ = ctx.events.send(WorkerEvent::Done {
                        out: Box::new(out),
                        seconds: started.elapsed().as_secs_f64(),
                        attempt,
                    });
                    break;
                }
                Err(Error::Stopped) => {
                    let _ = ctx.events.send(WorkerEvent::Stopped { no: p.no });
                    break;
                }
                Err(e) if e.is_transient() && attempt < ctx.attempts => {
                    client = None;
                    let backoff = backoff(attempt);
                    let _ = ctx.events.send(WorkerEvent::Retrying {
                        no: p.no,
                        attempt,
                        error: e.to_string(),
                    });
                    tracing::warn!(
                        partition = p.no,
                        attempt,
                        "transient error, retrying in {backoff:?}: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    let _ = ctx.events.send(WorkerEvent::Failed {
                        no: p.no,
                        attempt,
                        error,
                    });
                    break;
                }
            }
        }
        if !ctx.pause.is_zero() {
            tokio::time::sleep(ctx.pause).await;
        }
    }
    // Ends the read-only transaction before the connection goes: otherwise
    // the server logs "unexpected EOF on client connection with an open
    // transaction" for every reader of every run, which reads like a fault.
    if let Some(c) = client {
        let _ = c.batch_execute("COMMIT").await;
    }
}

async fn read_partition(
    ctx: &WorkerCtx,
    client: &mut Option<Client>,
    scratch: &mut Option<Scratch>,
    p: &Partition,
) -> Result<PartitionOutput> {
    if client.is_none() {
        let c = open_reader(&ctx.config, Some(&ctx.snapshot)).await?;
        *client = Some(c);
    }
    let c = client.as_ref().expect("connected");
    let spec = ReadSpec {
        catalog: &ctx.catalog,
        scope: ctx.scope,
        allowance: ctx.allowance,
        rows: &ctx.rows,
        stop: &[&ctx.stop],
        pause_mid: Duration::ZERO,
    };
    read_in_snapshot(c, &spec, scratch, p).await
}

/// What reading one partition needs besides the connection.
pub struct ReadSpec<'a> {
    pub catalog: &'a Catalog,
    pub scope: Scope,
    pub allowance: i64,
    /// Rows read so far, for progress.
    pub rows: &'a AtomicU64,
    /// The read aborts with [`Error::Stopped`] once any of these is set.
    pub stop: &'a [&'a AtomicBool],
    /// Test hook: sleep once this long after the first 64k rows, so a test
    /// can kill a reader mid-partition.
    pub pause_mid: Duration,
}

/// Streams partition `p` over `c`, already in the run's snapshot, into an
/// aggregate: the in-process readers and `settle worker` share it, so a
/// partition gives the same result wherever it is read.
pub async fn read_in_snapshot(
    c: &Client,
    spec: &ReadSpec<'_>,
    scratch: &mut Option<Scratch>,
    p: &Partition,
) -> Result<PartitionOutput> {
    let mut agg = Aggregator::with_scratch(
        spec.catalog,
        spec.scope,
        spec.allowance,
        scratch.take().unwrap_or_default(),
    );
    let statement = partition::copy_statement(c, p, &spec.scope).await?;
    let mut pending = 0u64;
    let rows = spec.rows;
    let stop = spec.stop;
    let mut pause = spec.pause_mid;
    let mut batch: Vec<Play> = Vec::with_capacity(BATCH);
    copy_plays(
        c,
        &statement,
        |play| {
            batch.push(*play);
            if batch.len() == BATCH {
                agg.push_batch(&batch);
                batch.clear();
                pending += BATCH as u64;
                if pending >= 65_536 {
                    rows.fetch_add(pending, Ordering::Relaxed);
                    pending = 0;
                }
            }
        },
        || {
            if !pause.is_zero() {
                // Blocking on purpose: the reader's runtime is its own.
                std::thread::sleep(std::mem::take(&mut pause));
            }
            if stop.iter().any(|s| s.load(Ordering::Relaxed)) {
                Err(Error::Stopped)
            } else {
                Ok(())
            }
        },
    )
    .await?;
    agg.push_batch(&batch);
    rows.fetch_add(pending + batch.len() as u64, Ordering::Relaxed);
    let (out, kept) = agg.finish_keep(Some(*p));
    *scratch = Some(kept);
    Ok(out)
}

/// Exponential backoff with jitter: 100 ms, 200 ms, 400 ms ... (capped at
/// 5 s), each scaled by a random factor in [0.5, 1.5).
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.5 + (nanos % 1000) as f64 / 1000.0;
    Duration::from_millis((base as f64 * jitter) as u64)
}
