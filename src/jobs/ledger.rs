//! What is already settled: the stored result rows a run builds on (tier
//! history, weeks and months partly outside the run) and the settled days.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rustc_hash::FxHashMap;
use tokio_postgres::GenericClient;

use crate::error::{DbContext, Error, Refusal, Result};
use crate::pipeline::aggregate::day_tail_from;
use crate::pipeline::price::{PeriodRows, Prior, Sums};
use crate::rules::calendar::{pg_micros_to_utc, Day, Period, PeriodKind};

/// First and last settled day, if any.
pub async fn settled_range(c: &impl GenericClient) -> Result<Option<(Day, Day)>> {
    let row = c
        .query_one("SELECT min(day), max(day) FROM settled_day", &[])
        .await
        .db("reading settled days")?;
    let lo: Option<chrono::NaiveDate> = row.get(0);
    let hi: Option<chrono::NaiveDate> = row.get(1);
    Ok(lo
        .zip(hi)
        .map(|(a, b)| (Day::from_date(a), Day::from_date(b))))
}

/// Days in `first..=last` that are not settled (gaps in the history).
pub async fn unsettled_days(c: &impl GenericClient, first: Day, last: Day) -> Result<Vec<Day>> {
    let rows = c
        .query(
            "SELECT d::date FROM generate_series($1::date, $2::date, interval '1 day') d \
             WHERE NOT EXISTS (SELECT 1 FROM settled_day s WHERE s.day = d::date) ORDER BY 1",
            &[&first.date(), &last.date()],
        )
        .await
        .db("checking the settled history")?;
    Ok(rows.iter().map(|r| Day::from_date(r.get(0))).collect())
}

/// All-time counted views and ad views per video on days before `first`.
///
/// Summed from stored month rows, each of which equals the sum of its
/// stored day rows (every publish writes both in one transaction), so the
/// cost does not grow with the length of the history: the months before
/// `first`'s month plus its days before `first`, or, when fewer of that
/// month's days are settled from `first` on (the nightly case), the months
/// through `first`'s month minus its days from `first` on.
pub async fn prior(c: &impl GenericClient, first: Day) -> Result<Prior> {
    let month = first.month_start();
    let next_month = Period {
        kind: PeriodKind::Month,
        start: month,
    }
    .last_day()
    .next();
    let split = c
        .query_one(
            "SELECT count(*) FILTER (WHERE day < $2), count(*) FILTER (WHERE day >= $2) \
             FROM settled_day WHERE day >= $1 AND day < $3",
            &[&month.date(), &first.date(), &next_month.date()],
        )
        .await
        .db("reading the settled days of the run's month")?;
    let (before, from): (i64, i64) = (split.get(0), split.get(1));
    let through_month = from < before;
    // The rows themselves, summed here: sum(int8) in SQL accumulates in
    // numeric, and that was most of a nightly run's 0.29 s history read.
    let sql = if through_month {
        "SELECT video_id, views, ad_views FROM settlement_video \
          WHERE period_kind = 'month' AND period_start <= $1 \
         UNION ALL \
         SELECT video_id, -views, -ad_views FROM settlement_video \
          WHERE period_kind = 'day' AND period_start >= $2 AND period_start < $3"
    } else {
        "SELECT video_id, views, ad_views FROM settlement_video \
          WHERE period_kind = 'month' AND period_start < $1 \
         UNION ALL \
         SELECT video_id, views, ad_views FROM settlement_video \
          WHERE period_kind = 'day' AND period_start >= $1 AND period_start < $2"
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&month.date(), &first.date(), &next_month.date()];
    // The months-before form has no use for the month's end.
    let used = if through_month { 3 } else { 2 };
    let rows = c
        .query_raw(sql, params[..used].iter().copied())
        .await
        .db("reading the tier history")?;
    futures_util::pin_mut!(rows);
    let mut sums: FxHashMap<i64, (i64, i64)> = FxHashMap::default();
    while let Some(r) = rows.next().await {
        let r = r.db("reading the tier history")?;
        let s = sums.entry(r.get(0)).or_default();
        s.0 = s.0.saturating_add(r.get(1));
        s.1 = s.1.saturating_add(r.get(2));
    }
    let mut prior = Prior::default();
    for (video, (v, a)) in sums {
        if v < 0 || a < 0 {
            return Err(Error::Refused(Refusal::InconsistentStore {
                video,
                before: first,
            }));
        }
        if v > 0 || a > 0 {
            prior.insert(video, (v as u64, a as u64));
        }
    }
    Ok(prior)
}

/// Stored video rows of the given days and of the given weeks/months.
pub async fn stored_video_rows(
    c: &impl GenericClient,
    days: &[Day],
    periods: &[Period],
) -> Result<(PeriodRows, PeriodRows)> {
    if days.is_empty() && periods.is_empty() {
        return Ok((PeriodRows::new(), PeriodRows::new()));
    }
    let day_dates: Vec<chrono::NaiveDate> = days.iter().map(|d| d.date()).collect();
    let starts: Vec<chrono::NaiveDate> = periods.iter().map(|p| p.start.date()).collect();
    let kinds: Vec<&str> = periods.iter().map(|p| p.kind.as_str()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&day_dates, &kinds, &starts];
    // Streamed row by row: collected first, a tokio-postgres `Row` costs
    // ~300 bytes against ~70 in the maps below, and a run over the last
    // week of a 100M month peaked at 622 MiB on these rows alone.
    let rows = c
        .query_raw(
            // Two index scans; one OR of both conditions was a full scan
            // of every stored row (0.3 s at one month, and growing).
            "SELECT period_kind, period_start, video_id, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount \
             FROM settlement_video WHERE period_kind = 'day' AND period_start = ANY($1) \
             UNION ALL \
             SELECT s.period_kind, s.period_start, s.video_id, s.views, s.watch_seconds, s.ad_views, s.video_amount, s.ad_amount, s.total_amount \
             FROM unnest($2::text[], $3::date[]) AS k(kind, start) \
             JOIN settlement_video s ON s.period_kind = k.kind AND s.period_start = k.start",
            params,
        )
        .await
        .db("reading stored rows of the run's periods")?;
    futures_util::pin_mut!(rows);
    let mut days = PeriodRows::new();
    let mut others = PeriodRows::new();
    while let Some(r) = rows.next().await {
        let r = r.db("reading stored rows of the run's periods")?;
        let p = Period {
            kind: PeriodKind::parse(r.get(0)).unwrap_or(PeriodKind::Month),
            start: Day::from_date(r.get(1)),
        };
        let target = if p.kind == PeriodKind::Day {
            &mut days
        } else {
            &mut others
        };
        target
            .entry(p)
            .or_insert_with(FxHashMap::default)
            .insert(r.get(2), Sums::from_row(&r, 3));
    }
    Ok((days, others))
}

/// Marks `first..=last` settled by `execution`.
pub async fn mark_settled(
    c: &impl GenericClient,
    first: Day,
    last: Day,
    execution: i64,
    tails: Option<&DayTails>,
) -> Result<()> {
    let days: Vec<Day> = (first.0..=last.0).map(Day).collect();
    let dates: Vec<chrono::NaiveDate> = days.iter().map(|d| d.date()).collect();
    let (froms, rows): (Vec<Option<DateTime<Utc>>>, Vec<Option<i64>>) = days
        .iter()
        .map(|&d| match tails {
            Some(t) => (
                Some(pg_micros_to_utc(day_tail_from(d, t.allowance))),
                Some(t.rows.get(&d.0).copied().unwrap_or(0) as i64),
            ),
            None => (None, None),
        })
        .unzip();
    c.execute(
        "INSERT INTO settled_day (day, execution_id, tail_from, tail_rows) \
         SELECT d, $2, f, n FROM unnest($1::date[], $3::timestamptz[], $4::int8[]) AS t(d, f, n) \
         ON CONFLICT (day) DO UPDATE SET execution_id = EXCLUDED.execution_id, settled_at = now(), \
           tail_from = EXCLUDED.tail_from, tail_rows = EXCLUDED.tail_rows",
        &[&dates, &execution, &froms, &rows],
    )
    .await
    .db("recording settled days")?;
    Ok(())
}

/// Per Seoul day, the rows that started in its last `allowance` (see
/// `aggregate::day_tail_from`), summed over a run's partitions.
pub struct DayTails {
    pub allowance: i64,
    pub rows: std::collections::HashMap<i32, u64>,
}

/// Plays of settled day `day` written after it was settled, as far as its
/// tail shows: the stored count of its last hours against the count in
/// this snapshot. None when nothing was recorded (an older version, or a
/// run that reused partitions), else the difference.
pub async fn tail_change(
    snap: &impl GenericClient,
    repo: &impl GenericClient,
    day: Day,
) -> Result<Option<i64>> {
    let Some(r) = repo
        .query_opt(
            "SELECT tail_from, tail_rows FROM settled_day WHERE day = $1 AND tail_rows IS NOT NULL",
            &[&day.date()],
        )
        .await
        .db("reading the settled day's tail count")?
    else {
        return Ok(None);
    };
    let (from, stored): (DateTime<Utc>, i64) = (r.get(0), r.get(1));
    let now: i64 = snap
        .query_one(
            "SELECT count(*) FROM viewing_log WHERE started_at >= $1 AND started_at < $2",
            &[&from, &pg_micros_to_utc(day.next().start_pg_micros())],
        )
        .await
        .db("counting the plays of the day before the run")?
        .get(0);
    Ok(Some(now - stored))
}

/// What `settle retention` retired: the newest retired play and its Seoul
/// day.
#[derive(Debug, Clone, Copy)]
pub struct Retired {
    pub last_pg_micros: i64,
    pub day: Day,
}

pub async fn retired_through(c: &impl GenericClient) -> Result<Option<Retired>> {
    let r = c
        .query_one("SELECT max(last_started_at) FROM log_retired", &[])
        .await
        .db("reading the retired log range")?;
    Ok(r.get::<_, Option<DateTime<Utc>>>(0).map(|t| {
        let us = crate::rules::calendar::utc_to_pg_micros(t);
        Retired {
            last_pg_micros: us,
            day: crate::rules::calendar::seoul_day_pg(us),
        }
    }))
}

/// Refuses a run that would read a retired play: `--all` (None) always
/// once anything is retired, a day range when its read (from `first`, less
/// the replay look-back) starts at or before the newest retired play.
pub async fn check_not_retired(c: &impl GenericClient, first: Option<Day>) -> Result<()> {
    let Some(r) = retired_through(c).await? else {
        return Ok(());
    };
    let window = crate::rules::REPLAY_WINDOW_MICROS;
    if let Some(f) = first {
        if f.start_pg_micros() - window > r.last_pg_micros {
            return Ok(());
        }
    }
    // The first day whose read starts after the newest retired play.
    let mut earliest = r.day;
    while earliest.start_pg_micros() - window <= r.last_pg_micros {
        earliest = earliest.next();
    }
    Err(Error::Refused(Refusal::Retired {
        first,
        retired_through: r.day,
        earliest,
    }))
}
