//! Which days a run settles: the request, checked against the settled
//! history, widened where tiers or late plays demand it.

use tokio_postgres::Client;

use super::events::Note;
use crate::error::{DbContext, Error, Refusal, Result};
use crate::jobs::{ledger, Requested};
use crate::pipeline::partition::Scope;
use crate::rules::calendar::Day;
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
    pub notes: Vec<Note>,
}

/// Resolves the request once. `snap` is the run's snapshot; `repo` the job
/// repository.
pub(crate) async fn resolve(snap: &Client, repo: &Client, requested: &Requested) -> Result<Days> {
    let settled = ledger::settled_range(repo).await?;
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
                notes: Vec::new(),
            });
        }
        Requested::Days(a, b) => (a, b),
    };
    if a > b {
        return Err(Error::Refused(Refusal::Backwards { from: a, to: b }));
    }
    let mut days = Days {
        scope: Scope::default(),
        first: Some(a),
        last: Some(b),
        settled,
        restated_from: None,
        extended_to: None,
        notes: Vec::new(),
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
