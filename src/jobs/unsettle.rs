//! Undoing settled days (`settle unsettle`): their result rows and ledger
//! entries go in one transaction, recorded in the job repository.
//!
//! Only the newest days can go. Tiers carry forward, so a day left settled
//! after removed ones would keep amounts priced on plays that no longer
//! count, and the history would have a gap no run may build on. Weeks and
//! months that keep some of their days are summed again from those days
//! (the SPEC defines them as their days' sums) and ranked again.

use tokio_postgres::{Client, GenericClient};

use crate::error::{DbContext, Error, Refusal, Result};
use crate::jobs::ledger;
use crate::jobs::repository::{lock_holder, RUN_LOCK};
use crate::rules::calendar::{Day, Period, PeriodKind};
use crate::rules::top5;

/// What an unsettle removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unsettled {
    pub unsettle_id: i64,
    pub from: Day,
    pub to: Day,
    /// Settled days removed.
    pub days: i64,
    /// Result rows deleted (video, creator and top rows).
    pub rows_deleted: u64,
    /// Weeks and months summed again from the days they keep.
    pub rebuilt: Vec<Period>,
    /// The settled history that remains.
    pub settled: Option<(Day, Day)>,
}

/// Unsettles `from..=to` (`to` defaults to the last settled day), holding
/// the settlement lock so no run publishes meanwhile.
pub async fn unsettle(c: &mut Client, from: Day, to: Option<Day>) -> Result<Unsettled> {
    let locked: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RUN_LOCK])
        .await
        .db("taking the settlement lock")?
        .get(0);
    if !locked {
        let holder = lock_holder(c).await?;
        return Err(Error::Locked { holder });
    }
    let outcome = unsettle_locked(c, from, to).await;
    let _ = c
        .execute("SELECT pg_advisory_unlock($1)", &[&RUN_LOCK])
        .await;
    outcome
}

/// Checks the request against the settled history: the days to remove,
/// clamped to what is settled.
fn checked(from: Day, to: Option<Day>, settled: Option<(Day, Day)>) -> Result<(Day, Day)> {
    let Some((first, last)) = settled else {
        return Err(Error::Refused(Refusal::NothingSettled {
            from,
            to: to.unwrap_or(from),
            settled: None,
        }));
    };
    if from > last && to.is_none_or(|t| t >= from) {
        return Err(Error::Refused(Refusal::NothingSettled {
            from,
            to: to.unwrap_or(from),
            settled,
        }));
    }
    let to = to.unwrap_or(last);
    if from > to {
        return Err(Error::Refused(Refusal::Backwards { from, to }));
    }
    if to < last {
        return Err(Error::Refused(Refusal::UnsettleGap {
            from,
            to,
            last_settled: last,
        }));
    }
    Ok((from.max(first), to))
}

async fn unsettle_locked(c: &mut Client, from: Day, to: Option<Day>) -> Result<Unsettled> {
    let tx = c.transaction().await.db("starting the unsettle")?;
    // Serialise with the ledger's readers: the check and the delete see
    // the same settled days.
    tx.batch_execute("LOCK TABLE settled_day IN EXCLUSIVE MODE")
        .await
        .db("locking the settled days")?;
    let (from, to) = checked(from, to, ledger::settled_range(&tx).await?)?;
    // Days whose plays `settle retention` dropped could never be settled
    // again: their results stay.
    ledger::check_not_retired(&tx, Some(from)).await?;
    let days: i64 = tx
        .query_one(
            "SELECT count(*) FROM settled_day WHERE day >= $1",
            &[&from.date()],
        )
        .await
        .db("counting the days to unsettle")?
        .get(0);
    let week = from.week_start();
    let month = from.month_start();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&from.date(), &week.date(), &month.date()];
    let mut rows_deleted = 0;
    for sql in [
        "DELETE FROM settlement_video WHERE (period_kind = 'day' AND period_start >= $1) \
         OR (period_kind = 'week' AND period_start >= $2) OR (period_kind = 'month' AND period_start >= $3)",
        "DELETE FROM settlement_creator WHERE (period_kind = 'day' AND period_start >= $1) \
         OR (period_kind = 'week' AND period_start >= $2) OR (period_kind = 'month' AND period_start >= $3)",
        "DELETE FROM top_videos WHERE (period_kind = 'day' AND period_start >= $1) \
         OR (period_kind = 'week' AND period_start >= $2) OR (period_kind = 'month' AND period_start >= $3)",
    ] {
        rows_deleted += tx
            .execute(sql, &params)
            .await
            .db("deleting the unsettled days' results")?;
    }
    let mut rebuilt = Vec::new();
    for (kind, start) in [(PeriodKind::Week, week), (PeriodKind::Month, month)] {
        if start < from {
            let period = Period { kind, start };
            rebuild(&tx, period, from).await?;
            rebuilt.push(period);
        }
    }
    tx.execute("DELETE FROM settled_day WHERE day >= $1", &[&from.date()])
        .await
        .db("removing the unsettled days from the ledger")?;
    let unsettle_id: i64 = tx
        .query_one(
            "INSERT INTO unsettlement (from_day, to_day, days, rows_deleted, host, pid) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING unsettle_id",
            &[
                &from.date(),
                &to.date(),
                &days,
                &(rows_deleted as i64),
                &super::hostname(),
                &(std::process::id() as i32),
            ],
        )
        .await
        .db("recording the unsettle")?
        .get(0);
    let settled = ledger::settled_range(&tx).await?;
    tx.commit().await.db("committing the unsettle")?;
    Ok(Unsettled {
        unsettle_id,
        from,
        to,
        days,
        rows_deleted,
        rebuilt,
        settled,
    })
}

/// Sums `period` again from its stored days before `from`, and ranks it.
async fn rebuild(tx: &impl GenericClient, period: Period, from: Day) -> Result<()> {
    let kind = period.kind.as_str();
    let (start, end) = (period.start.date(), from.date());
    for sql in [
        "INSERT INTO settlement_video SELECT $1::text, $2::date, video_id, sum(views)::int8, \
           sum(watch_seconds)::int8, sum(ad_views)::int8, sum(video_amount)::int8, \
           sum(ad_amount)::int8, sum(total_amount)::int8 FROM settlement_video \
         WHERE period_kind = 'day' AND period_start >= $2 AND period_start < $3 GROUP BY video_id",
        "INSERT INTO settlement_creator SELECT $1::text, $2::date, creator_id, sum(views)::int8, \
           sum(watch_seconds)::int8, sum(ad_views)::int8, sum(video_amount)::int8, \
           sum(ad_amount)::int8, sum(total_amount)::int8 FROM settlement_creator \
         WHERE period_kind = 'day' AND period_start >= $2 AND period_start < $3 GROUP BY creator_id",
    ] {
        tx.execute(sql, &[&kind, &start, &end])
            .await
            .db("summing the kept days again")?;
    }
    let rows = tx
        .query(
            "SELECT video_id, views, watch_seconds FROM settlement_video \
             WHERE period_kind = $1 AND period_start = $2",
            &[&kind, &start],
        )
        .await
        .db("reading the summed period")?;
    for (metric, col) in [("views", 1), ("watch_seconds", 2)] {
        let best = top5(
            rows.iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(col))),
        );
        for (i, (video, value)) in best.into_iter().enumerate() {
            tx.execute(
                "INSERT INTO top_videos VALUES ($1, $2, $3, $4, $5, $6)",
                &[&kind, &start, &metric, &(i as i16 + 1), &video, &value],
            )
            .await
            .db("ranking the summed period")?;
        }
    }
    Ok(())
}

/// One recorded unsettle, for `settle history --all`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UnsettleRow {
    pub unsettle_id: i64,
    pub unsettled_at: String,
    pub from: Day,
    pub to: Day,
    pub days: i64,
    pub rows_deleted: i64,
    pub host: String,
}

/// The most recent unsettles, newest first.
pub async fn recent(c: &impl GenericClient, limit: i64) -> Result<Vec<UnsettleRow>> {
    Ok(c.query(
        "SELECT unsettle_id, to_char(unsettled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
                from_day, to_day, days, rows_deleted, host \
         FROM unsettlement ORDER BY unsettle_id DESC LIMIT $1",
        &[&limit],
    )
    .await
    .db("reading the unsettles")?
    .iter()
    .map(|r| UnsettleRow {
        unsettle_id: r.get(0),
        unsettled_at: r.get(1),
        from: Day::from_date(r.get(2)),
        to: Day::from_date(r.get(3)),
        days: r.get(4),
        rows_deleted: r.get(5),
        host: r.get(6),
    })
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: i32) -> Day {
        Day(19900 + n)
    }

    #[test]
    fn only_a_tail_of_the_history_can_go() {
        let s = Some((d(0), d(9)));
        assert_eq!(checked(d(5), None, s).unwrap(), (d(5), d(9)));
        assert_eq!(checked(d(-3), Some(d(12)), s).unwrap(), (d(0), d(12)));
        assert!(matches!(
            checked(d(5), Some(d(8)), s),
            Err(Error::Refused(Refusal::UnsettleGap { .. }))
        ));
        assert!(matches!(
            checked(d(10), None, s),
            Err(Error::Refused(Refusal::NothingSettled { .. }))
        ));
        assert!(matches!(
            checked(d(9), Some(d(5)), s),
            Err(Error::Refused(Refusal::Backwards { .. }))
        ));
        assert!(matches!(
            checked(d(1), None, None),
            Err(Error::Refused(Refusal::NothingSettled { .. }))
        ));
    }
}
