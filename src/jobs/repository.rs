//! The job repository: job instances identified by their parameters,
//! executions with status, partitions with their kept results, and rejected
//! rows, all in PostgreSQL beside the data they describe.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::{Client, GenericClient};

use crate::error::{DbContext, Error, Refusal, Result};
use crate::pipeline::aggregate::{PartitionOutput, Rejected};
use crate::pipeline::partition::{pg_timestamp_literal, Partition};
use crate::rules::calendar::{pg_micros_to_utc, Day};

pub const JOB_NAME: &str = "settle";

/// One advisory lock serialises settlement runs: tiers carry forward, so a
/// run over any days can change every later day, and runs over overlapping
/// dates must never interleave.
pub const RUN_LOCK: i64 = 0x5e77_1e00_0000_0002;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Starting,
    Running,
    Completed,
    Failed,
    Stopped,
    Abandoned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Stopped => "STOPPED",
            Status::Abandoned => "ABANDONED",
        }
    }
}

/// Whether `settle unsettle` took back days of the completed execution
/// `id` after it ran: then its instance is no longer done.
async fn unsettled_since(c: &impl GenericClient, id: i64) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM unsettlement u JOIN job_execution e ON e.execution_id = $1 \
          WHERE u.unsettled_at >= e.started_at AND u.from_day <= coalesce(e.day_to, 'infinity'))",
        &[&id],
    )
    .await
    .db("checking for unsettled days")?
    .get(0))
}

/// The identifying parameters of a run as requested (not as extended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    All,
    Days(Day, Day),
}

impl Requested {
    pub fn key(&self) -> String {
        match self {
            Requested::All => "all".into(),
            Requested::Days(a, b) => format!("from={a};to={b}"),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            Requested::All => serde_json::json!({"all": true}),
            Requested::Days(a, b) => {
                serde_json::json!({"from": a.to_string(), "to": b.to_string()})
            }
        }
    }
}

/// A started execution and what a restart may reuse.
#[derive(Debug)]
pub struct Execution {
    pub id: i64,
    pub instance_id: i64,
    pub attempt: i32,
    /// The failed execution this one continues, with its partition plan.
    pub restart_of: Option<i64>,
}

/// Outcome of looking up the instance before running.
/// Rows written into a COMPLETED range after its execution read it.
#[derive(Clone, Copy, Debug)]
pub struct RowsAdded {
    pub previous: i64,
    pub rows: i64,
}

pub enum Begin {
    /// A new execution, and why a COMPLETED range is run again, if it is.
    Started(Execution, Option<RowsAdded>),
    AlreadyCompleted {
        execution_id: i64,
    },
}

/// Marks executions whose process died as ABANDONED. Only call while holding
/// `RUN_LOCK`: then no live run can be RUNNING, so any such row is dead.
pub async fn abandon_dead(c: &Client) -> Result<Vec<i64>> {
    let rows = c
        .query(
            "UPDATE job_execution SET status = 'ABANDONED', ended_at = now(), \
             error = coalesce(error, 'the process running it died (its lock was gone)') \
             WHERE status IN ('STARTING','RUNNING') RETURNING execution_id",
            &[],
        )
        .await
        .db("marking dead executions abandoned")?;
    c.execute(
        "UPDATE partition_execution SET status = 'FAILED', error = coalesce(error, 'abandoned') \
         WHERE status = 'RUNNING' AND execution_id IN (SELECT execution_id FROM job_execution WHERE status = 'ABANDONED')",
        &[],
    )
    .await
    .db("marking dead partitions")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The execution currently holding the run lock, for the refusal message.
/// The holder records its execution just after taking the lock, so a run
/// refused in that instant waits briefly for the record (0 if none comes).
pub async fn lock_holder(c: &Client) -> Result<i64> {
    for _ in 0..40 {
        let row = c
            .query_opt(
                "SELECT execution_id FROM job_execution WHERE status IN ('STARTING','RUNNING') \
                 ORDER BY execution_id DESC LIMIT 1",
                &[],
            )
            .await
            .db("finding the running execution")?;
        if let Some(r) = row {
            return Ok(r.get(0));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(0)
}

/// Whether a live session holds `RUN_LOCK` in this database (read from
/// `pg_locks`, without taking it). When it does not, every STARTING or
/// RUNNING execution is dead; the next run records it ABANDONED.
pub async fn run_lock_held(c: &Client) -> Result<bool> {
    Ok(c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = ($1::int8 >> 32)::oid AND objid = ($1::int8 & 4294967295)::oid AND objsubid = 1)",
            &[&RUN_LOCK],
        )
        .await
        .db("looking for a live run")?
        .get(0))
}

/// Finds or creates the job instance and starts an execution of it.
/// `force` runs a COMPLETED instance again; a FAILED, STOPPED or ABANDONED
/// last execution is continued (restart) unless `fresh`.
pub async fn begin(c: &Client, req: &Requested, force: bool, fresh: bool) -> Result<Begin> {
    let key = req.key();
    let instance_id: i64 = c
        .query_one(
            "INSERT INTO job_instance (job_name, params_key, params) VALUES ($1, $2, $3) \
             ON CONFLICT (job_name, params_key) DO UPDATE SET job_name = EXCLUDED.job_name \
             RETURNING instance_id",
            &[&JOB_NAME, &key, &req.json()],
        )
        .await
        .db("recording the job instance")?
        .get(0);
    let last = c
        .query_opt(
            "SELECT execution_id, status, attempt FROM job_execution WHERE instance_id = $1 \
             ORDER BY execution_id DESC LIMIT 1",
            &[&instance_id],
        )
        .await
        .db("reading the instance's executions")?;
    let mut rerun = None;
    let (attempt, restart_of) = match last {
        None => (1, None),
        Some(r) => {
            let id: i64 = r.get(0);
            let status: String = r.get(1);
            let attempt: i32 = r.get(2);
            match status.as_str() {
                "COMPLETED" if !force => {
                    let added = rows_added_since(c, id, req).await?;
                    let settled = crate::jobs::ledger::settled_range(c).await?;
                    let changed = !crate::jobs::changes::pending(c, settled).await?.is_empty();
                    if added == 0 && !changed && !unsettled_since(c, id).await? {
                        return Ok(Begin::AlreadyCompleted { execution_id: id });
                    }
                    rerun = (added > 0).then_some(RowsAdded {
                        previous: id,
                        rows: added,
                    });
                    (attempt + 1, None)
                }
                "COMPLETED" => (attempt + 1, None),
                _ if fresh => (attempt + 1, None),
                _ => (attempt + 1, Some(id)),
            }
        }
    };
    let host = hostname();
    let pid = std::process::id() as i32;
    let id: i64 = c
        .query_one(
            "INSERT INTO job_execution (instance_id, attempt, status, host, pid, restarted_from) \
             VALUES ($1, $2, 'STARTING', $3, $4, $5) RETURNING execution_id",
            &[&instance_id, &attempt, &host, &pid, &restart_of],
        )
        .await
        .db("recording the execution")?
        .get(0);
    Ok(Begin::Started(
        Execution {
            id,
            instance_id,
            attempt,
            restart_of,
        },
        rerun,
    ))
}

/// Rows in the completed execution's scope (its days; for `--all`, any day)
/// with an id above any its snapshot saw: plays written after it ran, which
/// a rerun must count. (Ids are
/// assigned at insert; rows edited in place are not looked for: the README
/// says to rerun with --force after editing past data.) 0 for executions
/// recorded before their snapshot was.
async fn rows_added_since(c: &Client, execution: i64, req: &Requested) -> Result<i64> {
    let r = c
        .query_one(
            "SELECT snapshot_max_id, day_from, day_to FROM job_execution WHERE execution_id = $1",
            &[&execution],
        )
        .await
        .db("reading the completed execution")?;
    let max_id: Option<i64> = r.get(0);
    let (from, to): (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>) = (r.get(1), r.get(2));
    let Some(max_id) = max_id else { return Ok(0) };
    let sql = match (req, from, to) {
        (Requested::All, ..) => "SELECT count(*) FROM viewing_log WHERE id > $1".to_string(),
        (Requested::Days(..), Some(from), Some(to)) => format!(
            "SELECT count(*) FROM viewing_log WHERE id > $1 AND started_at >= {} AND started_at < {}",
            pg_timestamp_literal(Day::from_date(from).start_pg_micros()),
            pg_timestamp_literal(Day::from_date(to).next().start_pg_micros())
        ),
        (Requested::Days(..), ..) => return Ok(0),
    };
    Ok(c.query_one(&sql, &[&max_id])
        .await
        .db("looking for rows written after the completed execution")?
        .get(0))
}

/// Records what the execution's snapshot saw; see [`rows_added_since`] and
/// `engine::reconcile_plan`.
pub async fn record_snapshot(
    c: &Client,
    exec: i64,
    max_id: Option<i64>,
    snapshot: &str,
) -> Result<()> {
    c.execute(
        "UPDATE job_execution SET snapshot_max_id = coalesce($2::int8, 0), snapshot = $3 WHERE execution_id = $1",
        &[&exec, &max_id, &snapshot],
    )
    .await
    .db("recording the run's snapshot")?;
    Ok(())
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The partition plan an execution recorded, without its kept results.
pub async fn recorded_plan(c: &Client, execution: i64) -> Result<Vec<Partition>> {
    let rows = c
        .query(
            "SELECT partition_no, id_lo, id_hi FROM partition_execution \
             WHERE execution_id = $1 ORDER BY partition_no",
            &[&execution],
        )
        .await
        .db("reading an execution's partition plan")?;
    Ok(rows
        .iter()
        .map(|r| Partition {
            no: r.get::<_, i32>(0) as u32,
            id_lo: r.get(1),
            id_hi: r.get(2),
        })
        .collect())
}

/// The partition plan of an earlier execution, with the results kept for
/// its completed partitions.
pub async fn previous_plan(
    c: &Client,
    execution: i64,
) -> Result<Vec<(Partition, Option<(PartitionOutput, i64)>)>> {
    let rows = c
        .query(
            "SELECT partition_no, id_lo, id_hi, status, result, coalesce(reused_from, execution_id) \
             FROM partition_execution WHERE execution_id = $1 ORDER BY partition_no",
            &[&execution],
        )
        .await
        .db("reading the failed execution's partitions")?;
    let mut out = Vec::new();
    for r in rows {
        let p = Partition {
            no: r.get::<_, i32>(0) as u32,
            id_lo: r.get(1),
            id_hi: r.get(2),
        };
        let status: String = r.get(3);
        let kept: Option<Vec<u8>> = r.get(4);
        let result = match (status.as_str(), kept) {
            ("COMPLETED", Some(bytes)) => Some((decode_output(&bytes)?, r.get::<_, i64>(5))),
            _ => None,
        };
        out.push((p, result));
    }
    Ok(out)
}

/// The effective day range an execution recorded when it started running
/// (both `None` for `--all`, or when it never got that far).
pub async fn effective_range(c: &Client, execution: i64) -> Result<(Option<Day>, Option<Day>)> {
    let r = c
        .query_one(
            "SELECT day_from, day_to FROM job_execution WHERE execution_id = $1",
            &[&execution],
        )
        .await
        .db("reading the failed execution's range")?;
    let day = |d: Option<chrono::NaiveDate>| d.map(Day::from_date);
    Ok((day(r.get(0)), day(r.get(1))))
}

pub async fn set_running(
    c: &Client,
    exec: i64,
    first: Option<Day>,
    last: Option<Day>,
    partitions: &[Partition],
    workers: usize,
) -> Result<()> {
    c.execute(
        "UPDATE job_execution SET status = 'RUNNING', day_from = $2, day_to = $3, partitions = $4, workers = $5 \
         WHERE execution_id = $1",
        &[
            &exec,
            &first.map(|d| d.date()),
            &last.map(|d| d.date()),
            &(partitions.len() as i32),
            &(workers as i32),
        ],
    )
    .await
    .db("marking the execution running")?;
    let nos: Vec<i32> = partitions.iter().map(|p| p.no as i32).collect();
    let los: Vec<i64> = partitions.iter().map(|p| p.id_lo).collect();
    let his: Vec<i64> = partitions.iter().map(|p| p.id_hi).collect();
    c.execute(
        "INSERT INTO partition_execution (execution_id, partition_no, id_lo, id_hi, status) \
         SELECT $1, no, lo, hi, 'PENDING' FROM unnest($2::int4[], $3::int8[], $4::int8[]) AS t(no, lo, hi)",
        &[&exec, &nos, &los, &his],
    )
    .await
    .db("recording the partition plan")?;
    Ok(())
}

pub async fn partition_running(c: &Client, exec: i64, no: u32, attempt: u32) -> Result<()> {
    c.execute(
        "UPDATE partition_execution SET status = 'RUNNING', attempts = $3 WHERE execution_id = $1 AND partition_no = $2",
        &[&exec, &(no as i32), &(attempt as i32)],
    )
    .await
    .db("marking a partition running")?;
    Ok(())
}

/// Records a completed partition together with its result, so that a
/// restart after a crash can skip it.
pub async fn partition_completed(
    c: &Client,
    exec: i64,
    out: &PartitionOutput,
    millis: i64,
    attempts: u32,
    reused_from: Option<i64>,
) -> Result<()> {
    let p = out
        .partition
        .expect("completed partitions know their range");
    let blob = encode_output(out);
    c.execute(
        "UPDATE partition_execution SET status = 'COMPLETED', rows_read = $3, duration_ms = $4, \
         attempts = $5, result = $6, reused_from = $7, error = NULL \
         WHERE execution_id = $1 AND partition_no = $2",
        &[
            &exec,
            &(p.no as i32),
            &(out.counts.rows_read as i64),
            &millis,
            &(attempts as i32),
            &blob,
            &reused_from,
        ],
    )
    .await
    .db("keeping a partition's result")?;
    Ok(())
}

pub async fn partition_failed(
    c: &Client,
    exec: i64,
    no: u32,
    status: &str,
    attempts: u32,
    error: &str,
) -> Result<()> {
    c.execute(
        "UPDATE partition_execution SET status = $3, attempts = $4, error = $5 WHERE execution_id = $1 AND partition_no = $2",
        &[&exec, &(no as i32), &status, &(attempts as i32), &error],
    )
    .await
    .db("recording a partition failure")?;
    Ok(())
}

/// Ends an execution that did not publish.
pub async fn finish_unpublished(
    c: &Client,
    exec: i64,
    status: Status,
    error: &str,
    summary: Option<&serde_json::Value>,
) -> Result<()> {
    c.execute(
        "UPDATE job_execution SET status = $2, ended_at = now(), error = $3, summary = coalesce($4, summary) WHERE execution_id = $1",
        &[&exec, &status.as_str(), &error, &summary],
    )
    .await
    .db("recording the execution's end")?;
    c.execute(
        "UPDATE partition_execution SET status = CASE WHEN $2 = 'STOPPED' THEN 'STOPPED' ELSE 'FAILED' END \
         WHERE execution_id = $1 AND status IN ('PENDING','RUNNING')",
        &[&exec, &status.as_str()],
    )
    .await
    .db("recording unfinished partitions")?;
    Ok(())
}

/// The counts columns of an execution, written with its final status.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ExecutionCounts {
    pub rows_read: i64,
    pub counted: i64,
    pub excluded_self_play: i64,
    pub excluded_rapid_replay: i64,
    pub rejected_unknown_video: i64,
    pub rejected_bad_position: i64,
}

pub async fn record_counts(
    c: &impl GenericClient,
    exec: i64,
    k: &ExecutionCounts,
    summary: &serde_json::Value,
) -> Result<()> {
    c.execute(
        "UPDATE job_execution SET rows_read = $2, counted = $3, excluded_self_play = $4, excluded_rapid_replay = $5, \
         rejected_unknown_video = $6, rejected_bad_position = $7, summary = $8 WHERE execution_id = $1",
        &[
            &exec,
            &k.rows_read,
            &k.counted,
            &k.excluded_self_play,
            &k.excluded_rapid_replay,
            &k.rejected_unknown_video,
            &k.rejected_bad_position,
            summary,
        ],
    )
    .await
    .db("recording the execution's counts")?;
    Ok(())
}

/// Marks the execution COMPLETED inside the publishing transaction, and
/// drops the partition results kept for its instance: they serve only a
/// restart of the instance's latest execution, which this one now is, and
/// completed. Kept, they grew the repository by the size of every run's
/// results (69 MB per --all run at 100M plays).
pub async fn complete(tx: &impl GenericClient, exec: i64) -> Result<()> {
    tx.execute(
        "UPDATE job_execution SET status = 'COMPLETED', ended_at = now(), error = NULL WHERE execution_id = $1",
        &[&exec],
    )
    .await
    .db("marking the execution completed")?;
    tx.execute(
        "UPDATE partition_execution SET result = NULL WHERE result IS NOT NULL AND execution_id IN \
         (SELECT execution_id FROM job_execution WHERE instance_id = \
          (SELECT instance_id FROM job_execution WHERE execution_id = $1))",
        &[&exec],
    )
    .await
    .db("dropping the instance's kept partition results")?;
    Ok(())
}

/// Writes rejected rows with binary COPY (there may be many).
pub async fn record_rejects(c: &Client, exec: i64, rejected: &[Rejected]) -> Result<()> {
    if rejected.is_empty() {
        return Ok(());
    }
    c.execute(
        "DELETE FROM rejected_play WHERE execution_id = $1",
        &[&exec],
    )
    .await
    .db("clearing rejected rows")?;
    let mut buf = BytesMut::with_capacity(64 + rejected.len() * 90);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for r in rejected {
        let reason = r.reason.as_str();
        buf.put_i16(8);
        for v in [exec, r.play.id] {
            buf.put_i32(8);
            buf.put_i64(v);
        }
        buf.put_i32(reason.len() as i32);
        buf.put_slice(reason.as_bytes());
        for v in [r.play.user_id, r.play.video_id, r.play.started_at] {
            buf.put_i32(8);
            buf.put_i64(v);
        }
        for v in [r.play.start_position, r.play.end_position] {
            buf.put_i32(4);
            buf.put_i32(v);
        }
    }
    buf.put_i16(-1);
    let sink = c
        .copy_in::<_, Bytes>(
            "COPY rejected_play (execution_id, viewing_log_id, reason, user_id, video_id, started_at, start_position, end_position) FROM STDIN (FORMAT binary)",
        )
        .await
        .db("recording rejected rows")?;
    futures_util::pin_mut!(sink);
    sink.send(buf.freeze())
        .await
        .db("recording rejected rows")?;
    sink.finish().await.db("recording rejected rows")?;
    Ok(())
}

pub async fn request_stop(c: &Client, exec: i64) -> Result<String> {
    let row = c
        .query_opt(
            "UPDATE job_execution SET stop_requested = true WHERE execution_id = $1 RETURNING status",
            &[&exec],
        )
        .await
        .db("requesting a stop")?;
    match row {
        None => Err(Error::Usage(format!(
            "there is no execution {exec}; see `settle history`"
        ))),
        Some(r) => Ok(r.get(0)),
    }
}

pub async fn stop_requested(c: &Client, exec: i64) -> Result<bool> {
    Ok(c.query_one(
        "SELECT stop_requested FROM job_execution WHERE execution_id = $1",
        &[&exec],
    )
    .await
    .db("polling for a stop request")?
    .get(0))
}

/// Marks a kept result in the compact encoding. Results written before it
/// existed are plain fixed-width bincode, whose first byte (the tag of
/// `Option<Partition>`) is 0 or 1, so the two cannot be confused.
const COMPACT: &[u8; 4] = b"SPV2";
/// The compact encoding followed by the window's key filter.
const WITH_KEYS: &[u8; 4] = b"SPV3";

/// Kept results in varint bincode: the day cells are small numbers, so this
/// is about half the fixed-width size (17 MB → 7.8 MB per partition at
/// 100M rows). A run writes them while it is still reading, so their size
/// is server work and memory that the read competes with. The key filter
/// follows the rest, so that a result kept as SPV2 still decodes (without
/// one: its partition then clears no head rows).
pub(crate) fn encode_output(out: &PartitionOutput) -> Vec<u8> {
    use bincode::Options;
    let mut blob = WITH_KEYS.to_vec();
    let opts = bincode::DefaultOptions::new();
    opts.serialize_into(&mut blob, out)
        .expect("partition output serializes");
    opts.serialize_into(&mut blob, &out.window_keys)
        .expect("key filter serializes");
    blob
}

pub(crate) fn decode_output(bytes: &[u8]) -> Result<PartitionOutput> {
    use bincode::Options;
    let opts = bincode::DefaultOptions::new();
    let decoded = if let Some(mut rest) = bytes.strip_prefix(WITH_KEYS) {
        opts.deserialize_from::<_, PartitionOutput>(&mut rest)
            .and_then(|mut out| {
                out.window_keys = opts.deserialize(rest)?;
                Ok(out)
            })
    } else if let Some(rest) = bytes.strip_prefix(COMPACT) {
        opts.deserialize(rest)
    } else {
        bincode::deserialize(bytes)
    };
    decoded.map_err(|e| {
        Error::Refused(Refusal::UnreadableKept {
            detail: e.to_string(),
        })
    })
}

/// Renders a PostgreSQL µs timestamp for people.
pub fn show_ts(pg_micros: i64) -> String {
    pg_micros_to_utc(pg_micros).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::aggregate::{Cell, Counts, PackedCells, Seed};
    use crate::pipeline::partition::Partition;

    fn sample() -> PartitionOutput {
        PartitionOutput {
            partition: Some(Partition {
                no: 3,
                id_lo: -7,
                id_hi: i64::MAX,
            }),
            counts: Counts {
                rows_read: 12_345,
                candidates: 12_000,
                ..Counts::default()
            },
            days: (0..3)
                .map(|d| {
                    let cells = (1..2_000i64)
                        .map(|v| {
                            let cell = Cell {
                                views: v % 7,
                                watch_seconds: v * 611,
                                ad_views: v % 3,
                            };
                            (v * 13, cell)
                        })
                        .collect();
                    (8_600 + d, PackedCells::from_unsorted(cells))
                })
                .collect(),
            head: vec![Seed {
                user_id: i64::MIN,
                video_id: 5,
                started_at: -1,
                id: 9,
            }],
            ts_lo: Some(-1),
            ts_hi: Some(i64::MAX),
            max_lag: 3,
            day_lo: Some(8_600),
            day_hi: Some(8_602),
            allowance: 10_800_000_000,
            window_keys: Some({
                let mut f = crate::pipeline::keyfilter::KeyFilter::with_capacity(100, -5);
                f.insert(i64::MIN, 5);
                f
            }),
            ..PartitionOutput::default()
        }
    }

    fn same(a: &PartitionOutput, b: &PartitionOutput) {
        assert_eq!(a.partition, b.partition);
        assert_eq!(a.counts, b.counts);
        assert_eq!(a.days, b.days);
        assert_eq!(a.head, b.head);
        assert_eq!((a.ts_lo, a.ts_hi, a.max_lag), (b.ts_lo, b.ts_hi, b.max_lag));
        assert_eq!(
            (a.day_lo, a.day_hi, a.allowance),
            (b.day_lo, b.day_hi, b.allowance)
        );
        assert_eq!(a.window_keys, b.window_keys);
    }

    #[test]
    fn kept_results_round_trip_in_every_encoding_and_the_compact_one_is_smaller() {
        use bincode::Options;
        let out = sample();
        let compact = encode_output(&out);
        let back = decode_output(&compact).unwrap();
        assert!(back.window_keys.as_ref().unwrap().may_contain(i64::MIN, 5));
        same(&back, &out);
        // Results kept by an older settle still read, without key filters.
        let without_keys = PartitionOutput {
            window_keys: None,
            ..out.clone()
        };
        let mut spv2 = COMPACT.to_vec();
        bincode::DefaultOptions::new()
            .serialize_into(&mut spv2, &out)
            .unwrap();
        same(&decode_output(&spv2).unwrap(), &without_keys);
        let legacy = bincode::serialize(&out).unwrap();
        same(&decode_output(&legacy).unwrap(), &without_keys);
        assert!(
            compact.len() * 2 < legacy.len(),
            "compact {} B against fixed-width {} B",
            compact.len(),
            legacy.len()
        );
        // A damaged blob is refused, not misread, in the filter too.
        assert!(decode_output(&compact[..compact.len() / 2]).is_err());
        assert!(decode_output(&compact[..compact.len() - 3]).is_err());
    }
}
