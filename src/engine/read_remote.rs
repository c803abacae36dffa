//! The read phase of a `--remote` run: the partitions are opened to
//! `settle worker` processes through the job repository, this process
//! claims some itself (unless `--workers 0`), and the conductor merges each
//! stored result as it lands, taking back claims whose worker died or
//! outlived `--partition-timeout`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::events::{Event, Observer};
use super::read_all::{self, allowance, Merged, ReadInputs};
use super::summary::PartitionTiming;
use super::RunOptions;
use crate::error::{Error, Result};
use crate::jobs::claims::{self, ClaimState, RemoteSpec};
use crate::pipeline::aggregate::PartitionOutput;
use crate::pipeline::partition::Partition;
use crate::remote::{self, Until, WorkerOptions};

/// Where the coordinator's snapshot lives, for the workers.
pub(crate) struct RemoteInputs {
    /// [`claims::server_identity`] of the read server.
    pub server: String,
    /// The primary, where the local claimers claim.
    pub primary: tokio_postgres::Config,
}

/// Opens the plan to workers and merges every partition's result.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_remote(
    repo: &Client,
    exec: i64,
    opts: &RunOptions,
    inputs: ReadInputs<'_>,
    remote_in: RemoteInputs,
    plan: &[Partition],
    kept: Vec<(PartitionOutput, i64)>,
    stop: &Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<Merged> {
    let catalog = inputs.catalog;
    let mut done: HashSet<u32> = kept
        .iter()
        .filter_map(|(o, _)| o.partition.map(|p| p.no))
        .collect();
    let (mut merged, plan_lo) = read_all::start(repo, exec, opts, catalog, plan, kept).await?;

    let spec = RemoteSpec {
        snapshot: inputs.snapshot.to_string(),
        server: remote_in.server.clone(),
        read_lo: inputs.scope.read_lo,
        read_hi: inputs.scope.read_hi,
        count_lo: inputs.scope.count_lo,
        allowance: allowance(opts),
        timeout_s: opts.partition_timeout.as_secs().max(1),
        attempts: opts.attempts.max(1),
    };
    claims::open(repo, exec, &spec).await?;
    let local = (opts.workers > 0 && done.len() < plan.len()).then(|| {
        let o = WorkerOptions {
            read: Some(inputs.config.clone()),
            threads: opts.workers,
            until: Until::Execution(exec),
            poll: Duration::from_millis(250),
            pause_mid: Duration::ZERO,
        };
        remote::start(&remote_in.primary, &o, stop.clone())
    });

    let result = follow(
        repo,
        exec,
        plan,
        &spec,
        &mut merged,
        &mut done,
        (stop, obs),
        &plan_lo,
        catalog,
    )
    .await;
    if result.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    if let Some(w) = local {
        let rows = w.rows.clone();
        // The local claimers end once the execution has no unfinished
        // partition, or on the stop raised above.
        let joined = tokio::task::spawn_blocking(move || w.join())
            .await
            .map_err(|e| Error::Tool(format!("joining the local readers: {e}")))?;
        obs.event(&Event::RowsRead(
            rows.load(Ordering::Relaxed).max(merged.counts.rows_read),
        ));
        if let (Ok(()), Err(e)) = (&result, joined) {
            tracing::warn!("a local reader ended with an error after the read: {e}");
        }
    }
    result?;
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    Ok(merged)
}

/// Follows the claims until every partition is merged: takes back lost
/// claims, merges finished results, fails on a partition that cannot be
/// read, and reports who holds what.
#[allow(clippy::too_many_arguments)]
async fn follow(
    repo: &Client,
    exec: i64,
    plan: &[Partition],
    spec: &RemoteSpec,
    merged: &mut Merged,
    done: &mut HashSet<u32>,
    (stop, obs): (&Arc<AtomicBool>, &dyn Observer),
    plan_lo: &[i64],
    catalog: &crate::pipeline::catalog::Catalog,
) -> Result<()> {
    let mut last_states: Vec<ClaimState> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let started = Instant::now();
    while done.len() < plan.len() {
        ticker.tick().await;
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        for t in claims::take_back(repo, exec).await? {
            obs.event(&Event::PartitionRetry {
                no: t.no,
                attempt: t.attempt,
                error: t.reason,
            });
        }
        let merged_nos: Vec<i32> = done.iter().map(|&n| n as i32).collect();
        for f in claims::finished(repo, exec, &merged_nos).await? {
            let p = f.out.partition.expect("stored results know their range");
            let rows = f.out.counts.rows_read;
            let seconds = f.millis as f64 / 1000.0;
            merged.timings.push(PartitionTiming {
                no: p.no,
                rows,
                seconds,
                attempts: f.attempts,
                reused: false,
                host: f.host,
                pid: f.pid,
            });
            merged.absorb(f.out, catalog, plan_lo);
            done.insert(p.no);
            obs.event(&Event::PartitionDone {
                no: p.no,
                rows,
                seconds,
                attempts: f.attempts,
            });
        }
        let states = claims::states(repo, exec).await?;
        check_failed(exec, &states, spec)?;
        obs.event(&Event::RowsRead(merged.counts.rows_read));
        if states != last_states {
            obs.event(&Event::Claims(states.clone()));
            last_states = states;
        }
    }
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "remote read done");
    Ok(())
}

/// A partition FAILED by a worker, or PENDING with every attempt used,
/// fails the run.
fn check_failed(exec: i64, states: &[ClaimState], spec: &RemoteSpec) -> Result<()> {
    let bad = states
        .iter()
        .find(|s| s.status == "FAILED" || (s.status == "PENDING" && s.attempts >= spec.attempts));
    match bad {
        Some(s) => Err(Error::Partition {
            execution: exec,
            no: s.no,
            attempts: s.attempts,
            detail: s
                .error
                .clone()
                .unwrap_or_else(|| "no error recorded".into()),
        }),
        None => Ok(()),
    }
}
