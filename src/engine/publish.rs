//! After the read: price the run's days against the tier history, roll them
//! up into weeks, months and creators, rank, and publish everything with
//! the job record in one transaction.

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use super::events::{Event, Note, Observer, Phase};
use super::summary::{counts_of, finish_summary, PublishMethod, RunSummary};
use crate::error::{DbContext, Result};
use crate::jobs::{self, changes, ledger};
use crate::pipeline::aggregate::Counts;
use crate::pipeline::catalog::Catalog;
use crate::pipeline::price::{self, PeriodRows};
use crate::pipeline::publish::{self, Publication, WriteStats};
use crate::pipeline::settle::{self, Stored};
use crate::pipeline::swap::{self, PublishMode};
use crate::pipeline::top::TopRow;
use crate::pipeline::totals::Totals;
use crate::rules::calendar::{Day, Period};

/// The run's result rows, ready to publish.
pub(crate) struct Priced {
    pub periods: Vec<Period>,
    pub video: PeriodRows,
    pub creator: PeriodRows,
    pub top: Vec<TopRow>,
    pub notes: Vec<Note>,
}

/// What pricing needs from the stored results: the tier history before the
/// run, and the stored rows of the weeks and months it shares with settled
/// days outside it. It depends only on the run's days and the ledger (which
/// the run lock keeps still), so a run whose days are known before the read
/// fetches it while the readers work.
pub(crate) struct History {
    first: Day,
    last: Day,
    prior: price::Prior,
    periods: Vec<Period>,
    partial: Vec<(Period, price::Rebase)>,
    old_days: PeriodRows,
    old_periods: PeriodRows,
}

/// Reads the stored history that pricing `first..=last` needs.
pub(crate) async fn history(
    repo: &Client,
    (first, last): (Day, Day),
    settled: Option<(Day, Day)>,
) -> Result<History> {
    let t = Instant::now();
    let prior = ledger::prior(repo, first).await?;
    tracing::debug!(
        secs = t.elapsed().as_secs_f64(),
        "settle: tier history read"
    );
    let periods = price::touched_periods(first, last);
    // Only weeks and months partly outside the run need stored rows, and
    // stored rows exist only on settled days outside the run.
    let partial: Vec<_> = periods
        .iter()
        .copied()
        .filter(|p| {
            settled.is_some_and(|(lo, hi)| {
                (p.start < first && lo < first && hi >= p.start)
                    || (p.last_day() > last && hi > last && lo <= p.last_day())
            })
        })
        .map(|p| (p, price::Rebase::choose(p, first, last)))
        .collect();
    let mut stored_days: Vec<Day> = partial
        .iter()
        .flat_map(|&(p, how)| how.days(p, first, last))
        .collect();
    stored_days.sort_unstable();
    stored_days.dedup();
    let stored_periods: Vec<_> = partial
        .iter()
        .filter(|(_, how)| *how == price::Rebase::Stored)
        .map(|&(p, _)| p)
        .collect();
    let (old_days, old_periods) =
        ledger::stored_video_rows(repo, &stored_days, &stored_periods).await?;
    tracing::debug!(
        secs = t.elapsed().as_secs_f64(),
        days = stored_days.len(),
        "settle: stored rows read"
    );
    Ok(History {
        first,
        last,
        prior,
        periods,
        partial,
        old_days,
        old_periods,
    })
}

impl History {
    fn stored(&self) -> Stored<'_> {
        Stored {
            prior: &self.prior,
            partial: &self.partial,
            old_days: &self.old_days,
            old_periods: &self.old_periods,
        }
    }
}

/// Prices the run's days from the merged totals and the stored history,
/// and rolls the days up into every week and month they touch, all held
/// (for the difference publish, which compares them with the stored rows).
pub(crate) fn price(totals: Totals, h: History, catalog: &Catalog) -> Priced {
    let (mut video, mut creator, mut top) = (PeriodRows::new(), PeriodRows::new(), Vec::new());
    let unattributed = settle::settle(totals, (h.first, h.last), &h.stored(), catalog, |b| {
        video.insert(b.period, b.video.into_iter().collect());
        creator.insert(b.period, b.creator.into_iter().collect());
        top.extend(b.top);
        true
    });
    Priced {
        periods: h.periods,
        video,
        creator,
        top,
        notes: unattributed_note(unattributed),
    }
}

fn unattributed_note(rows: u64) -> Vec<Note> {
    if rows > 0 {
        vec![Note::Unattributed { rows }]
    } else {
        Vec::new()
    }
}

/// The run's video rows of days: what the publish choice goes by.
fn day_rows(totals: &Totals) -> u64 {
    let mut n = 0;
    for cells in totals.days.values() {
        cells.for_each(|_, c| n += u64::from(c.views != 0));
    }
    n
}

/// What the publish transaction records besides the rows.
pub(crate) struct Record<'a> {
    pub exec: i64,
    pub tails: Option<&'a ledger::DayTails>,
    pub counts: &'a Counts,
    /// The run's snapshot (`pg_current_snapshot()` as text): the input
    /// changes it saw are settled by this publish.
    pub seen: &'a str,
    pub t0: Instant,
}

/// How to publish: the mode asked for, and a test hook.
pub(crate) struct How<'a> {
    /// Where the staging connections of a swap connect (the primary).
    pub config: &'a tokio_postgres::Config,
    pub mode: PublishMode,
    /// Test hook: sleep with the tables staged, before the swap.
    pub pause_before_swap: std::time::Duration,
}

/// Settles the run and publishes it: writes the rows, marks the days
/// settled and completes the execution, all in one transaction, so readers
/// see the old results or the new, never a mix. A big run settles while
/// it stages whole new tables, in parallel and outside that transaction,
/// which then only swaps them in; a small one is settled whole and its
/// difference written. Returns the notes settling made.
pub(crate) async fn settle_and_publish(
    repo: &mut Client,
    (totals, h): (Totals, History),
    catalog: &Arc<Catalog>,
    rec: Record<'_>,
    how: How<'_>,
    summary: &mut RunSummary,
    obs: &dyn Observer,
) -> Result<Vec<Note>> {
    let (first, last) = (h.first, h.last);
    let bounds = publish::bounds(first, last, &h.periods);
    swap::drop_leftovers(repo).await?;
    let choice = swap::choose(repo, how.mode, day_rows(&totals), &bounds).await?;
    tracing::debug!(swap = choice.swap, why = %choice.why, "publish chosen");
    summary.publish_method = Some(PublishMethod {
        method: if choice.swap { "swap" } else { "diff" },
        why: choice.why,
    });
    if choice.swap {
        // Settling happens inside the write phase here: it feeds the COPYs.
        obs.event(&Event::Phase(Phase::Write));
        let t_write = Instant::now();
        let catalog = Arc::clone(catalog);
        let (written, unattributed) = swap::stage(how.config, &bounds, move |feeds| {
            settle::settle(totals, (first, last), &h.stored(), &catalog, |b| {
                feeds.send(b)
            })
        })
        .await?;
        summary.phases.write_s = t_write.elapsed().as_secs_f64();
        tracing::debug!(
            peak_rss_mib = crate::sys::peak_rss_bytes() >> 20,
            "after staging"
        );
        if !how.pause_before_swap.is_zero() {
            tokio::time::sleep(how.pause_before_swap).await;
        }
        let t_pub = Instant::now();
        let tx = repo
            .transaction()
            .await
            .db("starting the publish transaction")?;
        swap::swap(&tx).await?;
        commit(tx, written, (first, last), rec, summary).await?;
        summary.phases.publish_s = t_pub.elapsed().as_secs_f64();
        return Ok(unattributed_note(unattributed));
    }
    let t_settle = Instant::now();
    let priced = price(totals, h, catalog);
    summary.phases.settle_s += t_settle.elapsed().as_secs_f64();
    tracing::debug!(
        peak_rss_mib = crate::sys::peak_rss_bytes() >> 20,
        "after settle"
    );
    obs.event(&Event::Phase(Phase::Write));
    let t_write = Instant::now();
    let tx = repo
        .transaction()
        .await
        .db("starting the publish transaction")?;
    let publication = Publication {
        first,
        last,
        periods: &priced.periods,
        video: priced.video,
        creator: priced.creator,
        top: &priced.top,
    };
    let written = publish::publish(&tx, publication).await?;
    summary.phases.write_s = t_write.elapsed().as_secs_f64();
    let t_pub = Instant::now();
    commit(tx, written, (first, last), rec, summary).await?;
    summary.phases.publish_s = t_pub.elapsed().as_secs_f64();
    Ok(priced.notes)
}

/// Marks the days settled, records the execution complete and commits the
/// publishing transaction.
async fn commit(
    tx: tokio_postgres::Transaction<'_>,
    written: WriteStats,
    (first, last): (Day, Day),
    rec: Record<'_>,
    summary: &mut RunSummary,
) -> Result<()> {
    tracing::debug!(
        peak_rss_mib = crate::sys::peak_rss_bytes() >> 20,
        "after write"
    );
    ledger::mark_settled(&tx, first, last, rec.exec, rec.tails).await?;
    changes::clear_seen(&tx, rec.seen).await?;
    finish_summary(summary, written, rec.t0);
    let summary_json = serde_json::to_value(&*summary).unwrap_or_default();
    jobs::record_counts(
        &tx,
        rec.exec,
        &counts_of(summary, rec.counts),
        &summary_json,
    )
    .await?;
    jobs::complete(&tx, rec.exec).await?;
    tx.commit().await.db("publishing the results")
}

/// Completes an execution that had no days to settle (an empty log).
pub(crate) async fn complete_empty(
    repo: &Client,
    rec: Record<'_>,
    summary: &mut RunSummary,
) -> Result<()> {
    finish_summary(summary, WriteStats::default(), rec.t0);
    let summary_json = serde_json::to_value(&*summary).unwrap_or_default();
    jobs::record_counts(
        repo,
        rec.exec,
        &counts_of(summary, rec.counts),
        &summary_json,
    )
    .await?;
    jobs::complete(repo, rec.exec).await
}
