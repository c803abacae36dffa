//! One claiming reader: a thread with its own runtime that claims a
//! partition through the job repository, reads it in the execution's
//! snapshot on the read server with the same code as the in-process
//! readers, stores the result and marks it done, until it is told to end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_postgres::{Client, Config};

use crate::db;
use crate::error::{DbContext, Error, Result};
use crate::jobs::claims::{self, Claim, Claimant};
use crate::pipeline::aggregate::{PartitionOutput, Scratch};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::read::open_reader;
use crate::pipeline::workers::{backoff, read_in_snapshot, ReadSpec};

/// When a claimer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Only when stopped (a long-running `settle worker`).
    Stopped,
    /// When no running execution has an unfinished partition, having
    /// worked, or after waiting this long for the first (`--once`).
    NoWork { wait_first: Duration },
    /// When this execution has no unfinished partition (the coordinator's
    /// own readers).
    Execution(i64),
}

/// What a claimer tells its owner.
#[derive(Clone, Debug)]
pub enum ClaimEvent {
    Claimed {
        exec: i64,
        no: u32,
        attempt: u32,
    },
    Done {
        exec: i64,
        no: u32,
        attempt: u32,
        rows: u64,
        seconds: f64,
    },
    /// Given back for another attempt (a transient error, or stopping).
    GaveBack {
        exec: i64,
        no: u32,
        attempt: u32,
        why: String,
    },
    /// Taken back by the coordinator (or its run ended) before the result
    /// was stored; the result was dropped.
    Lost {
        exec: i64,
        no: u32,
        attempt: u32,
    },
    Failed {
        exec: i64,
        no: u32,
        attempt: u32,
        error: String,
    },
    /// A running execution's snapshot lives on another server than this
    /// claimer reads from, so it cannot help it.
    OtherServer {
        exec: i64,
        theirs: String,
    },
    /// The repository connection broke; reconnecting.
    Reconnecting {
        error: String,
    },
}

pub struct ClaimerCtx {
    /// The primary: job repository and claims.
    pub primary: Config,
    /// Where the log is read (the primary or a hot standby).
    pub read: Config,
    pub until: Until,
    /// Poll interval when no notification comes.
    pub poll: Duration,
    pub stop: Arc<AtomicBool>,
    pub events: UnboundedSender<ClaimEvent>,
    /// Rows read so far, for progress.
    pub rows: Arc<AtomicU64>,
    /// Test hook: pause mid-partition (see [`ReadSpec::pause_mid`]).
    pub pause_mid: Duration,
    pub host: String,
    pub pid: i32,
}

/// Runs one claimer on the current thread until `ctx.until`; returns the
/// partitions it completed.
pub fn run(ctx: ClaimerCtx) -> Result<u32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting a claimer runtime", e))?;
    rt.block_on(async {
        let mut done = 0;
        let mut failures = 0u32;
        loop {
            match claim_loop(&ctx, &mut done).await {
                Ok(()) => return Ok(done),
                Err(e) if e.is_transient() && failures < 10 && !ctx.stop.load(Ordering::SeqCst) => {
                    failures += 1;
                    let _ = ctx.events.send(ClaimEvent::Reconnecting {
                        error: e.to_string(),
                    });
                    tokio::time::sleep(backoff(failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// The read server's connection in one execution's snapshot, and the
/// catalogue as that snapshot sees it.
struct Reader {
    exec: i64,
    client: Client,
    catalog: Arc<Catalog>,
}

async fn claim_loop(ctx: &ClaimerCtx, done: &mut u32) -> Result<()> {
    let mut repo = db::connect(&ctx.primary).await?;
    let (_listener, mut woken) = db::listen(&ctx.primary, claims::CHANNEL).await?;
    let server = claims::server_identity(&db::connect(&ctx.read).await?).await?;
    let who = Claimant {
        host: ctx.host.clone(),
        pid: ctx.pid,
        server,
    };
    let only = match ctx.until {
        Until::Execution(e) => Some(e),
        _ => None,
    };
    let started = Instant::now();
    let mut reader: Option<Reader> = None;
    let mut scratch = Some(Scratch::default());
    let mut warned: Vec<i64> = Vec::new();
    while !ctx.stop.load(Ordering::SeqCst) {
        if let Some(claim) = claims::claim_next(&mut repo, &who, only).await? {
            let _ = ctx.events.send(ClaimEvent::Claimed {
                exec: claim.exec,
                no: claim.partition.no,
                attempt: claim.attempt,
            });
            if work(ctx, &repo, &who, &claim, &mut reader, &mut scratch).await? {
                *done += 1;
            }
            continue;
        }
        if finished(ctx, &repo, &who, *done > 0, started).await? {
            return Ok(());
        }
        for (exec, theirs) in other_servers(&repo, &who.server, only).await? {
            if !warned.contains(&exec) {
                warned.push(exec);
                let _ = ctx.events.send(ClaimEvent::OtherServer { exec, theirs });
            }
        }
        wait(&mut woken, ctx.poll).await;
    }
    Ok(())
}

async fn wait(woken: &mut UnboundedReceiver<()>, poll: Duration) {
    tokio::select! {
        w = woken.recv() => {
            if w.is_none() {
                tokio::time::sleep(poll).await
            }
        }
        _ = tokio::time::sleep(poll) => {}
    }
}

/// Whether the claimer is done (see [`Until`]).
async fn finished(
    ctx: &ClaimerCtx,
    repo: &Client,
    who: &Claimant,
    worked: bool,
    started: Instant,
) -> Result<bool> {
    let unfinished = |exec: Option<i64>| async move {
        let r = repo
            .query_one(
                "SELECT count(*) FROM partition_execution pe JOIN job_execution e USING (execution_id) \
                 WHERE e.status = 'RUNNING' AND e.remote IS NOT NULL AND e.remote->>'server' = $1 \
                   AND ($2::int8 IS NULL OR e.execution_id = $2) AND pe.status IN ('PENDING', 'RUNNING')",
                &[&who.server, &exec],
            )
            .await
            .db("looking for unfinished partitions")?;
        Ok::<i64, Error>(r.get(0))
    };
    Ok(match ctx.until {
        Until::Stopped => false,
        Until::Execution(exec) => unfinished(Some(exec)).await? == 0,
        Until::NoWork { wait_first } => {
            unfinished(None).await? == 0 && (worked || started.elapsed() >= wait_first)
        }
    })
}

/// Running remote executions whose snapshot is on another server.
async fn other_servers(repo: &Client, ours: &str, only: Option<i64>) -> Result<Vec<(i64, String)>> {
    let rows = repo
        .query(
            "SELECT execution_id, remote->>'server' FROM job_execution \
             WHERE status = 'RUNNING' AND remote IS NOT NULL AND remote->>'server' <> $1 \
               AND ($2::int8 IS NULL OR execution_id = $2)",
            &[&ours, &only],
        )
        .await
        .db("looking for executions on other servers")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Reads one claimed partition and settles the claim: completed, given
/// back, lost or failed. `Ok(true)` when its result was stored.
async fn work(
    ctx: &ClaimerCtx,
    repo: &Client,
    who: &Claimant,
    claim: &Claim,
    reader: &mut Option<Reader>,
    scratch: &mut Option<Scratch>,
) -> Result<bool> {
    let (exec, no, attempt) = (claim.exec, claim.partition.no, claim.attempt);
    let t = Instant::now();
    let lost = AtomicBool::new(false);
    let result = read_claim(ctx, repo, who, claim, reader, scratch, &lost).await;
    if result.is_err() {
        // An aborted COPY or transaction leaves nothing to reuse.
        *reader = None;
    }
    let event = match result {
        Ok(out) => {
            let millis = t.elapsed().as_millis() as i64;
            if claims::complete(repo, claim, who, &out, millis).await? {
                let _ = ctx.events.send(ClaimEvent::Done {
                    exec,
                    no,
                    attempt,
                    rows: out.counts.rows_read,
                    seconds: t.elapsed().as_secs_f64(),
                });
                return Ok(true);
            }
            ClaimEvent::Lost { exec, no, attempt }
        }
        Err(Error::Stopped) if lost.load(Ordering::SeqCst) => {
            ClaimEvent::Lost { exec, no, attempt }
        }
        Err(Error::Stopped) => {
            let why = format!("given back by {} pid {}: it is stopping", who.host, who.pid);
            claims::release(repo, claim, who, &why, false).await?;
            ClaimEvent::GaveBack {
                exec,
                no,
                attempt,
                why,
            }
        }
        Err(e) if e.is_transient() => {
            let why = format!("attempt {attempt} on {} pid {}: {e}", who.host, who.pid);
            claims::release(repo, claim, who, &why, true).await?;
            tokio::time::sleep(backoff(attempt)).await;
            ClaimEvent::GaveBack {
                exec,
                no,
                attempt,
                why,
            }
        }
        Err(e) => {
            let error = format!("on {} pid {}: {e}", who.host, who.pid);
            claims::fail(repo, claim, who, &error).await?;
            ClaimEvent::Failed {
                exec,
                no,
                attempt,
                error,
            }
        }
    };
    let _ = ctx.events.send(event);
    Ok(false)
}

/// The read itself, beside a watch that aborts it when the claim no longer
/// stands (taken back, or the run ended) or the claimer is stopped.
async fn read_claim(
    ctx: &ClaimerCtx,
    repo: &Client,
    who: &Claimant,
    claim: &Claim,
    reader: &mut Option<Reader>,
    scratch: &mut Option<Scratch>,
    lost: &AtomicBool,
) -> Result<PartitionOutput> {
    if reader.as_ref().map(|r| r.exec) != Some(claim.exec) {
        *reader = None;
        let client = open_reader(&ctx.read, Some(&claim.spec.snapshot)).await?;
        let catalog = Arc::new(Catalog::load(&client).await?);
        *reader = Some(Reader {
            exec: claim.exec,
            client,
            catalog,
        });
    }
    let r = reader.as_ref().expect("opened above");
    let abort = AtomicBool::new(false);
    let spec = ReadSpec {
        catalog: &r.catalog,
        scope: claim.spec.scope(),
        allowance: claim.spec.allowance,
        rows: &ctx.rows,
        stop: &[&abort, &ctx.stop],
        pause_mid: ctx.pause_mid,
    };
    let read = read_in_snapshot(&r.client, &spec, scratch, &claim.partition);
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if ctx.stop.load(Ordering::SeqCst) {
                abort.store(true, Ordering::SeqCst);
            }
            if let Ok(false) = claims::still_mine(repo, claim, who).await {
                lost.store(true, Ordering::SeqCst);
                abort.store(true, Ordering::SeqCst);
            }
        }
    };
    tokio::select! {
        out = read => out,
        _ = watch => unreachable!("the watch never ends"),
    }
}
