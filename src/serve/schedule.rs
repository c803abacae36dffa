//! The in-process scheduler. Schedules live in the database
//! (`serve_schedule`): a cron expression (seconds optional) in a time zone,
//! and which day a fire settles (`day_offset` days before the fire's local
//! date; 1 = yesterday). Every fire since `last_fire_at` is due: all of them
//! in date order (catch-up `all`, since no day may be skipped) or only the
//! latest. A fire's day is settled through the engine, whose job identity
//! makes a day already COMPLETED a no-op, so nothing settles twice; the
//! run lock makes a second `serve` process wait its turn instead of firing
//! too. The clock is a trait so tests move time instead of sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio::sync::Notify;

use super::runs::{RunAsk, RunManager};
use super::store::{self, Schedule};
use crate::api::RunOutcome;
use crate::error::{Error, Result};
use crate::jobs::Requested;
use crate::rules::Day;

/// The scheduler's time source.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Woken when the time jumps (a test clock); `None` for real time.
    fn changed(&self) -> Option<Arc<Notify>> {
        None
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    notify: Arc<Notify>,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(now),
            notify: Arc::new(Notify::new()),
        }
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = now;
        self.notify.notify_one();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn changed(&self) -> Option<Arc<Notify>> {
        Some(self.notify.clone())
    }
}

/// Most fires one schedule is caught up by in one pass (over a year of
/// nightly fires); the rest follow on the next pass.
const MAX_DUE: usize = 400;

/// Parses a cron expression the way schedules are stored.
pub fn parse_cron(expr: &str) -> std::result::Result<Cron, String> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("bad cron expression {expr:?}: {e}"))
}

pub fn parse_tz(name: &str) -> std::result::Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("unknown time zone {name:?} (an IANA name such as Asia/Seoul)"))
}

/// The fires after `after` up to and including `now`, oldest first.
pub fn due_fires(
    s: &Schedule,
    now: DateTime<Utc>,
) -> std::result::Result<Vec<DateTime<Utc>>, String> {
    let cron = parse_cron(&s.cron)?;
    let tz = parse_tz(&s.timezone)?;
    let mut out = Vec::new();
    for t in cron.iter_after(s.last_fire_at.with_timezone(&tz)) {
        let t = t.with_timezone(&Utc);
        if t > now || out.len() >= MAX_DUE {
            break;
        }
        out.push(t);
    }
    if s.catch_up == "latest" && out.len() > 1 {
        out.drain(..out.len() - 1);
    }
    Ok(out)
}

pub fn next_fire(s: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse_cron(&s.cron).ok()?;
    let tz = parse_tz(&s.timezone).ok()?;
    let from = now.max(s.last_fire_at).with_timezone(&tz);
    cron.find_next_occurrence(&from, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The day a fire at `t` settles.
pub fn fire_day(s: &Schedule, t: DateTime<Utc>) -> Option<Day> {
    let tz = parse_tz(&s.timezone).ok()?;
    let local = t.with_timezone(&tz).date_naive();
    Some(Day(Day::from_date(local).0 - s.day_offset))
}

/// The scheduler of one server: ticks when a fire is due or the clock jumps.
pub struct Scheduler {
    pool: deadpool_postgres::Pool,
    runs: Arc<RunManager>,
    pub clock: Arc<dyn Clock>,
    alive: AtomicBool,
    ticks: std::sync::atomic::AtomicU64,
    /// The clock's time at the start of the last finished pass.
    last_pass: Mutex<Option<DateTime<Utc>>>,
    stop: Notify,
}

impl Scheduler {
    pub fn new(
        pool: deadpool_postgres::Pool,
        runs: Arc<RunManager>,
        clock: Arc<dyn Clock>,
    ) -> Scheduler {
        Scheduler {
            pool,
            runs,
            clock,
            alive: AtomicBool::new(false),
            ticks: Default::default(),
            last_pass: Mutex::new(None),
            stop: Notify::new(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Passes made so far (tests wait for one after moving the clock).
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    /// The clock's time the last finished pass looked at (tests wait for
    /// a pass at or after the time they set).
    pub fn last_pass(&self) -> Option<DateTime<Utc>> {
        *self.last_pass.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// The loop: a pass, then sleep until the next fire (at most 30 s, so
    /// edits and lost locks are picked up), the clock jumping, or stop.
    pub async fn run(self: Arc<Self>) {
        self.alive.store(true, Ordering::SeqCst);
        loop {
            let now = self.clock.now();
            let next = match self.tick(now).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("scheduler pass failed: {e}");
                    None
                }
            };
            *self.last_pass.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            self.ticks.fetch_add(1, Ordering::SeqCst);
            let wait = next
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::from_secs(30))
                .min(Duration::from_secs(30));
            let jumped = self.clock.changed();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = async { match &jumped { Some(n) => n.notified().await, None => std::future::pending().await } } => {}
                _ = self.stop.notified() => break,
            }
        }
        self.alive.store(false, Ordering::SeqCst);
    }

    /// One pass over the schedules at `now`; returns the next fire time.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let c = self
            .pool
            .get()
            .await
            .map_err(|e| Error::Tool(format!("no database connection: {e}")))?;
        let mut next: Option<DateTime<Utc>> = None;
        for s in store::list(&c).await? {
            if s.paused {
                continue;
            }
            let due = match due_fires(&s, now) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(schedule = s.name, "schedule skipped: {e}");
                    continue;
                }
            };
            self.fire_all(&c, &s, &due).await?;
            if let Some(t) = store::get(&c, s.schedule_id)
                .await?
                .and_then(|s| next_fire(&s, now))
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        Ok(next)
    }

    /// Settles the due fires' days in order, stopping at the first that
    /// does not succeed (it is tried again on the next pass).
    async fn fire_all(
        &self,
        c: &tokio_postgres::Client,
        s: &Schedule,
        due: &[DateTime<Utc>],
    ) -> Result<()> {
        let mut failures = s.consecutive_failures;
        for &t in due {
            let Some(day) = fire_day(s, t) else {
                return Ok(());
            };
            let ask = RunAsk::new(Requested::Days(day, day));
            match self.runs.run_to_end(&ask).await {
                Ok((id, outcome)) => {
                    let what = match outcome {
                        RunOutcome::Completed(_) => "completed",
                        RunOutcome::AlreadyCompleted { .. } => "already_completed",
                    };
                    tracing::info!(schedule = s.name, %day, execution = id, what, "scheduled fire");
                    store::record_fire(c, s.schedule_id, t, day, what, Some(id), None).await?;
                    store::advance(c, s.schedule_id, t).await?;
                    failures = 0;
                }
                Err(Error::Locked { holder }) => {
                    tracing::info!(schedule = s.name, %day, holder, "another run holds the settlement lock; trying again later");
                    store::record_fire(c, s.schedule_id, t, day, "locked", Some(holder), None)
                        .await?;
                    return Ok(());
                }
                Err(Error::Stopped) => {
                    // A shutdown or an operator stopped it: not the day's fault.
                    store::record_fire(c, s.schedule_id, t, day, "failed", None, Some("stopped"))
                        .await?;
                    return Ok(());
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(schedule = s.name, %day, failures, "scheduled fire failed: {e}");
                    store::record_fire(
                        c,
                        s.schedule_id,
                        t,
                        day,
                        "failed",
                        None,
                        Some(&e.to_string()),
                    )
                    .await?;
                    store::failed(c, s.schedule_id, failures, s.max_failures).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
