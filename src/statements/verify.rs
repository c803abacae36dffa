//! `settle verify`: is what we published right for today's log?
//!
//! Full mode recounts independently of the engine: sql/reference/ (plain
//! SQL, one window sort) over the log up to the end of the last settled day
//! the check needs (a day's prices depend only on earlier days), into
//! session-local scratch tables, then compares row for row with the
//! published day, week and month rows the range touches. Quick mode
//! recounts nothing: it checks the identities the published tables must
//! satisfy among themselves. Both record what they found in the job
//! repository.

use std::time::Instant;

use tokio_postgres::{IsolationLevel, Transaction};

use super::verify_sql::{self as q, Shape};
use crate::db::Database;
use crate::error::{DbContext, Error, Result};
use crate::jobs::{ledger, verification};
use crate::rules::calendar::pg_micros_to_utc;
use crate::rules::{Day, Period, PeriodKind};

/// How many differences per check a verification keeps to show.
pub const SAMPLE_PER_CHECK: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An independent recount compared row for row.
    Full,
    /// The published tables' internal identities, no recount.
    Quick,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
        }
    }
}

/// Which days to verify.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    /// Every settled day.
    All,
    /// The days `first..=last`.
    Days(Day, Day),
}

/// One check's counts: rows equal on both sides, on both sides but
/// different, expected but not published, published but not expected.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub check: &'static str,
    pub table: &'static str,
    pub matching: i64,
    pub differing: i64,
    pub missing: i64,
    pub extra: i64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.differing == 0 && self.missing == 0 && self.extra == 0
    }
}

/// One differing row with both values (`published` None when missing,
/// `expected` None when extra).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    pub check: &'static str,
    pub table: &'static str,
    pub kind: String,
    pub key: String,
    pub published: Option<String>,
    pub expected: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Verification {
    pub verification_id: i64,
    pub mode: Mode,
    pub requested: String,
    /// The first and last day asked for (for --all, the settled range).
    pub first_day: Option<Day>,
    pub last_day: Option<Day>,
    /// Days asked for that are not settled: nothing published to verify.
    pub unsettled_days: Vec<Day>,
    /// How many day, week and month periods were compared.
    pub periods: [usize; 3],
    pub checks: Vec<Check>,
    pub sample: Vec<Difference>,
    /// `match`, `differs` or `incomplete` (no difference, but some days
    /// asked for are not settled).
    pub result: &'static str,
    pub seconds: f64,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.result == "match"
    }

    /// Matching, differing, missing and extra rows over all checks.
    pub fn totals(&self) -> [i64; 4] {
        self.checks.iter().fold([0; 4], |t, c| {
            [
                t[0] + c.matching,
                t[1] + c.differing,
                t[2] + c.missing,
                t[3] + c.extra,
            ]
        })
    }
}

/// Verifies the published results of `scope`, records the verification and
/// returns it. A difference is a result, not an error.
pub async fn verify(db: &Database, scope: Scope, mode: Mode) -> Result<Verification> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let mut c = db.connect().await?;
    let (first, last, requested) = match scope {
        Scope::All => match ledger::settled_range(&c).await? {
            Some((a, b)) => (a, b, "all".to_string()),
            None => {
                return Err(Error::Usage(
                    "nothing is settled yet, so there is nothing to verify: run `settle run --all` first".into(),
                ))
            }
        },
        Scope::Days(a, b) if a > b => {
            return Err(Error::Usage(format!("--from {a} is after --to {b}")))
        }
        Scope::Days(a, b) => (a, b, format!("from={a};to={b}")),
    };
    // One snapshot for the log, the ledger and the published rows, so a
    // run publishing meanwhile cannot make a difference appear.
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .db("starting the verification")?;
    // Before the snapshot, so a swap publish cannot land between two reads.
    tx.batch_execute(crate::pipeline::swap::READ_LOCK)
        .await
        .db("locking the result tables for the verification")?;
    // The recount prices from the first play on; once retention dropped
    // plays, it would report differences that are only missing input.
    if matches!(mode, Mode::Full) {
        if let Some(r) = ledger::retired_through(&tx).await? {
            return Err(Error::Usage(format!(
                "settle retention dropped the plays through {}, so a full recount cannot check published rows any more \
                 (tiers count every earlier play); use `settle verify --quick`, which checks the tables' own identities",
                r.day
            )));
        }
    }
    let unsettled = ledger::unsettled_days(&tx, first, last).await?;
    let periods = scope_periods(first, last, &unsettled);
    load_scope(&tx, &periods).await?;
    let mut checks = Vec::new();
    let mut sample = Vec::new();
    if !periods.is_empty() {
        let found = match mode {
            Mode::Full => full(&tx).await?,
            Mode::Quick => quick(&tx).await?,
        };
        for (check, table, f) in found {
            checks.push(Check {
                check,
                table,
                matching: f.counts[0],
                differing: f.counts[1],
                missing: f.counts[2],
                extra: f.counts[3],
            });
            sample.extend(f.sample.into_iter().map(|(kind, key, p, e)| Difference {
                check,
                table,
                kind,
                key,
                published: p,
                expected: e,
            }));
        }
    }
    // The scratch tables go with the transaction.
    tx.rollback().await.db("ending the verification")?;
    let count = |k| periods.iter().filter(|p| p.kind == k).count();
    let mut v = Verification {
        verification_id: 0,
        mode,
        requested,
        first_day: Some(first),
        last_day: Some(last),
        unsettled_days: unsettled,
        periods: [
            count(PeriodKind::Day),
            count(PeriodKind::Week),
            count(PeriodKind::Month),
        ],
        checks,
        sample,
        result: "match",
        seconds: 0.0,
    };
    v.result = if !v.checks.iter().all(Check::passed) {
        "differs"
    } else if !v.unsettled_days.is_empty() {
        "incomplete"
    } else {
        "match"
    };
    v.seconds = clock.elapsed().as_secs_f64();
    v.verification_id = record(&c, &v, started_at).await?;
    Ok(v)
}

/// The settled days of `first..=last` and the weeks and months they touch.
fn scope_periods(first: Day, last: Day, unsettled: &[Day]) -> Vec<Period> {
    let mut periods = Vec::new();
    for d in (first.0..=last.0).map(Day) {
        if unsettled.binary_search(&d).is_ok() {
            continue;
        }
        for kind in PeriodKind::ALL {
            periods.push(Period {
                kind,
                start: d.period_start(kind),
            });
        }
    }
    periods.sort();
    periods.dedup();
    periods
}

async fn load_scope(tx: &Transaction<'_>, periods: &[Period]) -> Result<()> {
    tx.batch_execute(q::CREATE_SCOPE)
        .await
        .db("creating the verification's scratch tables")?;
    let kinds: Vec<&str> = periods.iter().map(|p| p.kind.as_str()).collect();
    let starts: Vec<chrono::NaiveDate> = periods.iter().map(|p| p.start.date()).collect();
    let lasts: Vec<chrono::NaiveDate> = periods.iter().map(|p| p.last_day().date()).collect();
    tx.execute(q::INSERT_SCOPE, &[&kinds, &starts, &lasts])
        .await
        .db("recording the verification's periods")?;
    Ok(())
}

type Found = Vec<(&'static str, &'static str, q::Found)>;

async fn one(
    tx: &Transaction<'_>,
    out: &mut Found,
    (check, table): (&'static str, &'static str),
    shape: &Shape,
    published: &str,
    expected: &str,
) -> Result<()> {
    let f = q::compare(tx, shape, published, expected, SAMPLE_PER_CHECK).await?;
    out.push((check, table, f));
    Ok(())
}

/// The reference recount, compared with every published row in scope.
async fn full(tx: &Transaction<'_>) -> Result<Found> {
    let last: Option<chrono::NaiveDate> = tx
        .query_one(q::LAST_SETTLED_IN_SCOPE, &[])
        .await
        .db("finding the recount's last day")?
        .get(0);
    let Some(last) = last else {
        return Ok(Vec::new());
    };
    let cutoff = pg_micros_to_utc(Day::from_date(last).next().start_pg_micros());
    tx.execute(q::INSERT_CUTOFF, &[&cutoff])
        .await
        .db("recording the recount's cutoff")?;
    tx.batch_execute(&q::reference_script()?)
        .await
        .db("recounting with the reference settlement (sql/reference/settle.sql)")?;
    tx.batch_execute(q::EXPECTED_VIDEO)
        .await
        .db("summing the recount over the periods in scope")?;
    let exp = "SELECT * FROM pg_temp.verify_exp_video";
    let mut out = Found::new();
    let recount = "recount";
    one(
        tx,
        &mut out,
        (recount, "settlement_video"),
        &q::VIDEO,
        &q::published("settlement_video", "true"),
        exp,
    )
    .await?;
    one(
        tx,
        &mut out,
        (recount, "settlement_creator"),
        &q::CREATOR,
        &q::published("settlement_creator", "true"),
        &q::creators_of(exp),
    )
    .await?;
    one(
        tx,
        &mut out,
        (recount, "top_videos"),
        &q::TOP,
        &q::published("top_videos", "true"),
        &q::ranking_of(exp),
    )
    .await?;
    Ok(out)
}

/// The identities among the published rows in scope.
async fn quick(tx: &Transaction<'_>) -> Result<Found> {
    let videos = q::published("settlement_video", "true");
    let creators = q::published("settlement_creator", "true");
    let mut out = Found::new();
    one(
        tx,
        &mut out,
        ("week/month = sum of its days", "settlement_video"),
        &q::VIDEO,
        &q::published("settlement_video", "p.kind <> 'day'"),
        &q::day_sums("settlement_video", "video_id"),
    )
    .await?;
    one(
        tx,
        &mut out,
        ("week/month = sum of its days", "settlement_creator"),
        &q::CREATOR,
        &q::published("settlement_creator", "p.kind <> 'day'"),
        &q::day_sums("settlement_creator", "creator_id"),
    )
    .await?;
    one(
        tx,
        &mut out,
        ("creator = sum of its videos", "settlement_creator"),
        &q::CREATOR,
        &creators,
        &q::creators_of(&videos),
    )
    .await?;
    one(
        tx,
        &mut out,
        ("top 5 = ranking of video rows", "top_videos"),
        &q::TOP,
        &q::published("top_videos", "true"),
        &q::ranking_of(&videos),
    )
    .await?;
    for (table, shape, src) in [
        ("settlement_video", &q::VIDEO_TOTAL, &videos),
        ("settlement_creator", &q::CREATOR_TOTAL, &creators),
    ] {
        let expected = format!(
            "SELECT x.*, x.video_amount + x.ad_amount AS total_amount_expected FROM ({src}) x"
        );
        let expected = format!(
            "SELECT period_kind, period_start, {id}, total_amount_expected AS total_amount FROM ({expected}) y",
            id = shape.key[2]
        );
        one(
            tx,
            &mut out,
            ("total = video + ad", table),
            shape,
            src,
            &expected,
        )
        .await?;
    }
    Ok(out)
}

async fn record(
    c: &tokio_postgres::Client,
    v: &Verification,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<i64> {
    let counts = v.totals();
    let checks = serde_json::to_value(&v.checks).unwrap_or_default();
    let sample = serde_json::to_value(&v.sample).unwrap_or_default();
    verification::record(
        c,
        &verification::NewVerification {
            mode: v.mode.as_str(),
            requested: &v.requested,
            day_from: v.first_day.map(Day::date),
            day_to: v.last_day.map(Day::date),
            result: v.result,
            counts,
            unsettled_days: v.unsettled_days.len() as i32,
            checks,
            sample,
            started_at,
        },
    )
    .await
}
