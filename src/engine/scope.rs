//! Which days a run settles: the request, checked against the settled
//! history, widened where tiers or late plays demand it.

use tokio_postgres::Client;

use super::events::Note;
use super::RunOptions;
use crate::error::{DbContext, Error, Refusal, Result};
use crate::jobs::changes::{self, InputChanges};
use crate::jobs::{ledger, Requested};
use crate::pipeline::partition::Scope;
use crate::rules::calendar::{pg_micros_to_utc, seoul_day_pg, utc_to_pg_micros, Day};
use crate::rules::REPLAY_WINDOW_MICROS;

/// The days a run reads and settles, and why they differ from the request.
#[derive(Debug)]
pub(crate) struct Days {
    pub scope: Scope,
    /// `None` for `--all`: then the data's own days, known after the read.
    pub first: Option<Day>,
    pub last: Option<Day>,
    /// The settled history before the run.
    pub settled: Option<(Day, Day)>,
    pub restated_from: Option<Day>,
    pub extended_to: Option<Day>,
    /// Changes to settled input since it was settled, which this run
    /// settles again.
    pub changes: InputChanges,
    pub notes: Vec<Note>,
}

/// Resolves the request once. `snap` is the run's snapshot; `repo` the job
/// repository.
pub(crate) async fn resolve(snap: &Client, repo: &Client, opts: &RunOptions) -> Result<Days> {
    let requested = &opts.requested;
    let settled = ledger::settled_range(repo).await?;
    let data = data_days(snap).await?;
    check_plausible(requested, data, settled, opts)?;
    // Read in the run's snapshot: what it sees is what it settles again
    // and, at publish, clears.
    let changes = changes::pending(snap, settled).await?;
    let mut notes = Vec::new();
    if !changes.is_empty() {
        notes.push(Note::InputChanged(changes.clone()));
    }
    let (a, b) = match *requested {
        Requested::All => {
            ledger::check_not_retired(repo, None).await?;
            return Ok(Days {
                scope: Scope::default(),
                first: None,
                last: None,
                settled,
                restated_from: None,
                extended_to: None,
                changes,
                notes,
            });
        }
        Requested::Days(a, b) => (a, b),
    };
    if !opts.allow_empty && !has_plays(snap, a, b).await? {
        return Err(Error::NothingToSettle { first: a, last: b });
    }
    let mut days = Days {
        scope: Scope::default(),
        first: Some(a),
        last: Some(b),
        settled,
        restated_from: None,
        extended_to: None,
        changes,
        notes,
    };
    let mut first = a;
    match settled {
        Some((lo, hi)) => {
            if a.0 > hi.0 + 1 {
                return Err(Error::Refused(Refusal::Gap {
                    first_unsettled: hi.next(),
                    last_unsettled: Day(a.0 - 1),
                    to: b,
                }));
            }
            if a > lo {
                // Plays written before the earliest settled day after it was
                // settled (a backfill) would be missing from every video's
                // tier history.
                ensure_no_plays_before(snap, lo).await?;
                let gaps = ledger::unsettled_days(repo, lo, Day(a.0 - 1)).await?;
                if let Some(&g) = gaps.first() {
                    return Err(Error::Refused(Refusal::Hole { day: g, to: b }));
                }
                // Plays of the day before, still running when it was
                // settled, may have been written since: then that day is
                // settled again with this one.
                let before = Day(a.0 - 1);
                if let Some(n) = ledger::tail_change(snap, repo, before).await? {
                    if n != 0 {
                        days.notes.push(Note::Restated {
                            day: before,
                            delta: n,
                        });
                        days.restated_from = Some(before);
                        first = before;
                    }
                }
            } else {
                ensure_no_plays_before(snap, a).await?;
            }
            // Settled input that changed since it was settled: settle again
            // from its earliest day (the later ones follow below).
            if let Some(e) = days.changes.earliest(settled).filter(|&e| e < first) {
                days.restated_from = Some(e);
                first = e;
            }
            if hi > b {
                days.last = Some(hi);
                days.extended_to = Some(hi);
                days.notes.push(Note::Extended { after: b, to: hi });
            }
        }
        None => ensure_no_plays_before(snap, a).await?,
    }
    ledger::check_not_retired(repo, Some(first)).await?;
    let last = days.last.expect("a day range");
    days.first = Some(first);
    days.scope = Scope {
        read_lo: Some(first.start_pg_micros() - REPLAY_WINDOW_MICROS),
        read_hi: Some(last.next().start_pg_micros()),
        count_lo: Some(first.start_pg_micros()),
    };
    Ok(days)
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
        return Err(Error::Refused(Refusal::UnsettledBefore { day }));
    }
    Ok(())
}

/// The first and last Seoul day with plays, exactly: the plays of the log's
/// first and last ids bound the search, which the started_at BRIN index
/// then keeps to the log's ends (a log in rough time order reads a few
/// block ranges at each end, not the whole table).
async fn data_days(snap: &Client) -> Result<Option<(Day, Day)>> {
    let r = snap
        .query_one(
            "WITH ends AS (SELECT (SELECT started_at FROM viewing_log WHERE started_at > '-infinity' AND started_at < 'infinity' ORDER BY id LIMIT 1) AS a, \
                                  (SELECT started_at FROM viewing_log WHERE started_at > '-infinity' AND started_at < 'infinity' ORDER BY id DESC LIMIT 1) AS b) \
             SELECT (SELECT min(started_at) FROM viewing_log, ends WHERE started_at <= ends.a), \
                    (SELECT max(started_at) FROM viewing_log, ends WHERE started_at >= ends.b \
                       AND started_at < 'infinity')",
            &[],
        )
        .await
        .db("finding the days the log holds")?;
    let day = |i: usize| {
        r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map(|t| seoul_day_pg(utc_to_pg_micros(t)))
    };
    Ok(day(0).zip(day(1)))
}

/// Days that can hold plays: those of the log and of the settled history,
/// up to the horizon after today. Anything else is a typing slip (year 1,
/// 2099) that would settle empty days and leave them settled.
fn check_plausible(
    requested: &Requested,
    data: Option<(Day, Day)>,
    settled: Option<(Day, Day)>,
    opts: &RunOptions,
) -> Result<()> {
    if data.is_none() && !opts.allow_empty {
        return Err(Error::Refused(Refusal::EmptyLog));
    }
    let Requested::Days(a, b) = *requested else {
        return Ok(());
    };
    let today = seoul_day_pg(utc_to_pg_micros(chrono::Utc::now()));
    let horizon = Day(today.0 + opts.horizon_days as i32);
    let lo = [data.map(|d| d.0), settled.map(|s| s.0)]
        .into_iter()
        .flatten()
        .min();
    let hi = [data.map(|d| d.1), settled.map(|s| s.1), Some(horizon)]
        .into_iter()
        .flatten()
        .max()
        .expect("the horizon");
    if lo.is_some_and(|lo| a < lo) || lo.is_none() || b > hi {
        return Err(Error::Refused(Refusal::OutsideData {
            from: a,
            to: b,
            data,
            settled,
            horizon,
        }));
    }
    Ok(())
}

/// Whether `first..=last` holds any play (through the started_at index).
async fn has_plays(snap: &Client, first: Day, last: Day) -> Result<bool> {
    Ok(snap
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM viewing_log WHERE started_at >= $1 AND started_at < $2)",
            &[
                &pg_micros_to_utc(first.start_pg_micros()),
                &pg_micros_to_utc(last.next().start_pg_micros()),
            ],
        )
        .await
        .db("looking for plays in the run's days")?
        .get(0))
}
