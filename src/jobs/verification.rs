//! The verifications `settle verify` made, kept in the job repository
//! (table `verification`), so that `settle history` can show when the
//! published results were last checked and what was found.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// One verification as recorded: what was asked, what was compared, and
/// the four counts summed over its checks.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VerificationRecord {
    pub verification_id: i64,
    pub mode: String,
    pub requested: String,
    pub day_from: Option<String>,
    pub day_to: Option<String>,
    pub result: String,
    pub matching: i64,
    pub differing: i64,
    pub missing: i64,
    pub extra: i64,
    pub unsettled_days: i32,
    pub started_at: String,
    pub duration_s: f64,
    pub checks: serde_json::Value,
}

/// What a verification hands over to be recorded.
pub struct NewVerification<'a> {
    pub mode: &'a str,
    pub requested: &'a str,
    pub day_from: Option<chrono::NaiveDate>,
    pub day_to: Option<chrono::NaiveDate>,
    pub result: &'a str,
    pub counts: [i64; 4],
    pub unsettled_days: i32,
    pub checks: serde_json::Value,
    pub sample: serde_json::Value,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Records a finished verification; returns its id.
pub async fn record(c: &Client, v: &NewVerification<'_>) -> Result<i64> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let pid = std::process::id() as i32;
    let [matching, differing, missing, extra] = v.counts;
    let row = c
        .query_one(
            "INSERT INTO verification (mode, requested, day_from, day_to, result, matching, differing, \
               missing, extra, unsettled_days, checks, sample, started_at, host, pid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             RETURNING verification_id",
            &[
                &v.mode,
                &v.requested,
                &v.day_from,
                &v.day_to,
                &v.result,
                &matching,
                &differing,
                &missing,
                &extra,
                &v.unsettled_days,
                &v.checks,
                &v.sample,
                &v.started_at,
                &host,
                &pid,
            ],
        )
        .await
        .db("recording the verification")?;
    Ok(row.get(0))
}

/// The most recent verifications, newest first.
pub async fn recent(c: &Client, limit: i64) -> Result<Vec<VerificationRecord>> {
    let rows = c
        .query(
            "SELECT verification_id, mode, requested, day_from::text, day_to::text, result, \
                    matching, differing, missing, extra, unsettled_days, \
                    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    extract(epoch FROM ended_at - started_at)::float8, checks \
             FROM verification ORDER BY verification_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .db("reading the verifications")?;
    Ok(rows
        .iter()
        .map(|r| VerificationRecord {
            verification_id: r.get(0),
            mode: r.get(1),
            requested: r.get(2),
            day_from: r.get(3),
            day_to: r.get(4),
            result: r.get(5),
            matching: r.get(6),
            differing: r.get(7),
            missing: r.get(8),
            extra: r.get(9),
            unsettled_days: r.get(10),
            started_at: r.get(11),
            duration_s: r.get(12),
            checks: r.get(13),
        })
        .collect())
}
