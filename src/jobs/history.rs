//! Reading the job repository for people: `settle history` and
//! `settle status`.

use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExecutionRow {
    pub execution_id: i64,
    pub params: String,
    pub attempt: i32,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_s: Option<f64>,
    pub day_from: Option<String>,
    pub day_to: Option<String>,
    pub host: String,
    pub pid: i32,
    pub restarted_from: Option<i64>,
    pub rows_read: i64,
    pub counted: i64,
    pub excluded_self_play: i64,
    pub excluded_rapid_replay: i64,
    pub rejected_unknown_video: i64,
    pub rejected_bad_position: i64,
    pub error: Option<String>,
}

const EXECUTION_COLUMNS: &str = "e.execution_id, i.params_key, e.attempt, e.status, \
    to_char(e.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
    to_char(e.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
    extract(epoch FROM e.ended_at - e.started_at)::float8, coalesce(e.day_from::text, e.summary->>'first_day'), coalesce(e.day_to::text, e.summary->>'last_day'), \
    e.host, e.pid, e.restarted_from, e.rows_read, e.counted, e.excluded_self_play, \
    e.excluded_rapid_replay, e.rejected_unknown_video, e.rejected_bad_position, e.error";

fn execution(r: &tokio_postgres::Row) -> ExecutionRow {
    ExecutionRow {
        execution_id: r.get(0),
        params: r.get(1),
        attempt: r.get(2),
        status: r.get(3),
        started_at: r.get(4),
        ended_at: r.get(5),
        duration_s: r.get(6),
        day_from: r.get(7),
        day_to: r.get(8),
        host: r.get(9),
        pid: r.get(10),
        restarted_from: r.get(11),
        rows_read: r.get(12),
        counted: r.get(13),
        excluded_self_play: r.get(14),
        excluded_rapid_replay: r.get(15),
        rejected_unknown_video: r.get(16),
        rejected_bad_position: r.get(17),
        error: r.get(18),
    }
}

/// An execution still marked STARTING or RUNNING while no live run holds
/// the run lock died with its process (e.g. `kill -9`): show it as the
/// ABANDONED that the next `settle run` will record.
///
/// `lock_held` must be read before the rows: a run holds the lock from
/// before its execution row exists until after it is COMPLETED, so a row
/// read later that still says STARTING or RUNNING belongs to a live run
/// whenever the lock was held first. (Read the other way round, a run
/// finishing in between looked dead.)
fn show_dead_as_abandoned(lock_held: bool, rows: &mut [ExecutionRow]) {
    let marked_live = |r: &ExecutionRow| r.status == "RUNNING" || r.status == "STARTING";
    if !lock_held && rows.iter().any(marked_live) {
        // A run that took the lock after it was read, by a process alive
        // on this host, is not dead either.
        let host = crate::jobs::hostname();
        let alive = |r: &ExecutionRow| r.host == host && crate::sys::process_alive(r.pid);
        for r in rows.iter_mut().filter(|r| marked_live(r) && !alive(r)) {
            r.status = "ABANDONED".into();
            r.error.get_or_insert_with(|| {
                "the process running it died (no live run holds the lock); the next `settle run` records it ABANDONED (run the same days again to continue it)".into()
            });
        }
    }
}

pub async fn recent(c: &Client, limit: i64) -> Result<Vec<ExecutionRow>> {
    let lock_held = crate::jobs::run_lock_held(c).await?;
    let rows = c
        .query(
            &format!(
                "SELECT {EXECUTION_COLUMNS} FROM job_execution e JOIN job_instance i USING (instance_id) \
                 ORDER BY e.execution_id DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await
        .db("reading the job history")?;
    let mut rows: Vec<ExecutionRow> = rows.iter().map(execution).collect();
    show_dead_as_abandoned(lock_held, &mut rows);
    Ok(rows)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionRow {
    pub partition_no: i32,
    pub id_lo: i64,
    pub id_hi: i64,
    pub status: String,
    pub attempts: i32,
    pub rows_read: i64,
    pub duration_ms: Option<i64>,
    pub reused_from: Option<i64>,
    pub error: Option<String>,
    /// Who claimed it (`--remote` runs): host and pid.
    pub host: Option<String>,
    pub pid: Option<i32>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RejectSample {
    pub viewing_log_id: i64,
    pub reason: String,
    pub user_id: i64,
    pub video_id: i64,
    pub started_at: String,
    pub start_position: i32,
    pub end_position: i32,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub execution: ExecutionRow,
    pub partitions: Vec<PartitionRow>,
    pub rejects_by_reason: Vec<(String, i64)>,
    pub reject_sample: Vec<RejectSample>,
}

pub async fn status(c: &Client, exec: i64) -> Result<Status> {
    let lock_held = crate::jobs::run_lock_held(c).await?;
    let row = c
        .query_opt(
            &format!(
                "SELECT {EXECUTION_COLUMNS} FROM job_execution e JOIN job_instance i USING (instance_id) WHERE e.execution_id = $1"
            ),
            &[&exec],
        )
        .await
        .db("reading the execution")?
        .ok_or_else(|| Error::Usage(format!("there is no execution {exec}; see `settle history`")))?;
    let partitions = c
        .query(
            "SELECT partition_no, id_lo, id_hi, status, attempts, rows_read, duration_ms, reused_from, error, \
                    claimed_host, claimed_pid \
             FROM partition_execution WHERE execution_id = $1 ORDER BY partition_no",
            &[&exec],
        )
        .await
        .db("reading the partitions")?
        .iter()
        .map(|r| PartitionRow {
            partition_no: r.get(0),
            id_lo: r.get(1),
            id_hi: r.get(2),
            status: r.get(3),
            attempts: r.get(4),
            rows_read: r.get(5),
            duration_ms: r.get(6),
            reused_from: r.get(7),
            error: r.get(8),
            host: r.get(9),
            pid: r.get(10),
        })
        .collect();
    let rejects_by_reason = c
        .query(
            "SELECT reason, count(*) FROM rejected_play WHERE execution_id = $1 GROUP BY reason ORDER BY reason",
            &[&exec],
        )
        .await
        .db("counting rejected rows")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let reject_sample = c
        .query(
            "SELECT viewing_log_id, reason, user_id, video_id, started_at::text, start_position, end_position \
             FROM rejected_play WHERE execution_id = $1 ORDER BY viewing_log_id LIMIT 10",
            &[&exec],
        )
        .await
        .db("sampling rejected rows")?
        .iter()
        .map(|r| RejectSample {
            viewing_log_id: r.get(0),
            reason: r.get(1),
            user_id: r.get(2),
            video_id: r.get(3),
            started_at: r.get(4),
            start_position: r.get(5),
            end_position: r.get(6),
        })
        .collect();
    let mut shown = [execution(&row)];
    show_dead_as_abandoned(lock_held, &mut shown);
    let [shown] = shown;
    Ok(Status {
        execution: shown,
        partitions,
        rejects_by_reason,
        reject_sample,
    })
}
