//! Conducts one run of the pipeline, recorded in the job repository:
//! scope (which days) → plan → read all partitions from one snapshot →
//! exact path → price and rank → publish atomically, with a summary.
//! It reports through an [`Observer`] and prints nothing.

mod events;
mod plan;
mod publish;
mod read_all;
mod read_remote;
mod scope;
mod summary;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub use crate::pipeline::swap::PublishMode;
pub use events::{Event, Note, Observer, Phase, Quiet};
pub use summary::{
    Excluded, PartitionTiming, Phases, PublishMethod, ReadFrom, RejectedCounts, RunSummary,
};

use crate::db::{self, Database};
use crate::error::{DbContext, Error, Refusal, Result};
use crate::jobs::{self, refusals, Begin, Requested, Status};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::exact;
use crate::pipeline::partition::Partition;
use crate::rules::calendar::Day;
use crate::sys::peak_rss_bytes;
use summary::{max_opt, min_opt};

/// Default allowance for `started_at` trailing the log order: longer than any
/// play (videos run to about two hours), so in practice no row is late.
pub const DEFAULT_DISORDER_MINUTES: u32 = 180;

/// COPY streams per worker thread. Each stream keeps its own window of
/// the last three hours of plays (~80 MB at the reference dataset's evening
/// peak), so two streams per thread cost ~180 MB more for a read only
/// ~5% faster (100M rows, 2 cores: 30.0-33.0 s against 31.3-35.9 s): one
/// stream keeps peak memory under 512 MiB. `--streams 2` trades it back.
pub const DEFAULT_STREAMS: usize = 1;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub requested: Requested,
    pub partitions: Option<u32>,
    pub workers: usize,
    /// COPY streams each worker thread interleaves.
    pub streams: usize,
    pub max_rejects: Option<u64>,
    pub disorder_minutes: u32,
    pub force: bool,
    /// Start from scratch instead of continuing a failed execution.
    pub fresh: bool,
    /// Attempts per partition for transient errors (1 = no retry).
    pub attempts: u32,
    /// Settle days that hold no plays instead of refusing them.
    pub allow_empty: bool,
    /// How many days after today (in Seoul) a run may reach: later days can
    /// have no plays yet.
    pub horizon_days: u32,
    /// Test hook: sleep after each partition, so faults can be injected mid-run.
    pub pause_after_partition: Duration,
    /// Open the partitions to `settle worker` processes (they and this
    /// process's own readers claim them through the job repository).
    pub remote: bool,
    /// A claim that has not produced its result after this long is taken
    /// back and given to another worker.
    pub partition_timeout: Duration,
    /// Read the log (catalogue, partitions, exact path) from this server,
    /// e.g. a hot standby, in one snapshot exported there; the job
    /// repository and the publish stay on the primary.
    pub read_url: Option<String>,
    /// Swap in tables built anew, write the difference, or pick by size.
    pub publish: PublishMode,
    /// Test hook: sleep between staging a swap and swapping, so a run can
    /// be killed mid-publish.
    pub pause_before_swap: Duration,
}

/// Connections the exact path re-reads on at most.
const EXACT_PATH_CONNECTIONS: usize = 4;

/// Default `--partition-timeout`: a 16M-row partition reads in about a
/// minute on this project's 2-core reference machine, so ten minutes means
/// the worker is stuck, not slow.
pub const DEFAULT_PARTITION_TIMEOUT: Duration = Duration::from_secs(600);

impl RunOptions {
    pub fn new(requested: Requested) -> Self {
        RunOptions {
            requested,
            partitions: None,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            streams: DEFAULT_STREAMS,
            max_rejects: None,
            disorder_minutes: DEFAULT_DISORDER_MINUTES,
            force: false,
            fresh: false,
            attempts: 4,
            allow_empty: false,
            horizon_days: 1,
            pause_after_partition: Duration::ZERO,
            remote: false,
            partition_timeout: DEFAULT_PARTITION_TIMEOUT,
            read_url: None,
            publish: PublishMode::Auto,
            pause_before_swap: Duration::ZERO,
        }
    }
}

pub enum Outcome {
    Completed(Box<RunSummary>),
    AlreadyCompleted { execution_id: i64 },
}

/// Runs the settlement job. `stop` may be set at any time (Ctrl-C, `settle
/// stop`); the run then ends STOPPED without publishing.
pub async fn run(
    database: &Database,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<Outcome> {
    // Arguments that can never be valid are refused before anything is
    // recorded.
    if let Requested::Days(a, b) = opts.requested {
        if a > b {
            return Err(Error::Refused(Refusal::Backwards { from: a, to: b }));
        }
    }
    let mut repo = database.connect().await?;
    let locked: bool = repo
        .query_one("SELECT pg_try_advisory_lock($1)", &[&jobs::RUN_LOCK])
        .await
        .db("taking the settlement lock")?
        .get(0);
    if !locked {
        let holder = jobs::lock_holder(&repo).await?;
        let e = Error::Locked { holder };
        refusals::record(&repo, &opts.requested.key(), &e).await;
        return Err(e);
    }
    let outcome = run_locked(database, &mut repo, opts, stop, obs).await;
    // Release the lock now: a dropped connection's backend may linger a
    // moment, and the next run must not find the lock still held.
    let _ = repo
        .execute("SELECT pg_advisory_unlock($1)", &[&jobs::RUN_LOCK])
        .await;
    outcome
}

/// The part of a run that holds the settlement lock.
async fn run_locked(
    database: &Database,
    repo: &mut Client,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<Outcome> {
    jobs::changes::watch(&*repo).await?;
    let abandoned = jobs::abandon_dead(&*repo).await?;
    if !abandoned.is_empty() {
        tracing::debug!(?abandoned, "marked executions of dead processes ABANDONED");
        obs.event(&Event::Note(Note::Abandoned {
            executions: abandoned,
        }));
    }
    // One snapshot for everything the run reads, opened before anything is
    // recorded: the days are resolved in it, and a refused run is no
    // execution, only a refusal.
    let read_config = read_config(database, opts)?;
    let snap = open_snapshot(&read_config).await?;
    let days = match scope::resolve(&snap.client, repo, opts).await {
        Ok(d) => d,
        Err(e) => {
            refusals::record(repo, &opts.requested.key(), &e).await;
            return Err(e);
        }
    };
    let exec = match jobs::begin(&*repo, &opts.requested, opts.force, opts.fresh).await? {
        Begin::AlreadyCompleted { execution_id } => {
            return Ok(Outcome::AlreadyCompleted { execution_id })
        }
        Begin::Started(e, rerun) => {
            if let Some(r) = rerun {
                obs.event(&Event::Note(Note::RowsAdded {
                    previous: r.previous,
                    rows: r.rows,
                }));
            }
            e
        }
    };
    obs.event(&Event::Began {
        execution_id: exec.id,
    });
    jobs::record_snapshot(repo, exec.id, snap.max_id, &snap.seen).await?;
    jobs::claims::record_read(repo, exec.id, &snap.server, snap.replay_lsn.as_deref()).await?;
    let watcher = watch_for_stop(database, exec.id, stop.clone());
    let result = execute(
        (database, &read_config),
        repo,
        opts,
        &exec,
        (snap, days),
        &stop,
        obs,
    )
    .await;
    watcher.abort();
    match result {
        Ok(summary) => Ok(Outcome::Completed(Box::new(summary))),
        Err(e) => {
            record_failure(database, repo, exec.id, &e).await;
            Err(e)
        }
    }
}

/// Stop requests arrive through the repository; poll on a side connection.
fn watch_for_stop(
    database: &Database,
    id: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let config = database.config().clone();
    tokio::spawn(async move {
        let Ok(c) = db::connect(&config).await else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match jobs::stop_requested(&c, id).await {
                Ok(true) => {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(false) => {}
                Err(_) => return,
            }
        }
    })
}

/// Marks the execution FAILED or STOPPED; the repository connection may be
/// the thing that died, so a new one is tried.
async fn record_failure(database: &Database, repo: &Client, id: i64, e: &Error) {
    let status = if matches!(e, Error::Stopped) {
        Status::Stopped
    } else {
        Status::Failed
    };
    let msg = e.to_string();
    let recorded = match jobs::finish_unpublished(repo, id, status, &msg, None).await {
        Ok(()) => Ok(()),
        Err(_) => match database.connect().await {
            Ok(c) => jobs::finish_unpublished(&c, id, status, &msg, None).await,
            Err(e2) => Err(e2),
        },
    };
    if let Err(e2) = recorded {
        tracing::error!("could not record the failure of execution {id}: {e2}");
    }
}

/// Where the run reads the log: `--read-url`, else the primary.
fn read_config(database: &Database, opts: &RunOptions) -> Result<tokio_postgres::Config> {
    match &opts.read_url {
        None => Ok(database.config().clone()),
        Some(url) => url
            .parse()
            .map_err(|e| Error::Usage(format!("--read-url is not a valid PostgreSQL URL: {e}"))),
    }
}

/// One execution, from its snapshot to its published results.
async fn execute(
    (database, read_config): (&Database, &tokio_postgres::Config),
    repo: &mut Client,
    opts: &RunOptions,
    exec: &jobs::Execution,
    (snap, days): (Snapshot, scope::Days),
    stop: &Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<RunSummary> {
    let t0 = Instant::now();
    obs.event(&Event::Phase(Phase::Plan));
    let mut summary = new_summary(opts, exec);

    let Snapshot {
        client: snap,
        exported: snapshot,
        seen,
        server,
        replay_lsn,
        ..
    } = snap;
    if opts.read_url.is_some() {
        summary.read_from = Some(summary::ReadFrom {
            server: server.clone(),
            replay_lsn,
        });
    }
    let catalog = Arc::new(Catalog::load(&snap).await?);
    for n in &days.notes {
        obs.event(&Event::Note(n.clone()));
    }
    summary.restated_from = days.restated_from.map(|d| d.to_string());
    summary.extended_to = days.extended_to.map(|d| d.to_string());
    summary.input_changes = (!days.changes.is_empty()).then(|| days.changes.clone());
    let (mut first, mut last) = (days.first, days.last);

    let (plan, kept) = plan::plan_or_continue(
        &snap,
        &days.scope,
        opts,
        exec,
        (first, last),
        catalog.len(),
        repo,
        obs,
    )
    .await?;
    let kept_nos: std::collections::HashSet<u32> = kept
        .iter()
        .filter_map(|(o, _)| o.partition.map(|p| p.no))
        .collect();
    let todo: Vec<Partition> = plan
        .iter()
        .filter(|p| !kept_nos.contains(&p.no))
        .copied()
        .collect();
    summary.partitions = plan.len() as u32;
    summary.partitions_reused = kept.len() as u32;
    summary.partitions_read = todo.len() as u32;
    jobs::set_running(repo, exec.id, first, last, &plan, summary.workers).await?;
    summary.phases.plan_s = t0.elapsed().as_secs_f64();
    obs.event(&Event::Planned {
        partitions: summary.partitions,
        to_read: summary.partitions_read,
    });

    // Read and aggregate.
    obs.event(&Event::Phase(Phase::Read));
    let t_read = Instant::now();
    let inputs = read_all::ReadInputs {
        config: read_config,
        snapshot: &snapshot,
        scope: days.scope,
        catalog: &catalog,
        workers: summary.workers,
    };
    let remote_in = opts.remote.then(|| read_remote::RemoteInputs {
        server,
        primary: database.config().clone(),
    });
    let work = (plan.as_slice(), kept, todo.as_slice());
    let read = read_partitions(&*repo, exec.id, opts, inputs, remote_in, work, stop, obs);
    // Both run to the end: a failed history read must not orphan the readers.
    let (merged, early) = tokio::join!(read, early_history(&*repo, opts, &days));
    let mut merged = merged?;
    summary.partition_timings = std::mem::take(&mut merged.timings);
    summary.phases.read_aggregate_s = t_read.elapsed().as_secs_f64();
    log_after_read(&merged);
    check_rejects(repo, opts, exec.id, &mut merged, &mut summary).await?;

    // The exact path, still inside the snapshot.
    obs.event(&Event::Phase(Phase::ExactPath));
    exact_path(snap, inputs, &mut merged, &mut summary).await?;

    // Settle and rank.
    obs.event(&Event::Phase(Phase::Settle));
    let t_settle = Instant::now();
    if matches!(opts.requested, Requested::All) {
        first = min_opt(merged.day_lo, days.settled.map(|s| s.0 .0)).map(Day);
        last = max_opt(merged.day_hi, days.settled.map(|s| s.1 .0)).map(Day);
    }
    count_settled(&mut summary, &merged, first, last);
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    let read_all::Merged {
        totals,
        counts,
        tails,
        ..
    } = merged;
    let rec = publish::Record {
        exec: exec.id,
        tails: tails.as_ref(),
        counts: &counts,
        seen: &seen,
        t0,
    };
    let (Some(first), Some(last)) = (first, last) else {
        summary.phases.settle_s = t_settle.elapsed().as_secs_f64();
        publish::complete_empty(&*repo, rec, &mut summary).await?;
        return Ok(finish(repo, summary, t0).await);
    };
    let history = match early? {
        Some(h) => h,
        None => publish::history(&*repo, (first, last), days.settled).await?,
    };
    summary.phases.settle_s = t_settle.elapsed().as_secs_f64();
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    // Settle, then write and publish in one transaction with the job
    // record (a big run settles while it writes).
    let notes = publish::settle_and_publish(
        repo,
        (totals, history),
        &catalog,
        rec,
        how(database, opts),
        &mut summary,
        obs,
    )
    .await?;
    for n in &notes {
        obs.event(&Event::Note(n.clone()));
    }
    Ok(finish(repo, summary, t0).await)
}

/// The summary as the run starts: who it is and how it reads.
fn new_summary(opts: &RunOptions, exec: &jobs::Execution) -> RunSummary {
    RunSummary {
        execution_id: exec.id,
        attempt: exec.attempt,
        restarted_from: exec.restart_of,
        requested: opts.requested.key(),
        // A remote run may leave every partition to the workers.
        workers: if opts.remote {
            opts.workers
        } else {
            opts.workers.max(1)
        },
        streams: opts.streams.max(1),
        remote: opts.remote,
        ..Default::default()
    }
}

/// The stored history, read while the readers work, for a run whose days
/// are fixed before the read (`--all` learns its days from the read).
async fn early_history(
    repo: &Client,
    opts: &RunOptions,
    days: &scope::Days,
) -> Result<Option<publish::History>> {
    match (days.first, days.last) {
        (Some(first), Some(last)) if !matches!(opts.requested, Requested::All) => {
            publish::history(repo, (first, last), days.settled)
                .await
                .map(Some)
        }
        _ => Ok(None),
    }
}

/// How this run publishes.
fn how<'a>(database: &'a Database, opts: &RunOptions) -> publish::How<'a> {
    publish::How {
        config: database.config(),
        mode: opts.publish,
        pause_before_swap: opts.pause_before_swap,
    }
}

/// The exact path, still inside the snapshot, which it then closes. Its
/// re-reads also go to one more connection per further worker (up to one
/// a core), in the same snapshot: one backend alone left a core idle.
async fn exact_path(
    snap: Client,
    inputs: read_all::ReadInputs<'_>,
    merged: &mut read_all::Merged,
    summary: &mut RunSummary,
) -> Result<()> {
    let t_exact = Instant::now();
    let (catalog, scope) = (inputs.catalog, &inputs.scope);
    let mut extra = Vec::new();
    if !merged.edges.is_empty() {
        for _ in 1..inputs.workers.clamp(1, EXACT_PATH_CONNECTIONS) {
            match crate::pipeline::read::open_reader(inputs.config, Some(inputs.snapshot)).await {
                Ok(c) => extra.push(c),
                Err(e) => {
                    tracing::warn!("the exact path goes on with fewer connections: {e}");
                    break;
                }
            }
        }
    }
    let sources: Vec<&Client> = std::iter::once(&snap).chain(extra.iter()).collect();
    summary.exact_path = exact::resolve(
        &sources,
        &mut merged.edges,
        catalog,
        scope,
        &mut merged.totals,
    )
    .await?;
    for c in extra {
        c.batch_execute("COMMIT")
            .await
            .db("closing an exact-path connection")?;
    }
    merged.edges = Vec::new();
    snap.batch_execute("COMMIT")
        .await
        .db("closing the run's snapshot")?;
    summary.phases.exact_path_s = t_exact.elapsed().as_secs_f64();
    tracing::debug!(peak_rss_mib = peak_rss_bytes() >> 20, "after exact path");
    Ok(())
}

/// Reads the partitions: on this process's reader pool, or through claims
/// that `settle worker`s share (`--remote`).
#[allow(clippy::too_many_arguments)]
async fn read_partitions(
    repo: &Client,
    exec: i64,
    opts: &RunOptions,
    inputs: read_all::ReadInputs<'_>,
    remote_in: Option<read_remote::RemoteInputs>,
    (plan, kept, todo): (
        &[Partition],
        Vec<(crate::pipeline::aggregate::PartitionOutput, i64)>,
        &[Partition],
    ),
    stop: &Arc<AtomicBool>,
    obs: &dyn Observer,
) -> Result<read_all::Merged> {
    tracing::debug!(
        rss_now_mib = crate::sys::rss_now_bytes() >> 20,
        "before read"
    );
    match remote_in {
        Some(r) => {
            read_remote::read_remote(repo, exec, opts, inputs, r, plan, kept, stop, obs).await
        }
        None => read_all::read_all(repo, exec, opts, inputs, plan, kept, todo, stop, obs).await,
    }
}

/// The run's snapshot: its own connection in a REPEATABLE READ READ ONLY
/// transaction, exported for the readers.
struct Snapshot {
    client: Client,
    /// `pg_export_snapshot()`, for the readers to import.
    exported: String,
    /// `pg_current_snapshot()` as text, recorded with the execution.
    seen: String,
    /// The highest id it sees.
    max_id: Option<i64>,
    /// The server it lives on ([`jobs::claims::server_identity`]).
    server: String,
    /// A standby's last replayed WAL position; `None` on a primary.
    replay_lsn: Option<String>,
}

async fn open_snapshot(config: &tokio_postgres::Config) -> Result<Snapshot> {
    let client = db::connect(config).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .db("opening the run's snapshot")?;
    let exported: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .db("exporting the run's snapshot")?
        .get(0);
    let r = client
        .query_one(
            "SELECT (SELECT max(id) FROM viewing_log), pg_current_snapshot()::text, \
                    pg_last_wal_replay_lsn()::text",
            &[],
        )
        .await
        .db("reading the run's snapshot bounds")?;
    Ok(Snapshot {
        max_id: r.get(0),
        seen: r.get(1),
        replay_lsn: r.get(2),
        server: jobs::claims::server_identity(&client).await?,
        client,
        exported,
    })
}

/// Records the rejects (whatever happens next, so they can be inspected)
/// and fails the run when there are more than `--max-rejects`.
async fn check_rejects(
    repo: &Client,
    opts: &RunOptions,
    exec: i64,
    merged: &mut read_all::Merged,
    summary: &mut RunSummary,
) -> Result<()> {
    jobs::record_rejects(repo, exec, &merged.rejected).await?;
    merged.rejected = Vec::new();
    let counts = &merged.counts;
    summary.rows_read = counts.rows_read;
    summary.lookback_rows = counts.lookback_rows;
    summary.rejected = RejectedCounts {
        unknown_video: counts.unknown_video,
        bad_position: counts.bad_position,
    };
    summary.max_disorder_s = merged.max_lag as f64 / 1e6;
    if let Some(limit) = opts.max_rejects {
        if counts.rejected() > limit {
            let summary_json = serde_json::to_value(&*summary).unwrap_or_default();
            let _ = jobs::record_counts(
                repo,
                exec,
                &summary::counts_of(summary, counts),
                &summary_json,
            )
            .await;
            return Err(Error::TooManyRejects {
                found: counts.rejected(),
                limit,
                execution: exec,
            });
        }
    }
    Ok(())
}

/// Counted plays on the settled days, and the exclusions they imply.
fn count_settled(
    summary: &mut RunSummary,
    merged: &read_all::Merged,
    first: Option<Day>,
    last: Option<Day>,
) {
    let mut counted: i64 = 0;
    for (_, cells) in merged
        .totals
        .days
        .iter()
        .filter(|(d, _)| first.is_some_and(|f| **d >= f.0) && last.is_some_and(|l| **d <= l.0))
    {
        cells.for_each(|_, c| counted += c.views);
    }
    summary.counted = counted as u64;
    summary.excluded = Excluded {
        self_play: merged.counts.self_play,
        rapid_replay: merged.counts.candidates - counted as u64,
    };
    summary.first_day = first.map(|d| d.to_string());
    summary.last_day = last.map(|d| d.to_string());
}

/// Final timings into the stored summary (the committed record already
/// has the counts).
async fn finish(repo: &Client, mut summary: RunSummary, t0: Instant) -> RunSummary {
    let written = std::mem::take(&mut summary.written);
    summary::finish_summary(&mut summary, written, t0);
    let summary_json = serde_json::to_value(&summary).unwrap_or_default();
    let _ = repo
        .execute(
            "UPDATE job_execution SET summary = $2 WHERE execution_id = $1",
            &[&summary.execution_id, &summary_json],
        )
        .await;
    summary
}

/// The memory account of the read, for the debug log: what is resident,
/// what the day totals hold, and the seeds and rejects kept for later.
fn log_after_read(merged: &read_all::Merged) {
    let seeds: usize = merged
        .edges
        .iter()
        .map(|e| e.head.capacity() + e.late.capacity())
        .sum();
    tracing::debug!(
        peak_rss_mib = peak_rss_bytes() >> 20,
        rss_now_mib = crate::sys::rss_now_bytes() >> 20,
        totals_mib = merged.totals.heap_bytes() >> 20,
        seeds,
        rejected = merged.rejected.capacity(),
        "after read"
    );
}
