//! The server's tables (migration 0011): schedules, their fires, and the
//! audit log. Every statement binds its values.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Row};

use crate::error::{DbContext, Result};
use crate::rules::Day;

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub schedule_id: i64,
    pub name: String,
    /// Cron, seconds optional: `0 1 * * *` is 01:00 every day.
    pub cron: String,
    pub timezone: String,
    /// A fire settles the day this many days before its local date.
    pub day_offset: i32,
    /// `all` missed fires in date order, or the `latest` only.
    pub catch_up: String,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub max_failures: i32,
    pub consecutive_failures: i32,
    #[schema(value_type = String)]
    pub last_fire_at: DateTime<Utc>,
}

const COLUMNS: &str = "schedule_id, name, cron, timezone, day_offset, catch_up, paused, \
    paused_reason, max_failures, consecutive_failures, last_fire_at";

fn schedule(r: &Row) -> Schedule {
    Schedule {
        schedule_id: r.get(0),
        name: r.get(1),
        cron: r.get(2),
        timezone: r.get(3),
        day_offset: r.get(4),
        catch_up: r.get(5),
        paused: r.get(6),
        paused_reason: r.get(7),
        max_failures: r.get(8),
        consecutive_failures: r.get(9),
        last_fire_at: r.get(10),
    }
}

pub async fn list(c: &Client) -> Result<Vec<Schedule>> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM serve_schedule ORDER BY schedule_id"),
            &[],
        )
        .await
        .db("reading the schedules")?;
    Ok(rows.iter().map(schedule).collect())
}

pub async fn get(c: &Client, id: i64) -> Result<Option<Schedule>> {
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM serve_schedule WHERE schedule_id = $1"),
            &[&id],
        )
        .await
        .db("reading a schedule")?;
    Ok(row.as_ref().map(schedule))
}

/// A schedule's fields as created or changed; `None` keeps (or defaults) one.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEdit {
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub day_offset: Option<i32>,
    pub catch_up: Option<String>,
    pub paused: Option<bool>,
    pub max_failures: Option<i32>,
    /// Catch up from this time (RFC 3339) instead of the last fire.
    #[schema(value_type = Option<String>)]
    pub last_fire_at: Option<DateTime<Utc>>,
}

pub async fn create(c: &Client, e: &ScheduleEdit, name: &str, cron: &str) -> Result<Schedule> {
    let row = c
        .query_one(
            &format!(
                "INSERT INTO serve_schedule (name, cron, timezone, day_offset, catch_up, paused, max_failures, last_fire_at) \
                 VALUES ($1, $2, coalesce($3, 'Asia/Seoul'), coalesce($4, 1), coalesce($5, 'all'), coalesce($6, false), \
                 coalesce($7, 3), coalesce($8, now())) RETURNING {COLUMNS}"
            ),
            &[&name, &cron, &e.timezone, &e.day_offset, &e.catch_up, &e.paused, &e.max_failures, &e.last_fire_at],
        )
        .await
        .db("creating a schedule")?;
    Ok(schedule(&row))
}

/// Applies an edit; resuming clears the failure count and the reason.
pub async fn update(c: &Client, id: i64, e: &ScheduleEdit) -> Result<Option<Schedule>> {
    let row = c
        .query_opt(
            &format!(
                "UPDATE serve_schedule SET name = coalesce($2, name), cron = coalesce($3, cron), \
                 timezone = coalesce($4, timezone), day_offset = coalesce($5, day_offset), \
                 catch_up = coalesce($6, catch_up), max_failures = coalesce($7, max_failures), \
                 last_fire_at = coalesce($8, last_fire_at), \
                 consecutive_failures = CASE WHEN $9::boolean IS NOT NULL AND NOT $9::boolean THEN 0 ELSE consecutive_failures END, \
                 paused_reason = CASE WHEN $9::boolean IS NULL THEN paused_reason WHEN $9::boolean THEN 'paused by an operator' ELSE NULL END, \
                 paused = coalesce($9::boolean, paused), updated_at = now() \
                 WHERE schedule_id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &e.name, &e.cron, &e.timezone, &e.day_offset, &e.catch_up, &e.max_failures, &e.last_fire_at, &e.paused],
        )
        .await
        .db("changing a schedule")?;
    Ok(row.as_ref().map(schedule))
}

/// A fire was handled: later passes start after it.
pub async fn advance(c: &Client, id: i64, fire_at: DateTime<Utc>) -> Result<()> {
    c.execute(
        "UPDATE serve_schedule SET last_fire_at = greatest(last_fire_at, $2), consecutive_failures = 0 WHERE schedule_id = $1",
        &[&id, &fire_at],
    )
    .await
    .db("advancing a schedule")?;
    Ok(())
}

/// A fire failed; the schedule pauses itself at `max` failures in a row.
pub async fn failed(c: &Client, id: i64, failures: i32, max: i32) -> Result<()> {
    let reason = format!("paused after {failures} consecutive failed runs");
    c.execute(
        "UPDATE serve_schedule SET consecutive_failures = $2, \
         paused = paused OR $2::integer >= $3::integer, paused_reason = CASE WHEN $2::integer >= $3::integer THEN $4 ELSE paused_reason END \
         WHERE schedule_id = $1",
        &[&id, &failures, &max, &reason],
    )
    .await
    .db("counting a failed fire")?;
    Ok(())
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Fire {
    pub fire_id: i64,
    pub schedule_id: i64,
    #[schema(value_type = String)]
    pub fire_at: DateTime<Utc>,
    pub day: String,
    pub outcome: String,
    pub execution_id: Option<i64>,
    pub error: Option<String>,
}

pub async fn record_fire(
    c: &Client,
    schedule: i64,
    fire_at: DateTime<Utc>,
    day: Day,
    outcome: &str,
    execution: Option<i64>,
    error: Option<&str>,
) -> Result<()> {
    c.execute(
        "INSERT INTO serve_fire (schedule_id, fire_at, day, outcome, execution_id, error) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&schedule, &fire_at, &day.date(), &outcome, &execution, &error],
    )
    .await
    .db("recording a fire")?;
    Ok(())
}

pub async fn fires(c: &Client, schedule: Option<i64>, limit: i64) -> Result<Vec<Fire>> {
    let rows = c
        .query(
            "SELECT fire_id, schedule_id, fire_at, day::text, outcome, execution_id, error FROM serve_fire \
             WHERE $1::bigint IS NULL OR schedule_id = $1 ORDER BY fire_id DESC LIMIT $2",
            &[&schedule, &limit],
        )
        .await
        .db("reading fires")?;
    Ok(rows
        .iter()
        .map(|r| Fire {
            fire_id: r.get(0),
            schedule_id: r.get(1),
            fire_at: r.get(2),
            day: r.get(3),
            outcome: r.get(4),
            execution_id: r.get(5),
            error: r.get(6),
        })
        .collect())
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub audit_id: i64,
    pub at: String,
    pub token_name: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub remote: String,
    pub status: i32,
}

pub async fn audit(
    c: &Client,
    token: &str,
    action: &str,
    detail: &serde_json::Value,
    remote: &str,
    status: i32,
) -> Result<()> {
    c.execute(
        "INSERT INTO serve_audit (token_name, action, detail, remote, status) VALUES ($1, $2, $3, $4, $5)",
        &[&token, &action, detail, &remote, &status],
    )
    .await
    .db("recording an audit entry")?;
    Ok(())
}

pub async fn audit_log(c: &Client, limit: i64) -> Result<Vec<AuditEntry>> {
    let rows = c
        .query(
            "SELECT audit_id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), token_name, action, detail, remote, status \
             FROM serve_audit ORDER BY audit_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .db("reading the audit log")?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            audit_id: r.get(0),
            at: r.get(1),
            token_name: r.get(2),
            action: r.get(3),
            detail: r.get(4),
            remote: r.get(5),
            status: r.get(6),
        })
        .collect())
}
