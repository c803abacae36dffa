//! Partitions as a work queue for `settle worker` processes on other hosts:
//! the coordinator opens an execution's partitions for claiming, workers
//! claim one at a time (`FOR UPDATE SKIP LOCKED`), and each claim is proved
//! alive by a session advisory lock, so a worker that dies frees its
//! partition at once, and a stale worker's late result is refused.

use tokio_postgres::{Client, GenericClient};

use crate::error::{DbContext, Result};
use crate::pipeline::aggregate::PartitionOutput;
use crate::pipeline::partition::{Partition, Scope};

/// Woken when partitions become claimable (a run opened them, or one was
/// given back); workers also poll, so a lost notification only delays.
pub const CHANNEL: &str = "settle_partitions";

/// What a worker needs to read for an execution, stored with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteSpec {
    /// `pg_export_snapshot()` of the coordinator's open transaction.
    pub snapshot: String,
    /// The server that snapshot lives on ([`ServerIdentity`]): it can be
    /// imported there only.
    pub server: String,
    pub read_lo: Option<i64>,
    pub read_hi: Option<i64>,
    pub count_lo: Option<i64>,
    /// The disorder allowance, µs.
    pub allowance: i64,
    /// Seconds a claim stands before the coordinator takes it back.
    pub timeout_s: u64,
    /// Claims a partition may have before the run fails.
    pub attempts: u32,
}

impl RemoteSpec {
    pub fn scope(&self) -> Scope {
        Scope {
            read_lo: self.read_lo,
            read_hi: self.read_hi,
            count_lo: self.count_lo,
        }
    }
}

/// A server as a snapshot id needs it named: a standby made by
/// `pg_basebackup` shares its primary's system identifier, so the start
/// time and the recovery state tell them apart.
pub async fn server_identity(c: &impl GenericClient) -> Result<String> {
    let r = c
        .query_one(
            "SELECT pg_postmaster_start_time()::text, pg_is_in_recovery()",
            &[],
        )
        .await
        .db("asking the read server who it is")?;
    let started: String = r.get(0);
    let standby: bool = r.get(1);
    Ok(format!(
        "{} started {started}",
        if standby { "standby" } else { "primary" }
    ))
}

/// Records where the execution reads the log, and a standby's replayed
/// WAL position at its snapshot.
pub async fn record_read(c: &Client, exec: i64, server: &str, lsn: Option<&str>) -> Result<()> {
    c.execute(
        "UPDATE job_execution SET read_server = $2, read_lsn = $3::text::pg_lsn WHERE execution_id = $1",
        &[&exec, &server, &lsn],
    )
    .await
    .db("recording where the run reads")?;
    Ok(())
}

/// The advisory lock key of a claim: its execution, and its partition with
/// the attempt, so a claim taken back from a hung worker that still holds
/// its lock can be claimed again.
pub fn claim_key(exec: i64, no: u32, attempt: u32) -> (i32, i32) {
    (
        (exec & 0x7fff_ffff) as i32,
        ((no << 8) | (attempt & 0xff)) as i32,
    )
}

/// Makes an execution's PENDING partitions claimable. Called after its plan
/// and kept results are recorded, so no worker claims a kept partition.
pub async fn open(c: &Client, exec: i64, spec: &RemoteSpec) -> Result<()> {
    let json = serde_json::to_value(spec).expect("spec serializes");
    c.execute(
        "UPDATE job_execution SET remote = $2 WHERE execution_id = $1",
        &[&exec, &json],
    )
    .await
    .db("opening the partitions to workers")?;
    notify(c).await
}

pub async fn notify(c: &Client) -> Result<()> {
    c.batch_execute(&format!("NOTIFY {CHANNEL}"))
        .await
        .db("waking the workers")
}

/// A partition this process holds.
#[derive(Clone, Debug)]
pub struct Claim {
    pub exec: i64,
    pub partition: Partition,
    pub attempt: u32,
    pub spec: RemoteSpec,
}

/// Who claims: this host and process.
#[derive(Clone, Debug)]
pub struct Claimant {
    pub host: String,
    pub pid: i32,
    /// The read server's [`server_identity`]: only executions whose
    /// snapshot lives there are claimed.
    pub server: String,
}

/// Claims the first claimable partition (of `only`, when given), taking its
/// advisory lock on `c`'s session. `None` when there is none now.
pub async fn claim_next(
    c: &mut Client,
    who: &Claimant,
    only: Option<i64>,
) -> Result<Option<Claim>> {
    let tx = c.transaction().await.db("starting a claim")?;
    let row = tx
        .query_opt(
            "SELECT pe.execution_id, pe.partition_no, pe.id_lo, pe.id_hi, pe.attempts, e.remote \
             FROM partition_execution pe JOIN job_execution e USING (execution_id) \
             WHERE pe.status = 'PENDING' AND e.status = 'RUNNING' AND e.remote IS NOT NULL \
               AND e.remote->>'server' = $1 AND ($2::int8 IS NULL OR pe.execution_id = $2) \
               AND pe.attempts < (e.remote->>'attempts')::int \
             ORDER BY pe.execution_id, pe.partition_no LIMIT 1 \
             FOR UPDATE OF pe SKIP LOCKED",
            &[&who.server, &only],
        )
        .await
        .db("looking for a claimable partition")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let exec: i64 = row.get(0);
    let partition = Partition {
        no: row.get::<_, i32>(1) as u32,
        id_lo: row.get(2),
        id_hi: row.get(3),
    };
    let attempt = row.get::<_, i32>(4) as u32 + 1;
    let spec: RemoteSpec = serde_json::from_value(row.get(5)).map_err(|e| {
        crate::error::Error::Usage(format!(
            "execution {exec}'s remote settings are unreadable ({e}); is this worker older than the coordinator?"
        ))
    })?;
    let (k1, k2) = claim_key(exec, partition.no, attempt);
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2])
        .await
        .db("locking a claim")?
        .get(0);
    if !locked {
        // A hung claimant of this very attempt still holds it; next time.
        return Ok(None);
    }
    let claimed = async {
        tx.execute(
            "UPDATE partition_execution SET status = 'RUNNING', attempts = $3, claimed_host = $4, \
             claimed_pid = $5, claimed_at = now(), lease_until = now() + make_interval(secs => $6), error = NULL \
             WHERE execution_id = $1 AND partition_no = $2",
            &[
                &exec,
                &(partition.no as i32),
                &(attempt as i32),
                &who.host,
                &who.pid,
                &(spec.timeout_s as f64),
            ],
        )
        .await
        .db("claiming a partition")?;
        tx.commit().await.db("claiming a partition")
    }
    .await;
    if let Err(e) = claimed {
        unlock(c, exec, partition.no, attempt).await;
        return Err(e);
    }
    Ok(Some(Claim {
        exec,
        partition,
        attempt,
        spec,
    }))
}

/// The condition that the claim is still this claimant's.
const MINE: &str =
    "execution_id = $1 AND partition_no = $2 AND attempts = $3 AND status = 'RUNNING' \
                    AND claimed_host = $4 AND claimed_pid = $5";

/// Whether the claim still stands: the run is RUNNING and nobody took the
/// partition back.
pub async fn still_mine(c: &Client, claim: &Claim, who: &Claimant) -> Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM partition_execution pe JOIN job_execution e USING (execution_id) \
         WHERE e.status = 'RUNNING' AND pe.execution_id = $1 AND pe.partition_no = $2 AND pe.attempts = $3 \
           AND pe.status = 'RUNNING' AND pe.claimed_host = $4 AND pe.claimed_pid = $5)";
    Ok(c.query_one(sql, &params(claim, who).as_slice())
        .await
        .db("checking a claim")?
        .get(0))
}

fn params<'a>(claim: &'a Claim, who: &'a Claimant) -> ClaimParams<'a> {
    ClaimParams {
        exec: claim.exec,
        no: claim.partition.no as i32,
        attempt: claim.attempt as i32,
        host: &who.host,
        pid: who.pid,
    }
}

struct ClaimParams<'a> {
    exec: i64,
    no: i32,
    attempt: i32,
    host: &'a str,
    pid: i32,
}

impl ClaimParams<'_> {
    fn as_slice(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [&self.exec, &self.no, &self.attempt, &self.host, &self.pid]
    }
}

/// Stores the claim's result and marks the partition COMPLETED, unless it
/// was taken back meanwhile (then `false`: another claim reads it, and
/// this result is dropped, so no partition is counted twice).
pub async fn complete(
    c: &Client,
    claim: &Claim,
    who: &Claimant,
    out: &PartitionOutput,
    millis: i64,
) -> Result<bool> {
    let blob = super::repository::encode_output(out);
    let days: Vec<i32> = out.tails.iter().map(|t| t.0).collect();
    let rows: Vec<i64> = out.tails.iter().map(|t| t.1 as i64).collect();
    let p = params(claim, who);
    let sql = format!(
        "UPDATE partition_execution SET status = 'COMPLETED', rows_read = $6, duration_ms = $7, \
         result = $8, tail_days = $9, tail_rows = $10, lease_until = NULL, error = NULL WHERE {MINE}"
    );
    let n = c
        .execute(
            &sql,
            &[
                &p.exec,
                &p.no,
                &p.attempt,
                &p.host,
                &p.pid,
                &(out.counts.rows_read as i64),
                &millis,
                &blob,
                &days,
                &rows,
            ],
        )
        .await
        .db("storing a partition's result")?;
    unlock(c, claim.exec, claim.partition.no, claim.attempt).await;
    Ok(n == 1)
}

/// Gives the claim back for another attempt (a transient error, or this
/// worker stopping). A clean stop does not use up an attempt.
pub async fn release(
    c: &Client,
    claim: &Claim,
    who: &Claimant,
    why: &str,
    counts: bool,
) -> Result<()> {
    let p = params(claim, who);
    let sql = format!(
        "UPDATE partition_execution SET status = 'PENDING', claimed_host = NULL, claimed_pid = NULL, \
         lease_until = NULL, attempts = attempts - $7, error = $6 WHERE {MINE}"
    );
    let back = if counts { 0 } else { 1 };
    c.execute(
        &sql,
        &[&p.exec, &p.no, &p.attempt, &p.host, &p.pid, &why, &back],
    )
    .await
    .db("giving a partition back")?;
    unlock(c, claim.exec, claim.partition.no, claim.attempt).await;
    notify(c).await
}

/// Marks the partition FAILED for an error no retry can cure; the
/// coordinator fails the run.
pub async fn fail(c: &Client, claim: &Claim, who: &Claimant, why: &str) -> Result<()> {
    let p = params(claim, who);
    let sql = format!("UPDATE partition_execution SET status = 'FAILED', error = $6 WHERE {MINE}");
    c.execute(&sql, &[&p.exec, &p.no, &p.attempt, &p.host, &p.pid, &why])
        .await
        .db("recording a partition failure")?;
    unlock(c, claim.exec, claim.partition.no, claim.attempt).await;
    Ok(())
}

async fn unlock(c: &Client, exec: i64, no: u32, attempt: u32) {
    let (k1, k2) = claim_key(exec, no, attempt);
    let _ = c
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
        .await;
}

/// A partition the coordinator took back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenBack {
    pub no: u32,
    pub attempt: u32,
    pub reason: String,
}

/// Takes back claims whose worker is gone (its advisory lock released: the
/// process or its host died) or that outlived the partition timeout.
pub async fn take_back(c: &Client, exec: i64) -> Result<Vec<TakenBack>> {
    let rows = c
        .query(
            "WITH lost AS ( \
               SELECT pe.partition_no, pe.attempts, \
                      format('taken back from %s pid %s (attempt %s): %s', pe.claimed_host, pe.claimed_pid, pe.attempts, \
                             CASE WHEN pe.lease_until < now() THEN 'no result within the partition timeout' \
                                  ELSE 'its worker is gone (its session ended)' END) AS reason \
               FROM partition_execution pe \
               WHERE pe.execution_id = $1 AND pe.status = 'RUNNING' AND pe.claimed_pid IS NOT NULL \
                 AND (pe.lease_until < now() OR NOT EXISTS ( \
                   SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND l.classid = (($1 & 2147483647)::int4)::int8::oid \
                     AND l.objid = (((pe.partition_no << 8) | (pe.attempts & 255))::int8)::oid))) \
             UPDATE partition_execution pe SET status = 'PENDING', claimed_host = NULL, claimed_pid = NULL, \
                    lease_until = NULL, error = lost.reason \
             FROM lost WHERE pe.execution_id = $1 AND pe.partition_no = lost.partition_no \
               AND pe.attempts = lost.attempts AND pe.status = 'RUNNING' \
             RETURNING pe.partition_no, pe.attempts, lost.reason",
            &[&exec],
        )
        .await
        .db("taking back lost claims")?;
    let back: Vec<TakenBack> = rows
        .iter()
        .map(|r| TakenBack {
            no: r.get::<_, i32>(0) as u32,
            attempt: r.get::<_, i32>(1) as u32,
            reason: r.get(2),
        })
        .collect();
    if !back.is_empty() {
        notify(c).await?;
    }
    Ok(back)
}

/// One partition as the coordinator follows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClaimState {
    pub no: u32,
    pub status: String,
    pub attempts: u32,
    pub host: Option<String>,
    pub pid: Option<i32>,
    pub error: Option<String>,
}

pub async fn states(c: &Client, exec: i64) -> Result<Vec<ClaimState>> {
    let rows = c
        .query(
            "SELECT partition_no, status, attempts, claimed_host, claimed_pid, error \
             FROM partition_execution WHERE execution_id = $1 ORDER BY partition_no",
            &[&exec],
        )
        .await
        .db("reading the partitions' claims")?;
    Ok(rows
        .iter()
        .map(|r| ClaimState {
            no: r.get::<_, i32>(0) as u32,
            status: r.get(1),
            attempts: r.get::<_, i32>(2) as u32,
            host: r.get(3),
            pid: r.get(4),
            error: r.get(5),
        })
        .collect())
}

/// A partition a worker completed, with its decoded result.
pub struct Finished {
    pub out: PartitionOutput,
    pub millis: i64,
    pub attempts: u32,
    pub host: Option<String>,
    pub pid: Option<i32>,
}

/// The results of partitions completed by a claim (not kept from an earlier
/// execution) that are not in `merged` yet.
pub async fn finished(c: &Client, exec: i64, merged: &[i32]) -> Result<Vec<Finished>> {
    let rows = c
        .query(
            "SELECT result, coalesce(duration_ms, 0), attempts, claimed_host, claimed_pid, tail_days, tail_rows \
             FROM partition_execution WHERE execution_id = $1 AND status = 'COMPLETED' \
               AND reused_from IS NULL AND NOT (partition_no = ANY($2)) ORDER BY partition_no",
            &[&exec, &merged],
        )
        .await
        .db("fetching the workers' results")?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut o = super::repository::decode_output(r.get(0))?;
        let days: Option<Vec<i32>> = r.get(5);
        let counts: Option<Vec<i64>> = r.get(6);
        if let (Some(d), Some(n)) = (days, counts) {
            o.tails = d.into_iter().zip(n.into_iter().map(|n| n as u64)).collect();
        }
        out.push(Finished {
            out: o,
            millis: r.get(1),
            attempts: r.get::<_, i32>(2) as u32,
            host: r.get(3),
            pid: r.get(4),
        });
    }
    Ok(out)
}
