//! The database side of an ingest: what was loaded before, ids for files
//! without them, partitions for the ids, and the load itself: one
//! transaction per file holding its rows (binary COPY) and its record.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

use super::parse::{self, Format, Play, Reject, Zone};
use crate::error::{DbContext, Error, Result};
use crate::rules::calendar::Day;

/// Advisory lock keys: one for id blocks, one for new partitions; a
/// file's own key is derived from its digest.
const IDS_LOCK: i64 = 0x5e77_1e00_0000_1d5a;
const PARTITION_LOCK: i64 = 0x5e77_1e00_0000_9a27;

/// The file's SHA-256 (hex) and size, read in 1 MiB blocks.
pub fn digest(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), size));
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
}

/// The file's own advisory lock: two loads of the same content queue.
fn file_lock_key(sha: &str) -> i64 {
    i64::from_str_radix(&sha[..15], 16).unwrap_or(0)
}

/// When the same content was loaded, and under which name.
pub async fn loaded_before(
    c: &impl GenericClient,
    sha: &str,
) -> Result<Option<(i64, DateTime<Utc>, String)>> {
    Ok(c.query_opt(
        "SELECT file_id, ingested_at, name FROM ingest_file \
         WHERE sha256 = $1 AND status = 'loaded' ORDER BY file_id LIMIT 1",
        &[&sha],
    )
    .await
    .db("looking for an earlier load of the file")?
    .map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// What the first pass found in a file.
#[derive(Default)]
pub struct Survey {
    pub rows: u64,
    pub rejects: Vec<Reject>,
    pub reject_count: u64,
    pub has_id: bool,
    pub id_range: Option<(i64, i64)>,
    /// Seoul days of the plays.
    pub days: BTreeSet<i32>,
}

/// Rejects kept per file; the count is always exact.
pub const REJECTS_KEPT: usize = 1000;

pub fn survey(path: &Path, format: Format, zone: Option<Zone>) -> Result<Survey> {
    let mut s = Survey::default();
    let mut last_day = i32::MIN;
    parse::scan(path, format, zone, &mut |row| {
        match row {
            Ok(p) => {
                s.rows += 1;
                if let Some(id) = p.id {
                    s.has_id = true;
                    let (lo, hi) = s.id_range.get_or_insert((id, id));
                    *lo = (*lo).min(id);
                    *hi = (*hi).max(id);
                }
                let d = crate::rules::calendar::seoul_day_pg(p.started_at).0;
                if d != last_day {
                    s.days.insert(d);
                    last_day = d;
                }
            }
            Err(r) => {
                s.reject_count += 1;
                if s.rejects.len() < REJECTS_KEPT {
                    s.rejects.push(r);
                }
            }
        }
        Ok(())
    })?;
    Ok(s)
}

/// Reserves `n` ids above every id in the log and every block handed out
/// before; the first of them. The block survives a failed load as a gap.
pub async fn reserve_ids(c: &mut Client, n: u64) -> Result<i64> {
    let tx = c.transaction().await.db("reserving ids")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&IDS_LOCK])
        .await
        .db("taking the id lock")?;
    let base: i64 = tx
        .query_one(
            "SELECT greatest((SELECT coalesce(max(id), 0) FROM viewing_log), \
             (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM viewing_log_ingest_id))",
            &[],
        )
        .await
        .db("reading the log's last id")?
        .get(0);
    tx.execute(
        "SELECT setval('viewing_log_ingest_id', $1)",
        &[&(base + n as i64)],
    )
    .await
    .db("reserving ids")?;
    tx.commit().await.db("reserving ids")?;
    Ok(base + 1)
}

/// One partition of viewing_log: its id bounds, `None` where open.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    pub default: bool,
}

/// Whether viewing_log is partitioned.
pub async fn is_partitioned(c: &impl GenericClient) -> Result<bool> {
    Ok(c.query_one(
        "SELECT relkind = 'p' FROM pg_class WHERE oid = 'viewing_log'::regclass",
        &[],
    )
    .await
    .db("looking at viewing_log")?
    .get(0))
}

fn bound(s: &str) -> Option<i64> {
    s.trim().trim_matches('\'').parse().ok()
}

/// The partitions of viewing_log with their bounds.
pub async fn partitions(c: &impl GenericClient) -> Result<Vec<Part>> {
    let rows = c
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'viewing_log'::regclass ORDER BY 1",
            &[],
        )
        .await
        .db("listing the partitions of viewing_log")?;
    let mut parts = Vec::new();
    for r in rows {
        let (name, expr): (String, String) = (r.get(0), r.get(1));
        // "FOR VALUES FROM (x) TO (y)", x and y numbers or MINVALUE/MAXVALUE.
        let inner = |key: &str| -> Option<String> {
            let at = expr.find(key)? + key.len();
            let rest = &expr[at..];
            Some(rest[rest.find('(')? + 1..rest.find(')')?].to_string())
        };
        parts.push(Part {
            name,
            lo: inner("FROM").and_then(|s| bound(&s)),
            hi: inner(" TO").and_then(|s| bound(&s)),
            default: expr.trim() == "DEFAULT",
        });
    }
    Ok(parts)
}

/// Makes sure a partition holds every id in `lo..=hi` when viewing_log is
/// partitioned: uncovered stretches get a partition of their own (an
/// ingest's own partition, which retention can later drop whole). Returns
/// the partitions created.
pub async fn ensure_partitions(c: &mut Client, lo: i64, hi: i64) -> Result<Vec<String>> {
    if !is_partitioned(c).await? {
        return Ok(Vec::new());
    }
    let tx = c.transaction().await.db("adding partitions")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .db("taking the partition lock")?;
    let mut parts = partitions(&tx).await?;
    if parts.iter().any(|p| p.default) {
        return Ok(Vec::new());
    }
    parts.sort_by_key(|p| p.lo.unwrap_or(i64::MIN));
    let mut created = Vec::new();
    let mut next = lo; // first id not yet known to be covered
    for p in parts.iter().chain(std::iter::once(&Part {
        name: String::new(),
        lo: Some(i64::MAX),
        hi: None,
        default: false,
    })) {
        if next > hi {
            break;
        }
        let (plo, phi) = (p.lo.unwrap_or(i64::MIN), p.hi.unwrap_or(i64::MAX));
        if plo > next {
            let to = plo.min(hi.saturating_add(1));
            let name = format!("viewing_log_i{next}");
            tx.batch_execute(&format!(
                "CREATE TABLE {name} PARTITION OF viewing_log FOR VALUES FROM ({next}) TO ({to})"
            ))
            .await
            .db("adding a partition for the file's ids")?;
            created.push(name);
            next = to;
        }
        if phi > next {
            next = phi;
        }
    }
    tx.commit().await.db("adding partitions")?;
    Ok(created)
}

/// The facts of a file recorded with its outcome.
pub struct Record<'a> {
    pub name: &'a str,
    pub size: u64,
    pub sha: &'a str,
    pub format: Format,
    pub forced: bool,
}

async fn insert_record(
    c: &impl GenericClient,
    r: &Record<'_>,
    status: &str,
    rows: u64,
    survey: &Survey,
    ids: Option<(i64, i64)>,
) -> Result<(i64, DateTime<Utc>)> {
    let row = c
        .query_one(
            "INSERT INTO ingest_file (name, size_bytes, sha256, format, status, rows_loaded, rejects, \
             forced, first_id, last_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING file_id, ingested_at",
            &[
                &r.name,
                &(r.size as i64),
                &r.sha,
                &r.format.as_str(),
                &status,
                &(rows as i64),
                &(survey.reject_count as i64),
                &r.forced,
                &ids.map(|i| i.0),
                &ids.map(|i| i.1),
            ],
        )
        .await
        .db("recording the file")?;
    let file_id: i64 = row.get(0);
    let lines: Vec<i64> = survey.rejects.iter().map(|r| r.line as i64).collect();
    let cols: Vec<&str> = survey.rejects.iter().map(|r| r.column.as_str()).collect();
    let why: Vec<&str> = survey.rejects.iter().map(|r| r.reason.as_str()).collect();
    c.execute(
        "INSERT INTO ingest_reject (file_id, line, column_name, reason) \
         SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
        &[&file_id, &lines, &cols, &why],
    )
    .await
    .db("recording the file's rejects")?;
    Ok((file_id, row.get(1)))
}

/// Records a file refused for its rejects (nothing of it loaded).
pub async fn record_refused(c: &Client, r: &Record<'_>, survey: &Survey) -> Result<i64> {
    Ok(insert_record(c, r, "refused", 0, survey, None).await?.0)
}

fn put_play(buf: &mut BytesMut, id: i64, p: &Play) {
    buf.put_i16(6);
    for v in [id, p.user_id, p.video_id, p.started_at] {
        buf.put_i32(8);
        buf.put_i64(v);
    }
    for v in [p.start_position, p.end_position] {
        buf.put_i32(4);
        buf.put_i32(v);
    }
}

/// How the second pass runs: ids from `first_id` on unless the file has
/// them; a test hook that stops after so many rows are sent.
pub struct Pass {
    pub format: Format,
    pub zone: Option<Zone>,
    pub first_id: Option<i64>,
    pub pause_at_row: Option<u64>,
}

/// Reads the file again and streams its plays (rejects skipped) in 1 MiB
/// chunks; the channel closing (the COPY failed) ends the scan.
fn stream(path: &Path, pass: &Pass, out: tokio::sync::mpsc::Sender<Bytes>) -> Result<u64> {
    let mut buf = BytesMut::with_capacity(1 << 21);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    let mut sent = 0u64;
    let closed = || Error::Tool("the COPY ended before the file did".into());
    parse::scan(path, pass.format, pass.zone, &mut |row| {
        let Ok(p) = row else { return Ok(()) };
        let id =
            p.id.unwrap_or_else(|| pass.first_id.unwrap_or(1) + sent as i64);
        put_play(&mut buf, id, &p);
        sent += 1;
        let pause = pass.pause_at_row == Some(sent);
        if buf.len() >= 1 << 20 || pause {
            out.blocking_send(buf.split().freeze())
                .map_err(|_| closed())?;
        }
        if pause {
            // Test hook: hold the open transaction until the process dies.
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        Ok(())
    })?;
    buf.put_i16(-1);
    out.blocking_send(buf.freeze()).map_err(|_| closed())?;
    Ok(sent)
}

/// Loads the file in one transaction with its record, after `turn`
/// resolves (files with reserved ids commit in id order). Refuses content
/// loaded before unless forced. The record's id and time, or the earlier
/// load that refused it.
pub async fn load(
    c: &mut Client,
    path: &Path,
    r: &Record<'_>,
    survey: &Survey,
    pass: Pass,
    turn: impl std::future::Future<Output = ()>,
) -> Result<std::result::Result<(i64, DateTime<Utc>), (DateTime<Utc>, String)>> {
    let tx = c.transaction().await.db("starting the file's load")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&file_lock_key(r.sha)])
        .await
        .db("taking the file's lock")?;
    if !r.forced {
        if let Some((_, at, name)) = loaded_before(&tx, r.sha).await? {
            return Ok(Err((at, name)));
        }
    }
    let ids = match (survey.has_id, pass.first_id) {
        (true, _) => survey.id_range,
        (false, Some(f)) if survey.rows > 0 => Some((f, f + survey.rows as i64 - 1)),
        _ => None,
    };
    let sink = tx
        .copy_in::<_, Bytes>(
            "COPY viewing_log (id, user_id, video_id, started_at, start_position, end_position) \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .db("starting the COPY into viewing_log")?;
    futures_util::pin_mut!(sink);
    let (send, mut recv) = tokio::sync::mpsc::channel::<Bytes>(4);
    let owned = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || stream(&owned, &pass, send));
    let mut copy_err = None;
    while let Some(chunk) = recv.recv().await {
        if let Err(e) = sink.send(chunk).await {
            copy_err = Some(e);
            break;
        }
    }
    drop(recv);
    let read = reader
        .await
        .map_err(|e| Error::Tool(format!("the reader of {} died: {e}", path.display())))?;
    if let Some(e) = copy_err {
        return Err(e).db("copying the file into viewing_log");
    }
    let sent = read?;
    let copied = sink
        .finish()
        .await
        .db("finishing the COPY into viewing_log")?;
    if sent != survey.rows || copied != survey.rows {
        return Err(Error::Tool(format!(
            "{} changed while it was loaded ({} rows at first, {copied} the second time); nothing was loaded",
            path.display(),
            survey.rows
        )));
    }
    let rec = insert_record(&tx, r, "loaded", copied, survey, ids).await?;
    turn.await;
    tx.commit().await.db("committing the file's load")?;
    Ok(Ok(rec))
}

/// Which of `days` are settled already.
pub async fn settled_among(c: &impl GenericClient, days: &BTreeSet<i32>) -> Result<Vec<Day>> {
    let dates: Vec<chrono::NaiveDate> = days.iter().map(|&d| Day(d).date()).collect();
    let rows = c
        .query(
            "SELECT day FROM settled_day WHERE day = ANY($1) ORDER BY day",
            &[&dates],
        )
        .await
        .db("reading the settled days")?;
    Ok(rows.iter().map(|r| Day::from_date(r.get(0))).collect())
}
