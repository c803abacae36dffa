//! `settle run`: one execution of the pipeline, recorded in the job
//! repository. partition → read (parallel binary COPY from one snapshot) →
//! aggregate → exact path → settle → rank → write, published atomically.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_postgres::{Client, Config};

use crate::aggregate::{Aggregator, Counts, PartitionOutput, Rejected, Scratch};
use crate::catalog::Catalog;
use crate::db::{self, Database};
use crate::error::{DbContext, Error, Result};
use crate::jobs::{self, Begin, ExecutionCounts, Requested, Status};
use crate::ledger;
use crate::partition::{self, Partition, Scope};
use crate::rank;
use crate::read::{copy_plays, open_reader, Play};
use crate::replay::{self, Edges, ExactPathStats};
use crate::rules::calendar::{seoul_day_pg, Day};
use crate::rules::REPLAY_WINDOW_MICROS;
use crate::settle;
use crate::totals::Totals;
use crate::write::{self, Publication, WriteStats};

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
    pub progress: bool,
    /// Test hook: sleep after each partition, so faults can be injected mid-run.
    pub pause_after_partition: Duration,
}

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
            progress: false,
            pause_after_partition: Duration::ZERO,
        }
    }
}

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
}

pub enum Outcome {
    Completed(Box<RunSummary>),
    AlreadyCompleted { execution_id: i64 },
}

enum Event {
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
}

/// Runs the settlement job. `stop` may be set at any time (Ctrl-C, `settle
/// stop`); the run then ends STOPPED without publishing.
pub async fn run(database: &Database, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<Outcome> {
    let mut repo = database.connect().await?;
    let locked: bool = repo
        .query_one("SELECT pg_try_advisory_lock($1)", &[&jobs::RUN_LOCK])
        .await
        .db("taking the settlement lock")?
        .get(0);
    if !locked {
        let holder = jobs::lock_holder(&repo).await?;
        return Err(Error::Locked { holder });
    }
    let outcome = run_locked(database, &mut repo, opts, stop).await;
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
) -> Result<Outcome> {
    let abandoned = jobs::abandon_dead(&*repo).await?;
    if !abandoned.is_empty() {
        // Said once, on stderr; a warn! as well had printed it twice.
        tracing::debug!(?abandoned, "marked executions of dead processes ABANDONED");
        eprintln!(
            "note: marked execution(s) {abandoned:?} ABANDONED: their process died while running"
        );
    }
    let exec = match jobs::begin(&*repo, &opts.requested, opts.force, opts.fresh).await? {
        Begin::AlreadyCompleted { execution_id } => {
            return Ok(Outcome::AlreadyCompleted { execution_id })
        }
        Begin::Started(e) => e,
    };

    // Stop requests arrive through the repository; poll on a side connection.
    let watcher = {
        let stop = stop.clone();
        let config = database.config().clone();
        let id = exec.id;
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
    };

    let result = execute(database, repo, opts, &exec, &stop).await;
    watcher.abort();
    match result {
        Ok(summary) => Ok(Outcome::Completed(Box::new(summary))),
        Err(e) => {
            let status = if matches!(e, Error::Stopped) {
                Status::Stopped
            } else {
                Status::Failed
            };
            // The repository connection may be the thing that died.
            let recorded =
                match jobs::finish_unpublished(&*repo, exec.id, status, &e.to_string(), None).await
                {
                    Ok(()) => Ok(()),
                    Err(_) => match database.connect().await {
                        Ok(c) => {
                            jobs::finish_unpublished(&c, exec.id, status, &e.to_string(), None)
                                .await
                        }
                        Err(e2) => Err(e2),
                    },
                };
            if let Err(e2) = recorded {
                tracing::error!(
                    "could not record the failure of execution {}: {e2}",
                    exec.id
                );
            }
            Err(e)
        }
    }
}

async fn execute(
    database: &Database,
    repo: &mut Client,
    opts: &RunOptions,
    exec: &jobs::Execution,
    stop: &Arc<AtomicBool>,
) -> Result<RunSummary> {
    let t0 = Instant::now();
    let mut summary = RunSummary {
        execution_id: exec.id,
        attempt: exec.attempt,
        restarted_from: exec.restart_of,
        requested: opts.requested.key(),
        workers: opts.workers.max(1),
        streams: opts.streams.max(1),
        ..Default::default()
    };

    // One snapshot for everything the run reads.
    let snap = database.connect().await?;
    snap.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .db("opening the run's snapshot")?;
    let snapshot: String = snap
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .db("exporting the run's snapshot")?
        .get(0);
    let seen = snap
        .query_one(
            "SELECT (SELECT max(id) FROM viewing_log), pg_current_snapshot()::text",
            &[],
        )
        .await
        .db("reading the run's snapshot bounds")?;
    jobs::record_snapshot(repo, exec.id, seen.get(0), seen.get::<_, &str>(1)).await?;
    let catalog = Arc::new(Catalog::load(&snap).await?);

    // Which days: the request, checked against the settled history.
    let settled = ledger::settled_range(&*repo).await?;
    let (scope, mut first, mut last) = match opts.requested {
        Requested::All => (Scope::default(), None, None),
        Requested::Days(a, b) => {
            let mut a = a;
            if a > b {
                return Err(Error::Usage(format!("--from {a} is after --to {b}")));
            }
            let mut last = b;
            match settled {
                Some((lo, hi)) => {
                    if a.0 > hi.0 + 1 {
                        return Err(Error::Refused(format!(
                            "days {} to {} are not settled yet, and tiers count every earlier day; settle them first: settle run --from {} --to {b}",
                            hi.next(),
                            Day(a.0 - 1),
                            hi.next()
                        )));
                    }
                    if a > lo {
                        // Plays written before the earliest settled day after
                        // it was settled (a backfill) would be missing from
                        // every video's tier history.
                        ensure_no_plays_before(&snap, lo).await?;
                        let gaps = ledger::unsettled_days(&*repo, lo, Day(a.0 - 1)).await?;
                        if let Some(g) = gaps.first() {
                            return Err(Error::Refused(format!(
                                "day {g} is not settled, and tiers count every earlier day; settle from there: settle run --from {g} --to {b}"
                            )));
                        }
                        // Plays of the day before, still running when it was
                        // settled, may have been written since: then that
                        // day is settled again with this one.
                        let before = Day(a.0 - 1);
                        if let Some(n) = ledger::tail_change(&snap, &*repo, before).await? {
                            if n != 0 {
                                eprintln!(
                                    "note: {before} has {} plays in its last hours than when it was settled (rows written after it was settled); re-settling it with this run",
                                    if n > 0 { format!("{n} more") } else { format!("{} fewer", -n) }
                                );
                                summary.restated_from = Some(before.to_string());
                                a = before;
                            }
                        }
                    } else {
                        ensure_no_plays_before(&snap, a).await?;
                    }
                    if hi > b {
                        last = hi;
                        summary.extended_to = Some(hi.to_string());
                    }
                }
                None => ensure_no_plays_before(&snap, a).await?,
            }
            let scope = Scope {
                read_lo: Some(a.start_pg_micros() - REPLAY_WINDOW_MICROS),
                read_hi: Some(last.next().start_pg_micros()),
                count_lo: Some(a.start_pg_micros()),
            };
            (scope, Some(a), Some(last))
        }
    };
    if let Some(to) = &summary.extended_to {
        eprintln!(
            "note: days after {} up to {to} are already settled; re-settling them too, because tiers carry forward",
            match opts.requested {
                Requested::Days(_, b) => b.to_string(),
                Requested::All => String::new(),
            }
        );
    }

    // The partition plan: a failed execution's own, or a new one.
    let mut kept: Vec<(PartitionOutput, i64)> = Vec::new();
    // Kept results hold only the rows of the range they were read for: if
    // this run's effective range differs (another run settled later days
    // meanwhile, so tiers now carry further), none of them can be reused.
    let restart_of = match exec.restart_of {
        Some(prev) if jobs::effective_range(repo, prev).await? != (first, last) => {
            eprintln!(
                "note: execution {prev} read other days than this run must ({}); reading every partition again",
                match (first, last) {
                    (Some(a), Some(b)) => format!("{a} to {b}"),
                    _ => "all days".into(),
                }
            );
            None
        }
        other => other,
    };
    let plan: Vec<Partition> = match restart_of {
        Some(prev) => {
            let prev_plan = jobs::previous_plan(repo, prev).await?;
            let mut plan = Vec::new();
            for (p, result) in prev_plan {
                if let Some(r) = result {
                    kept.push(r);
                }
                plan.push(p);
            }
            if plan.is_empty() {
                new_plan(&snap, &scope, opts, catalog.len()).await?
            } else {
                reconcile_plan(&snap, &scope, prev, &mut plan, &mut kept).await?;
                plan
            }
        }
        None => new_plan(&snap, &scope, opts, catalog.len()).await?,
    };
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

    // Read and aggregate.
    let t_read = Instant::now();
    tracing::debug!(rss_now_mib = rss_now_bytes() >> 20, "before read");
    let mut totals = Totals::new(&catalog);
    let mut counts = Counts::default();
    let mut edges: Vec<Edges> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut max_lag = 0i64;
    let mut day_lo: Option<i32> = None;
    let mut day_hi: Option<i32> = None;
    let mut plan_lo: Vec<i64> = plan.iter().map(|p| p.id_lo).collect();
    plan_lo.sort_unstable();
    // Reused results carry no tail counts: then none are recorded.
    let mut tails = kept.is_empty().then(|| ledger::DayTails {
        allowance: opts.disorder_minutes as i64 * 60 * 1_000_000,
        rows: std::collections::HashMap::new(),
    });
    let mut absorb = |out: PartitionOutput, totals: &mut Totals| {
        if let Some(t) = tails.as_mut() {
            for &(d, n) in &out.tails {
                *t.rows.entry(d).or_default() += n;
            }
        }
        totals.merge(&out, &catalog);
        counts.merge(&out.counts);
        max_lag = max_lag.max(out.max_lag);
        day_lo = min_opt(day_lo, out.day_lo);
        day_hi = max_opt(day_hi, out.day_hi);
        rejected.extend_from_slice(&out.rejected);
        edges.push(Edges {
            partition: out.partition.expect("partition outputs know their range"),
            ts_lo: out.ts_lo,
            ts_hi: out.ts_hi,
            head: out.head,
            late: out.late,
            allowance: out.allowance,
        });
        replay::prune_heads(&mut edges, &plan_lo);
    };
    for (out, from) in kept {
        jobs::partition_completed(repo, exec.id, &out, 0, 0, Some(from)).await?;
        summary.partition_timings.push(PartitionTiming {
            no: out.partition.map(|p| p.no).unwrap_or(0),
            rows: out.counts.rows_read,
            seconds: 0.0,
            attempts: 0,
            reused: true,
        });
        absorb(out, &mut totals);
    }

    let rows_seen = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(opts.progress, &todo, &scope);
    let (tx, mut rx) = unbounded_channel::<Event>();
    let pool = {
        let queue = crossbeam_channel::unbounded::<Partition>();
        for p in &todo {
            queue.0.send(*p).expect("queue open");
        }
        drop(queue.0);
        let config = database.config().clone();
        let catalog = catalog.clone();
        let workers = summary.workers.min(todo.len().max(1));
        let allowance = opts.disorder_minutes as i64 * 60 * 1_000_000;
        let mut handles = Vec::new();
        for _ in 0..workers {
            let ctx = WorkerCtx {
                config: config.clone(),
                snapshot: snapshot.clone(),
                scope,
                catalog: catalog.clone(),
                allowance,
                queue: queue.1.clone(),
                events: tx.clone(),
                stop: stop.clone(),
                rows: rows_seen.clone(),
                attempts: opts.attempts.max(1),
                pause: opts.pause_after_partition,
                streams: opts.streams.max(1),
            };
            handles.push(std::thread::spawn(move || worker(ctx)));
        }
        handles
    };
    drop(tx);

    let mut failure: Option<Error> = None;
    let mut stopped = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let recorded = match ev {
                    Event::Started { no, attempt } => {
                        jobs::partition_running(repo, exec.id, no, attempt).await
                    }
                    Event::Done { out, seconds, attempt } => {
                        let p = out.partition.expect("range");
                        let r = jobs::partition_completed(repo, exec.id, &out, (seconds * 1000.0) as i64, attempt, None).await;
                        summary.partition_timings.push(PartitionTiming {
                            no: p.no,
                            rows: out.counts.rows_read,
                            seconds,
                            attempts: attempt,
                            reused: false,
                        });
                        absorb(*out, &mut totals);
                        r
                    }
                    Event::Failed { no, attempt, error } => {
                        stop.store(true, Ordering::SeqCst);
                        let r = jobs::partition_failed(repo, exec.id, no, "FAILED", attempt, &error.to_string()).await;
                        failure.get_or_insert(error);
                        r
                    }
                    Event::Stopped { no } => {
                        stopped = true;
                        jobs::partition_failed(repo, exec.id, no, "STOPPED", 0, "stopped on request").await
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
                bar.set_position(rows_seen.load(Ordering::Relaxed));
            }
        }
    }
    for h in pool {
        let _ = h.join();
    }
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    if stopped || stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    summary.phases.read_aggregate_s = t_read.elapsed().as_secs_f64();
    tracing::debug!(peak_rss_mib = peak_rss_bytes() >> 20, "after read");

    // Rejects are recorded whatever happens next, so they can be inspected.
    jobs::record_rejects(repo, exec.id, &rejected).await?;
    drop(rejected);
    summary.rows_read = counts.rows_read;
    summary.lookback_rows = counts.lookback_rows;
    summary.rejected = RejectedCounts {
        unknown_video: counts.unknown_video,
        bad_position: counts.bad_position,
    };
    summary.max_disorder_s = max_lag as f64 / 1e6;
    if let Some(limit) = opts.max_rejects {
        if counts.rejected() > limit {
            let summary_json = serde_json::to_value(&summary).unwrap_or_default();
            let _ =
                jobs::record_counts(repo, exec.id, &counts_of(&summary, &counts), &summary_json)
                    .await;
            return Err(Error::TooManyRejects {
                found: counts.rejected(),
                limit,
                execution: exec.id,
            });
        }
    }

    // The exact path, still inside the snapshot.
    let t_exact = Instant::now();
    summary.exact_path = replay::resolve(&snap, &mut edges, &catalog, &scope, &mut totals).await?;
    drop(edges);
    snap.batch_execute("COMMIT")
        .await
        .db("closing the run's snapshot")?;
    summary.phases.exact_path_s = t_exact.elapsed().as_secs_f64();
    tracing::debug!(peak_rss_mib = peak_rss_bytes() >> 20, "after exact path");

    // Settle and rank.
    let t_settle = Instant::now();
    if matches!(opts.requested, Requested::All) {
        first = min_opt(day_lo, settled.map(|s| s.0 .0)).map(Day);
        last = max_opt(day_hi, settled.map(|s| s.1 .0)).map(Day);
    }
    let mut counted: i64 = 0;
    for (_, cells) in totals
        .days
        .iter()
        .filter(|(d, _)| first.is_some_and(|f| **d >= f.0) && last.is_some_and(|l| **d <= l.0))
    {
        cells.for_each(|_, c| counted += c.views);
    }
    summary.counted = counted as u64;
    summary.excluded = Excluded {
        self_play: counts.self_play,
        rapid_replay: counts.candidates - counted as u64,
    };
    summary.first_day = first.map(|d| d.to_string());
    summary.last_day = last.map(|d| d.to_string());
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }

    let mut written = WriteStats::default();
    if let (Some(first), Some(last)) = (first, last) {
        let prior = ledger::prior(&*repo, first).await?;
        tracing::debug!(
            secs = t_settle.elapsed().as_secs_f64(),
            "settle: tier history read"
        );
        let day_rows = settle::price_days(&totals, first, last, &catalog, &prior);
        drop(totals);
        let periods = settle::touched_periods(first, last);
        // Only weeks and months partly outside the run need stored rows.
        let partial: Vec<_> = periods
            .iter()
            .copied()
            .filter(|p| {
                // Stored rows exist only on settled days outside the run.
                settled.is_some_and(|(lo, hi)| {
                    (p.start < first && lo < first && hi >= p.start)
                        || (p.last_day() > last && hi > last && lo <= p.last_day())
                })
            })
            .collect();
        let partial: Vec<_> = partial
            .into_iter()
            .map(|p| (p, settle::Rebase::choose(p, first, last)))
            .collect();
        let mut stored_days: Vec<Day> = partial
            .iter()
            .flat_map(|&(p, how)| how.days(p, first, last))
            .collect();
        stored_days.sort_unstable();
        stored_days.dedup();
        let stored_periods: Vec<_> = partial
            .iter()
            .filter(|(_, how)| *how == settle::Rebase::Stored)
            .map(|&(p, _)| p)
            .collect();
        let (old_days, old_periods) =
            ledger::stored_video_rows(&*repo, &stored_days, &stored_periods).await?;
        tracing::debug!(
            secs = t_settle.elapsed().as_secs_f64(),
            days = stored_days.len(),
            "settle: stored rows read"
        );
        let mut video_rows = settle::roll_up(
            &day_rows,
            &old_days,
            &old_periods,
            &periods,
            &partial,
            (first, last),
        );
        video_rows.extend(day_rows);
        tracing::debug!(secs = t_settle.elapsed().as_secs_f64(), "settle: rolled up");
        let (creator_rows, unattributed) = settle::creators(&video_rows, &catalog);
        if unattributed > 0 {
            eprintln!("warning: {unattributed} stored rows belong to videos no longer in `videos`; they are not in any creator's sums");
        }
        let top = rank::rank(&video_rows);
        summary.phases.settle_s = t_settle.elapsed().as_secs_f64();
        tracing::debug!(peak_rss_mib = peak_rss_bytes() >> 20, "after settle");
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }

        // Write and publish in one transaction, with the job record.
        let t_write = Instant::now();
        let tx = repo
            .transaction()
            .await
            .db("starting the publish transaction")?;
        written = write::publish(
            &tx,
            Publication {
                first,
                last,
                periods: &periods,
                video: video_rows,
                creator: creator_rows,
                top: &top,
            },
        )
        .await?;
        summary.phases.write_s = t_write.elapsed().as_secs_f64();
        tracing::debug!(peak_rss_mib = peak_rss_bytes() >> 20, "after write");
        let t_pub = Instant::now();
        ledger::mark_settled(&tx, first, last, exec.id, tails.as_ref()).await?;
        finish_summary(&mut summary, written, t0);
        let summary_json = serde_json::to_value(&summary).unwrap_or_default();
        jobs::record_counts(&tx, exec.id, &counts_of(&summary, &counts), &summary_json).await?;
        jobs::complete(&tx, exec.id).await?;
        tx.commit().await.db("publishing the results")?;
        summary.phases.publish_s = t_pub.elapsed().as_secs_f64();
    } else {
        summary.phases.settle_s = t_settle.elapsed().as_secs_f64();
        finish_summary(&mut summary, written, t0);
        let summary_json = serde_json::to_value(&summary).unwrap_or_default();
        jobs::record_counts(
            &*repo,
            exec.id,
            &counts_of(&summary, &counts),
            &summary_json,
        )
        .await?;
        jobs::complete(&*repo, exec.id).await?;
    }
    finish_summary(&mut summary, written, t0);
    let summary_json = serde_json::to_value(&summary).unwrap_or_default();
    // Final timings (the committed record already has the counts).
    let _ = repo
        .execute(
            "UPDATE job_execution SET summary = $2 WHERE execution_id = $1",
            &[&exec.id, &summary_json],
        )
        .await;
    Ok(summary)
}

fn finish_summary(summary: &mut RunSummary, written: WriteStats, t0: Instant) {
    summary.written = written;
    summary.phases.total_s = t0.elapsed().as_secs_f64();
    summary.rows_per_s = if summary.phases.total_s > 0.0 {
        summary.rows_read as f64 / summary.phases.total_s
    } else {
        0.0
    };
    summary.peak_rss_bytes = peak_rss_bytes();
}

fn counts_of(s: &RunSummary, c: &Counts) -> ExecutionCounts {
    ExecutionCounts {
        rows_read: c.rows_read as i64,
        counted: s.counted as i64,
        excluded_self_play: c.self_play as i64,
        excluded_rapid_replay: s.excluded.rapid_replay as i64,
        rejected_unknown_video: c.unknown_video as i64,
        rejected_bad_position: c.bad_position as i64,
    }
}

fn min_opt(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Peak resident memory of this process (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// The resident set now, for tracing where memory goes.
pub fn rss_now_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}

/// A first run must start at the first day of the data: tiers count a
/// video's whole history.
async fn ensure_no_plays_before(snap: &Client, day: Day) -> Result<()> {
    let earlier: bool = snap
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM viewing_log WHERE started_at < $1)",
            &[&crate::rules::calendar::pg_micros_to_utc(
                day.start_pg_micros(),
            )],
        )
        .await
        .db("checking for plays before the run")?
        .get(0);
    if earlier {
        return Err(Error::Refused(format!(
            "viewing_log has plays before {day} that are not settled, and tiers count a video's whole history; settle from the first day of the data (settle run --all, or --from that day)"
        )));
    }
    Ok(())
}

/// Fits a failed execution's plan to the log as this run's snapshot sees it.
/// Rows may have been added or removed since that execution read: a
/// finished partition whose row count changed is read again rather than
/// reused, and ids outside the old plan get partitions of their own, so the
/// continuation reads every row of its snapshot exactly once. (Equal counts
/// after a delete and an insert in the same id range would go unnoticed; an
/// append-only log with increasing ids never does that.)
async fn reconcile_plan(
    snap: &Client,
    scope: &Scope,
    prev: i64,
    plan: &mut Vec<Partition>,
    kept: &mut Vec<(PartitionOutput, i64)>,
) -> Result<()> {
    let cond = scope.sql_condition();
    let cond_and = |prefix: &str| {
        if cond.is_empty() {
            String::new()
        } else {
            format!("{prefix} {cond}")
        }
    };
    let parts: Vec<(Partition, i64)> = kept
        .iter()
        .filter_map(|(o, by)| o.partition.map(|p| (p, *by)))
        .collect();
    let nos: Vec<i64> = parts.iter().map(|(p, _)| p.no as i64).collect();
    let los: Vec<i64> = parts.iter().map(|(p, _)| p.id_lo).collect();
    let his: Vec<i64> = parts.iter().map(|(p, _)| p.id_hi).collect();
    let readers: Vec<i64> = parts.iter().map(|(_, by)| *by).collect();
    // A kept partition is read again when its row count changed, or when a
    // row of it was written (inserted, or updated in place as when a
    // rejected row is corrected) by a transaction its reading snapshot could
    // not see. The cheap age test passes only rows written at or after that
    // snapshot's xmin; for those, the row's 32-bit xmin is widened to an
    // xid8 (same epoch as the current next xid, or the one before) and
    // checked against the snapshot itself, so transactions that merely ran
    // beside it (in any database of the cluster) do not count.
    let sql = format!(
        "WITH cur AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS nx) \
         SELECT k.no, c.n, c.newer FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS k(no, lo, hi, by) \
         LEFT JOIN job_execution e ON e.execution_id = k.by \
         CROSS JOIN cur \
         CROSS JOIN LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE e.snapshot IS NULL OR ( \
                 age(v.xmin) <= age((pg_snapshot_xmin(e.snapshot::pg_snapshot)::text::int8 % 4294967296)::text::xid) \
                 AND NOT pg_visible_in_snapshot( \
                     (((cur.nx >> 32) << 32) + v.xmin::text::int8 \
                      - CASE WHEN v.xmin::text::int8 > cur.nx % 4294967296 THEN 4294967296 ELSE 0 END)::text::xid8, \
                     e.snapshot::pg_snapshot))) AS newer \
             FROM viewing_log v WHERE v.id BETWEEN k.lo AND k.hi {}) c",
        cond_and("AND")
    );
    let now: std::collections::HashMap<u32, (u64, i64)> = snap
        .query(&sql, &[&nos, &los, &his, &readers])
        .await
        .db("checking the finished partitions of the failed execution")?
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u32,
                (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2)),
            )
        })
        .collect();
    let before = kept.len();
    kept.retain(|(o, _)| {
        o.partition
            .is_some_and(|p| now.get(&p.no) == Some(&(o.counts.rows_read, 0)))
    });
    let changed = before - kept.len();

    let sql = format!(
        "SELECT min(id), max(id) FROM viewing_log {}",
        cond_and("WHERE")
    );
    let r = snap
        .query_one(&sql, &[])
        .await
        .db("finding the rows added since the failed execution")?;
    let (lo, hi): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
    let plan_lo = plan
        .iter()
        .map(|p| p.id_lo)
        .min()
        .expect("a non-empty plan");
    let plan_hi = plan
        .iter()
        .map(|p| p.id_hi)
        .max()
        .expect("a non-empty plan");
    // New ranges get partitions about as wide as the old ones.
    let width = (plan_hi as i128 - plan_lo as i128 + 1) / plan.len() as i128;
    let mut next_no = plan.iter().map(|p| p.no).max().expect("a non-empty plan") + 1;
    let mut added = 0;
    let mut add = |a: i64, b: i64, plan: &mut Vec<Partition>| {
        let n = ((b as i128 - a as i128 + 1) / width.max(1)).clamp(1, 4096) as u32;
        for mut p in partition::split(a, b, n) {
            p.no = next_no;
            next_no += 1;
            added += 1;
            plan.push(p);
        }
    };
    if let Some(lo) = lo.filter(|&lo| lo < plan_lo) {
        add(lo, plan_lo - 1, plan);
    }
    if let Some(hi) = hi.filter(|&hi| hi > plan_hi) {
        add(plan_hi + 1, hi, plan);
    }
    if changed > 0 || added > 0 {
        eprintln!(
            "note: viewing_log changed since execution {prev} read it: {changed} of its finished partitions hold other rows now and are read again, and {added} new partitions cover ids outside its plan"
        );
    }
    Ok(())
}

/// A date range the planner expects to hold at least this share of the log
/// is split between the log's first and last id rather than its own.
const WIDE_RANGE_SHARE: f64 = 0.5;

/// The planner's row estimate for `viewing_log` rows matching `filter`
/// (from the statistics of the last ANALYZE; nothing is read).
async fn planned_rows(snap: &Client, filter: &str) -> Result<f64> {
    let plan: serde_json::Value = snap
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM viewing_log {filter}"),
            &[],
        )
        .await
        .db("estimating the rows to read")?
        .get(0);
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0))
}

async fn new_plan(
    snap: &Client,
    scope: &Scope,
    opts: &RunOptions,
    videos: usize,
) -> Result<Vec<Partition>> {
    let (lo, hi, estimate): (Option<i64>, Option<i64>, i64) = if scope.read_lo.is_none() {
        // A date range excludes them by itself; every row of --all needs a
        // Seoul day, and an infinite started_at has none.
        let infinite = snap
            .query_opt(
                "SELECT id, started_at::text FROM viewing_log WHERE started_at IN ('infinity', '-infinity') LIMIT 1",
                &[],
            )
            .await
            .db("checking viewing_log for infinite started_at")?;
        if let Some(r) = infinite {
            return Err(Error::Refused(format!(
                "viewing_log row {} has started_at = {}, which falls on no Seoul day; correct or delete that row, then run again",
                r.get::<_, i64>(0),
                r.get::<_, String>(1)
            )));
        }
        let r = snap
            .query_one(
                "SELECT min(id), max(id), (SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'viewing_log'::regclass) FROM viewing_log",
                &[],
            )
            .await
            .db("planning partitions")?;
        let (lo, hi): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
        let est: i64 = r.get(2);
        let span = lo
            .zip(hi)
            .map(|(a, b)| (b as i128 - a as i128 + 1).min(i64::MAX as i128) as i64)
            .unwrap_or(0);
        (lo, hi, if est > 0 { est.min(span.max(1)) } else { span })
    } else {
        let cond = scope.sql_condition();
        let (in_range, in_table) = (
            planned_rows(snap, &format!("WHERE {cond}")).await?,
            planned_rows(snap, "").await?,
        );
        if in_table > 0.0 && in_range >= WIDE_RANGE_SHARE * in_table {
            // Most of the log: its own bounds would cost a pass over all of
            // its rows before the read (19 s for 30 of 31 days at 100M).
            // The log's ends cover it; the reads filter by started_at.
            let r = snap
                .query_one("SELECT min(id), max(id) FROM viewing_log", &[])
                .await
                .db("planning partitions")?;
            (r.get(0), r.get(1), in_range as i64)
        } else {
            // Exact bounds, through the started_at index: a pass over the
            // range's rows only (0.5 s for one day at 100M).
            let sql = format!("SELECT min(id), max(id), count(*) FROM viewing_log WHERE {cond}");
            let r = snap.query_one(&sql, &[]).await.db("planning partitions")?;
            (r.get(0), r.get(1), r.get(2))
        }
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    let n = match opts.partitions {
        Some(n) => n,
        None => {
            let days = span_days(snap, scope).await?;
            let day_bytes = (videos * std::mem::size_of::<crate::aggregate::Cell>()) as u64;
            partition::default_count(
                estimate.max(0) as u64,
                opts.workers * opts.streams.max(1),
                days,
                day_bytes,
            )
        }
    };
    let bounds = partition::leaf_bounds(snap).await?;
    Ok(partition::split_aligned(lo, hi, n, &bounds))
}

/// How many Seoul days the read spans, for sizing partitions: the scope's,
/// or for `--all` the days from the log's first id's play to its last's
/// (two primary-key probes; plays out of id order stretch it by hours only).
async fn span_days(snap: &Client, scope: &Scope) -> Result<u64> {
    let (lo, hi) = match (scope.read_lo, scope.read_hi) {
        (Some(lo), Some(hi)) => (lo, hi.saturating_sub(1).max(lo)),
        _ => {
            let r = snap
                .query_one(
                    "SELECT (SELECT started_at FROM viewing_log ORDER BY id LIMIT 1), \
                            (SELECT started_at FROM viewing_log ORDER BY id DESC LIMIT 1)",
                    &[],
                )
                .await
                .db("finding the days the log spans")?;
            let t = |i| {
                r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
                    .map(crate::rules::calendar::utc_to_pg_micros)
                    .unwrap_or(0)
            };
            let (a, b) = (t(0), t(1));
            (a.min(b), a.max(b))
        }
    };
    let (a, b) = (seoul_day_pg(lo), seoul_day_pg(hi));
    Ok((b.0 - a.0) as u64 + 1)
}

fn progress_bar(show: bool, todo: &[Partition], _scope: &Scope) -> indicatif::ProgressBar {
    if !show || todo.is_empty() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} reading viewing_log: {human_pos} rows ({per_sec}) {elapsed}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct WorkerCtx {
    config: Config,
    snapshot: String,
    scope: Scope,
    catalog: Arc<Catalog>,
    allowance: i64,
    queue: crossbeam_channel::Receiver<Partition>,
    events: UnboundedSender<Event>,
    stop: Arc<AtomicBool>,
    rows: Arc<AtomicU64>,
    attempts: u32,
    pause: Duration,
    streams: usize,
}

/// One reader thread: its own connection in the run's snapshot, streaming
/// partitions from the queue until it is empty.
fn worker(ctx: WorkerCtx) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ctx.events.send(Event::Failed {
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
            let _ = ctx.events.send(Event::Stopped { no: p.no });
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = ctx.events.send(Event::Started { no: p.no, attempt });
            let started = Instant::now();
            match read_partition(ctx, &mut client, &mut scratch, &p).await {
                Ok(out) => {
                    let _ = ctx.events.send(Event::Done {
                        out: Box::new(out),
                        seconds: started.elapsed().as_secs_f64(),
                        attempt,
                    });
                    break;
                }
                Err(Error::Stopped) => {
                    let _ = ctx.events.send(Event::Stopped { no: p.no });
                    break;
                }
                Err(e) if is_transient(&e) && attempt < ctx.attempts => {
                    client = None;
                    let backoff = backoff(attempt);
                    tracing::warn!(
                        partition = p.no,
                        attempt,
                        "transient error, retrying in {backoff:?}: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    let _ = ctx.events.send(Event::Failed {
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
    let mut agg = Aggregator::with_scratch(
        &ctx.catalog,
        ctx.scope,
        ctx.allowance,
        scratch.take().unwrap_or_default(),
    );
    let query = partition::partition_query(p, &ctx.scope);
    let mut pending = 0u64;
    let rows = &ctx.rows;
    let stop = &ctx.stop;
    let mut batch: Vec<Play> = Vec::with_capacity(BATCH);
    copy_plays(
        c,
        &query,
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
            if stop.load(Ordering::Relaxed) {
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

/// Rows decoded before the aggregator takes them, so it can prefetch.
const BATCH: usize = 32;

/// Errors worth another attempt: the connection or server went away for a
/// while, or the server asked us to retry.
pub fn is_transient(e: &Error) -> bool {
    use tokio_postgres::error::SqlState;
    let Error::Db { source, .. } = e else {
        return false;
    };
    match source.code() {
        None => true, // I/O: connection reset or closed
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_DOES_NOT_EXIST,
        ]
        .contains(code),
    }
}

/// Exponential backoff with jitter: 100 ms, 200 ms, 400 ms ... (capped at
/// 5 s), each scaled by a random factor in [0.5, 1.5).
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.5 + (nanos % 1000) as f64 / 1000.0;
    Duration::from_millis((base as f64 * jitter) as u64)
}
