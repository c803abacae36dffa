//! `settle retention`: retires viewing_log partitions whose every play is
//! older than the kept horizon and whose days are all settled, and records
//! what went, so that runs which would need those plays are refused
//! (`jobs::ledger::retired_through`) instead of publishing zeros.
//!
//! The horizon counts back from the Seoul day of the newest play, not from
//! today: a log that stops arriving keeps its last `keep_days` days, and
//! the same data always gives the same plan.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::db::Database;
use crate::error::{DbContext, Error, Result};
use crate::jobs::ledger;
use crate::rules::calendar::{seoul_day_pg, utc_to_pg_micros, Day};

#[derive(Clone, Debug)]
pub struct Options {
    /// Days kept, counted back from the newest play's Seoul day (>= 1, so
    /// the 30-second look-back of the next day never needs a retired play).
    pub keep_days: u32,
    pub dry_run: bool,
    /// Detach the partitions (kept as tables of their own) instead of
    /// dropping them.
    pub detach: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionPlan {
    pub name: String,
    pub rows: i64,
    pub id_from: Option<i64>,
    pub id_to: Option<i64>,
    pub first_started_at: Option<DateTime<Utc>>,
    pub last_started_at: Option<DateTime<Utc>>,
    /// Retired (or, in a dry run, would be).
    pub retire: bool,
    /// Why it stays, when it does.
    pub kept_because: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub newest_day: Option<Day>,
    /// The first day kept: partitions with a play on or after it stay.
    pub first_kept_day: Option<Day>,
    pub partitions: Vec<PartitionPlan>,
    pub retired: usize,
    pub rows_retired: i64,
    pub dry_run: bool,
    pub detached: bool,
    /// The Seoul day of the newest retired play, over all retentions.
    pub retired_through: Option<Day>,
}

/// Plans and (unless a dry run) retires, in one transaction that holds
/// viewing_log exclusively, so no run reads while partitions go.
pub async fn retire(database: &Database, opts: &Options) -> Result<Report> {
    if opts.keep_days == 0 {
        return Err(Error::Usage(
            "--keep-days must be at least 1: the next day's 30-second look-back reads the day before".into(),
        ));
    }
    let mut c = database.connect().await?;
    let tx = c.transaction().await.db("starting the retention")?;
    if !super::ingest::is_partitioned(&tx).await? {
        return Err(Error::Usage(
            "viewing_log is a plain table; retention retires whole partitions. Convert it to a table \
             partitioned by id range first (docs/retention.md has the SQL)"
                .into(),
        ));
    }
    if !opts.dry_run {
        tx.batch_execute("LOCK TABLE viewing_log IN ACCESS EXCLUSIVE MODE")
            .await
            .db("locking viewing_log")?;
    }
    let newest: Option<DateTime<Utc>> = tx
        .query_one("SELECT max(started_at) FROM viewing_log", &[])
        .await
        .db("finding the newest play")?
        .get(0);
    let newest_day = newest.map(|t| seoul_day_pg(utc_to_pg_micros(t)));
    let first_kept = newest_day.map(|d| Day(d.0 - opts.keep_days as i32 + 1));
    let mut report = Report {
        newest_day,
        first_kept_day: first_kept,
        partitions: Vec::new(),
        retired: 0,
        rows_retired: 0,
        dry_run: opts.dry_run,
        detached: opts.detach,
        retired_through: None,
    };
    let Some(first_kept) = first_kept else {
        return Ok(report);
    };
    for part in super::ingest::partitions(&tx).await? {
        let plan = judge(&tx, &part, first_kept).await?;
        if plan.retire && !opts.dry_run {
            retire_one(&tx, &plan, opts.detach).await?;
        }
        if plan.retire {
            report.retired += 1;
            report.rows_retired += plan.rows;
        }
        report.partitions.push(plan);
    }
    report.retired_through = ledger::retired_through(&tx).await?.map(|r| r.day);
    if !opts.dry_run {
        tx.commit().await.db("committing the retention")?;
    }
    Ok(report)
}

/// Whether one partition may go: it has plays, all before the first kept
/// day, and every day from its first play's to its last's is settled.
async fn judge(
    c: &impl GenericClient,
    part: &super::ingest::Part,
    first_kept: Day,
) -> Result<PartitionPlan> {
    // The name comes from the catalog, never from the user.
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), min(started_at), max(started_at) FROM {}",
                crate::db::quote_ident(&part.name)
            ),
            &[],
        )
        .await
        .db(format!("reading partition {}", part.name))?;
    let (rows, lo, hi): (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (r.get(0), r.get(1), r.get(2));
    let mut plan = PartitionPlan {
        name: part.name.clone(),
        rows,
        id_from: part.lo,
        id_to: part.hi,
        first_started_at: lo,
        last_started_at: hi,
        retire: false,
        kept_because: None,
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        plan.kept_because = Some("empty".into());
        return Ok(plan);
    };
    let (d_lo, d_hi) = (
        seoul_day_pg(utc_to_pg_micros(lo)),
        seoul_day_pg(utc_to_pg_micros(hi)),
    );
    if d_hi >= first_kept {
        plan.kept_because = Some(format!("has plays of {d_hi}, inside the kept days"));
        return Ok(plan);
    }
    if part.hi.is_none() {
        plan.kept_because = Some("holds the newest ids (open-ended): new plays land here".into());
        return Ok(plan);
    }
    if let Some(d) = ledger::unsettled_days(c, d_lo, d_hi).await?.first() {
        plan.kept_because = Some(format!("day {d} is not settled"));
        return Ok(plan);
    }
    plan.retire = true;
    Ok(plan)
}

async fn retire_one(c: &impl GenericClient, plan: &PartitionPlan, detach: bool) -> Result<()> {
    let name = crate::db::quote_ident(&plan.name);
    let sql = if detach {
        format!("ALTER TABLE viewing_log DETACH PARTITION {name}")
    } else {
        format!("DROP TABLE {name}")
    };
    c.batch_execute(&sql)
        .await
        .db(format!("retiring partition {}", plan.name))?;
    let last = plan.last_started_at.expect("a partition with plays");
    c.execute(
        "INSERT INTO log_retired (partition_name, id_from, id_to, rows_retired, first_started_at, \
         last_started_at, last_day, detached) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &plan.name,
            &plan.id_from,
            &plan.id_to,
            &plan.rows,
            &plan.first_started_at,
            &last,
            &seoul_day_pg(utc_to_pg_micros(last)).date(),
            &detach,
        ],
    )
    .await
    .db("recording the retired partition")?;
    Ok(())
}
