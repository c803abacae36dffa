//! Writing results: binary COPY into the result tables inside the one
//! transaction that publishes the run, so readers see the old rows or the
//! new ones, never a mix.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Transaction;

use crate::error::{DbContext, Error, Result};
use crate::pipeline::price::{PeriodRows, Sums};
use crate::pipeline::top::TopRow;
use crate::rules::calendar::{Day, Period, PeriodKind, PG_EPOCH_DAYS};

/// Every table a run publishes into: the three result tables and the
/// ledger of settled days. The bench and the demo empty them all to start
/// from nothing.
pub const PUBLISHED_TABLES: &str = "settlement_video, settlement_creator, top_videos, settled_day";

/// Rows written, per table.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct WriteStats {
    pub video_rows: u64,
    pub creator_rows: u64,
    pub top_rows: u64,
    pub deleted_rows: u64,
    /// Stored rows that already held the new values and were left alone.
    pub unchanged_rows: u64,
    /// Published by swapping in tables built anew ([`super::swap`]) rather
    /// than by writing the difference.
    pub swapped: bool,
}

/// What one run publishes: every row of the days `first..=last` and of the
/// touched weeks and months, replacing what was stored for them.
pub struct Publication<'a> {
    pub first: Day,
    pub last: Day,
    pub periods: &'a [Period],
    /// Taken, so that rows already stored can be dropped as they are found.
    pub video: PeriodRows,
    pub creator: PeriodRows,
    pub top: &'a [TopRow],
}

/// Binary COPY buffer builder.
pub(crate) struct CopyBuf {
    buf: BytesMut,
}

impl CopyBuf {
    pub(crate) fn new() -> Self {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        CopyBuf { buf }
    }
    fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }
    fn text(&mut self, s: &str) {
        self.buf.put_i32(s.len() as i32);
        self.buf.put_slice(s.as_bytes());
    }
    fn date(&mut self, d: Day) {
        self.buf.put_i32(4);
        self.buf.put_i32(d.0 - PG_EPOCH_DAYS);
    }
    fn i64(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }
    fn i16(&mut self, v: i16) {
        self.buf.put_i32(2);
        self.buf.put_i16(v);
    }
    fn tid(&mut self, t: Tid) {
        self.buf.put_i32(6);
        self.buf.put_u32(t.block);
        self.buf.put_u16(t.line);
    }
    /// A row of a sums table (`StoredRows` reads it back with its ctid).
    pub(crate) fn sums_row(&mut self, kind: &str, start: Day, key: i64, s: &Sums) {
        self.row(SUMS_FIELDS);
        self.sums_fields(kind, start, key, s);
    }
    fn sums_fields(&mut self, kind: &str, start: Day, key: i64, s: &Sums) {
        self.text(kind);
        self.date(start);
        self.i64(key);
        for v in [
            s.views,
            s.watch_seconds,
            s.ad_views,
            s.video_amount,
            s.ad_amount,
            s.total_amount,
        ] {
            self.i64(v);
        }
    }
    pub(crate) fn take_chunk(&mut self) -> Option<Bytes> {
        (self.buf.len() >= 1 << 20).then(|| self.buf.split().freeze())
    }
    pub(crate) fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

pub(crate) async fn copy_in(
    tx: &Transaction<'_>,
    sql: &str,
    chunks: impl IntoIterator<Item = Bytes>,
) -> Result<u64> {
    let sink = tx
        .copy_in::<_, Bytes>(sql)
        .await
        .db(format!("starting {sql}"))?;
    futures_util::pin_mut!(sink);
    for c in chunks {
        sink.send(c).await.db(format!("writing {sql}"))?;
    }
    sink.finish().await.db(format!("finishing {sql}"))
}

/// One result table of per-period sums: `settlement_video` keyed by
/// `video_id`, or `settlement_creator` keyed by `creator_id`.
pub struct SumsTable {
    pub table: &'static str,
    pub key: &'static str,
}

pub const VIDEO: SumsTable = SumsTable {
    table: "settlement_video",
    key: "video_id",
};
pub const CREATOR: SumsTable = SumsTable {
    table: "settlement_creator",
    key: "creator_id",
};

/// Stored rows to delete, by physical address (`ctid`): 8 bytes each in
/// fixed-size blocks. A rerun after the data changed can doom every stored
/// row (3M at 100M plays), and a COPY-encoded buffer grown by doubling had
/// cost up to 150 MB on top of the run's peak. Deleting by address is a TID
/// scan; matching the keys had been a hash join over the whole table (1.0 s
/// of a 4.3 s nightly run at 100M plays, against 0.17 s).
#[derive(Default)]
struct Doomed {
    blocks: Vec<Vec<Tid>>,
    len: usize,
}

/// A row's `ctid`: block number and line pointer. It stays valid for the
/// publishing transaction, which holds the run lock, so no other run moves
/// the row in between; a row someone changes by hand meanwhile is simply
/// not deleted, and the insert of its key then fails the publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tid {
    block: u32,
    line: u16,
}

const DOOMED_BLOCK: usize = 1 << 16;

impl Doomed {
    fn push(&mut self, tid: Tid) {
        if self.blocks.last().is_none_or(|b| b.len() == DOOMED_BLOCK) {
            self.blocks.push(Vec::with_capacity(DOOMED_BLOCK));
        }
        let block = self.blocks.last_mut().expect("a block was just ensured");
        block.push(tid);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The binary COPY payload, produced lazily a chunk at a time.
    fn into_chunks(self) -> impl Iterator<Item = Bytes> {
        let mut rows = self.blocks.into_iter().flatten();
        let mut b = Some(CopyBuf::new());
        std::iter::from_fn(move || {
            let buf = b.as_mut()?;
            for tid in rows.by_ref() {
                buf.row(1);
                buf.tid(tid);
                if let Some(c) = buf.take_chunk() {
                    return Some(c);
                }
            }
            b.take().map(CopyBuf::finish)
        })
    }
}

/// Makes the stored rows of the publication's periods equal `rows`, writing
/// only the difference: stored rows that are gone or changed are deleted,
/// new or changed rows are copied in. A rerun over unchanged data writes
/// nothing, and leaves no dead tuples behind for the next run to wade
/// through (a full delete and re-insert of 3.6M rows took 30 s, most of it
/// checking the new keys against the deleted ones).
async fn replace_sums(
    tx: &Transaction<'_>,
    t: &SumsTable,
    p: &Publication<'_>,
    mut rows: PeriodRows,
    stats: &mut WriteStats,
) -> Result<u64> {
    let (first, last, weeks, months) = p.bounds();
    // Index scans of exactly the published periods: the run's days, then its
    // weeks and months (a nightly run must not read back the month's other
    // day rows). One OR of both conditions had been a full scan of the table.
    let kinds: Vec<&str> = weeks
        .iter()
        .map(|_| "week")
        .chain(months.iter().map(|_| "month"))
        .collect();
    let starts: Vec<String> = weeks.iter().chain(&months).map(|d| d.to_string()).collect();
    let cols = |prefix: &str| {
        [
            "period_kind",
            "period_start",
            t.key,
            "views",
            "watch_seconds",
            "ad_views",
        ]
        .into_iter()
        .chain(["video_amount", "ad_amount", "total_amount", "ctid"])
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
    };
    let select = format!(
        "COPY (SELECT {cols} FROM {table} WHERE period_kind = 'day' AND period_start BETWEEN '{first}' AND '{last}' \
         UNION ALL \
         SELECT {s_cols} FROM unnest('{{{kinds}}}'::text[], '{{{starts}}}'::date[]) AS k(kind, start) \
         JOIN {table} s ON s.period_kind = k.kind AND s.period_start = k.start) TO STDOUT (FORMAT binary)",
        cols = cols(""),
        s_cols = cols("s."),
        table = t.table,
        kinds = kinds.join(","),
        starts = starts.join(","),
    );
    let ctx = format!("reading the stored rows of {}", t.table);
    let stream = tx.copy_out(select.as_str()).await.db(ctx.clone())?;
    futures_util::pin_mut!(stream);

    // Rows already stored as they are leave `rows`: what stays is written.
    // Rows arrive grouped by period, so the period's lookups are made once.
    let mut doomed = Doomed::default();
    let mut decoder = StoredRows::default();
    let mut current: Option<(Period, bool)> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.db(ctx.clone())?;
        decoder.feed(&chunk, |r| {
            // A kind this version does not know cannot be current.
            let same = match PeriodKind::parse(r.kind) {
                None => false,
                Some(kind) => {
                    let per = Period {
                        kind,
                        start: r.start,
                    };
                    let published = match current {
                        Some((c, published)) if c == per => published,
                        _ => {
                            let published = match kind {
                                PeriodKind::Day => per.start >= p.first && per.start <= p.last,
                                _ => p.periods.contains(&per),
                            };
                            current = Some((per, published));
                            published
                        }
                    };
                    if !published {
                        return;
                    }
                    rows.get_mut(&per).is_some_and(|m| match m.get(&r.key) {
                        Some(n) if *n == r.sums => m.remove(&r.key).is_some(),
                        _ => false,
                    })
                }
            };
            if same {
                stats.unchanged_rows += 1;
            } else {
                doomed.push(r.tid);
            }
        })?;
    }
    decoder.finish()?;
    tracing::debug!(
        table = t.table,
        doomed_rows = doomed.len(),
        unchanged = stats.unchanged_rows,
        "stored rows compared"
    );
    if doomed.len() > 0 {
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS publish_doomed_tid (tid tid) ON COMMIT DELETE ROWS; \
             TRUNCATE publish_doomed_tid",
        )
        .await
        .db("preparing the list of replaced rows")?;
        copy_in(
            tx,
            "COPY publish_doomed_tid (tid) FROM STDIN (FORMAT binary)",
            doomed.into_chunks(),
        )
        .await?;
        let sql = format!(
            "DELETE FROM {} WHERE ctid = ANY(ARRAY(SELECT tid FROM publish_doomed_tid))",
            t.table
        );
        tracing::debug!(table = t.table, "replaced keys copied");
        stats.deleted_rows += tx
            .execute(&sql, &[])
            .await
            .db(format!("replacing rows of {}", t.table))?;
        tracing::debug!(table = t.table, "replaced rows deleted");
    }

    // Copy in what is new or changed, a chunk at a time.
    let sql = format!(
        "COPY {} (period_kind, period_start, {}, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount) FROM STDIN (FORMAT binary)",
        t.table, t.key
    );
    let written = copy_in(tx, &sql, super::swap::sums_chunks(&rows)).await?;
    Ok(written)
}

pub(crate) fn top_rows(rows: &[TopRow]) -> Vec<Bytes> {
    let mut b = CopyBuf::new();
    for r in rows {
        b.row(6);
        b.text(r.period.kind.as_str());
        b.date(r.period.start);
        b.text(r.metric.as_str());
        b.i16(r.rank);
        b.i64(r.video_id);
        b.i64(r.value);
    }
    vec![b.finish()]
}

/// A run's day range and its week and month starts, as SQL parameters.
pub type Bounds = (
    chrono::NaiveDate,
    chrono::NaiveDate,
    Vec<chrono::NaiveDate>,
    Vec<chrono::NaiveDate>,
);

/// The bounds of the run `first..=last`, whose weeks and months are `periods`.
pub fn bounds(first: Day, last: Day, periods: &[Period]) -> Bounds {
    let starts = |kind| {
        periods
            .iter()
            .filter(|x| x.kind == kind)
            .map(|x| x.start.date())
            .collect()
    };
    (
        first.date(),
        last.date(),
        starts(PeriodKind::Week),
        starts(PeriodKind::Month),
    )
}

impl Publication<'_> {
    /// The day range and the week and month starts, as SQL parameters.
    pub(crate) fn bounds(&self) -> Bounds {
        bounds(self.first, self.last, self.periods)
    }
}

/// Replaces the stored rows of the publication's periods with its rows.
/// The caller commits (together with the job record).
pub async fn publish(tx: &Transaction<'_>, mut p: Publication<'_>) -> Result<WriteStats> {
    let mut stats = WriteStats::default();
    let t = std::time::Instant::now();
    let video = std::mem::take(&mut p.video);
    stats.video_rows = replace_sums(tx, &VIDEO, &p, video, &mut stats).await?;
    tracing::debug!(secs = t.elapsed().as_secs_f64(), "wrote settlement_video");
    let creator = std::mem::take(&mut p.creator);
    stats.creator_rows = replace_sums(tx, &CREATOR, &p, creator, &mut stats).await?;
    let (first, last, weeks, months) = p.bounds();
    // The new top 5s go through a scratch table so that only ranks whose
    // video or value changed are rewritten: an unchanged rerun writes none.
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS publish_top (LIKE top_videos) ON COMMIT DELETE ROWS",
    )
    .await
    .db("staging the new top 5s")?;
    copy_in(
        tx,
        "COPY publish_top (period_kind, period_start, metric, rank, video_id, value) FROM STDIN (FORMAT binary)",
        top_rows(p.top),
    )
    .await?;
    stats.deleted_rows += tx
        .execute(
            "DELETE FROM top_videos t WHERE ((t.period_kind = 'day' AND t.period_start BETWEEN $1 AND $2) \
             OR (t.period_kind = 'week' AND t.period_start = ANY($3)) \
             OR (t.period_kind = 'month' AND t.period_start = ANY($4))) \
             AND NOT EXISTS (SELECT 1 FROM publish_top n WHERE (n.period_kind, n.period_start, n.metric, n.rank, n.video_id, n.value) \
                             = (t.period_kind, t.period_start, t.metric, t.rank, t.video_id, t.value))",
            &[&first, &last, &weeks, &months],
        )
        .await
        .db("replacing rows of top_videos")?;
    stats.top_rows = tx
        .execute(
            "INSERT INTO top_videos SELECT n.* FROM publish_top n WHERE NOT EXISTS \
             (SELECT 1 FROM top_videos t WHERE (t.period_kind, t.period_start, t.metric, t.rank) \
              = (n.period_kind, n.period_start, n.metric, n.rank))",
            &[],
        )
        .await
        .db("writing rows of top_videos")?;
    Ok(stats)
}

/// One stored row of a sums table.
struct StoredRow<'a> {
    kind: &'a str,
    start: Day,
    key: i64,
    sums: Sums,
    tid: Tid,
}

/// Parses the binary COPY of stored sums rows (period_kind, period_start,
/// key and the six sums) whatever its chunking. It replaced tokio-postgres's
/// `BinaryCopyOutStream`, which builds a row object per row and expects one
/// row per message.
#[derive(Default)]
struct StoredRows {
    buf: Vec<u8>,
    header_done: bool,
    finished: bool,
}

/// Fields of a sums row as written; read back, the row's ctid follows.
const SUMS_FIELDS: i16 = 9;
const STORED_FIELDS: i16 = SUMS_FIELDS + 1;

impl StoredRows {
    fn feed(&mut self, chunk: &[u8], mut on_row: impl FnMut(StoredRow<'_>)) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        let b = &self.buf[..];
        let mut pos = 0;
        if !self.header_done {
            let Some(len) = crate::pipeline::read::header_len(b)? else {
                return Ok(());
            };
            pos = len;
            self.header_done = true;
        }
        let be_i32 = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let be_i64 = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        while !self.finished && pos + 2 <= b.len() {
            let fields = i16::from_be_bytes([b[pos], b[pos + 1]]);
            if fields == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if fields != STORED_FIELDS {
                return Err(Error::Protocol(format!(
                    "a stored result row has {fields} fields, not {STORED_FIELDS}"
                )));
            }
            // period_kind (text), period_start (date), 7 × int8, then ctid.
            let mut q = pos + 2;
            if q + 4 > b.len() {
                break;
            }
            let kind_len = be_i32(q);
            if kind_len < 0 {
                return Err(Error::Protocol(
                    "a stored result row has no period_kind".into(),
                ));
            }
            let kind_at = q + 4;
            q = kind_at + kind_len as usize;
            let tid_at = q + 8 + 7 * 12;
            let row_end = tid_at + 4 + 6;
            if row_end > b.len() {
                break;
            }
            if be_i32(q) != 4 || (0..7).any(|i| be_i32(q + 8 + i * 12) != 8) || be_i32(tid_at) != 6
            {
                return Err(Error::Protocol(
                    "unexpected layout of a stored result row (a NULL or a changed column type?)"
                        .into(),
                ));
            }
            let kind = std::str::from_utf8(&b[kind_at..q])
                .map_err(|_| Error::Protocol("a period_kind is not UTF-8".into()))?;
            let int = |i: usize| be_i64(q + 8 + i * 12 + 4);
            on_row(StoredRow {
                kind,
                start: Day(be_i32(q + 4) + PG_EPOCH_DAYS),
                key: int(0),
                sums: Sums {
                    views: int(1),
                    watch_seconds: int(2),
                    ad_views: int(3),
                    video_amount: int(4),
                    ad_amount: int(5),
                    total_amount: int(6),
                },
                tid: Tid {
                    block: u32::from_be_bytes(
                        b[tid_at + 4..tid_at + 8].try_into().expect("4 bytes"),
                    ),
                    line: u16::from_be_bytes([b[tid_at + 8], b[tid_at + 9]]),
                },
            });
            pos = row_end;
        }
        self.buf.drain(..pos);
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if !self.finished || !self.buf.is_empty() {
            return Err(Error::Protocol(
                "the COPY of stored result rows ended in the middle of a row".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Stored = (String, Day, i64, Sums, Tid);

    fn sample() -> Vec<Stored> {
        (0..40)
            .map(|i: i64| {
                let kind = ["day", "week", "month"][i as usize % 3].to_string();
                let sums = Sums {
                    views: i,
                    watch_seconds: -i * 7,
                    ad_views: i << 40,
                    video_amount: i64::MAX - i,
                    ad_amount: i64::MIN + i,
                    total_amount: i * 3,
                };
                let tid = Tid {
                    block: u32::MAX - i as u32 * 977,
                    line: i as u16 * 1_601,
                };
                (kind, Day(19_900 + i as i32), i * 1_000_003, sums, tid)
            })
            .collect()
    }

    /// Rows as the stored-rows COPY sends them: the sums row, then ctid.
    fn encode(rows: &[Stored]) -> Bytes {
        let mut b = CopyBuf::new();
        for (kind, day, key, s, tid) in rows {
            b.row(STORED_FIELDS);
            b.sums_fields(kind, *day, *key, s);
            b.tid(*tid);
        }
        b.finish()
    }

    /// Doomed addresses come out in push order, whatever the block and
    /// chunk boundaries, as one well-formed binary COPY payload.
    #[test]
    fn doomed_tids_copy_in_push_order() {
        let n = 2 * DOOMED_BLOCK + 12_345;
        let mut d = Doomed::default();
        let mut want = Vec::with_capacity(n);
        for i in 0..n {
            let tid = Tid {
                block: (i as u32).wrapping_mul(2_654_435_761),
                line: (i % 65_536) as u16,
            };
            d.push(tid);
            want.push(tid);
        }
        assert_eq!(d.len(), n);
        let chunks: Vec<Bytes> = d.into_chunks().collect();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut pos = crate::pipeline::read::header_len(&all)
            .unwrap()
            .expect("a whole header");
        let be32 = |at: usize| i32::from_be_bytes(all[at..at + 4].try_into().unwrap());
        let mut got = Vec::with_capacity(n);
        loop {
            let fields = i16::from_be_bytes([all[pos], all[pos + 1]]);
            pos += 2;
            if fields == -1 {
                break;
            }
            assert_eq!(fields, 1);
            assert_eq!(be32(pos), 6);
            got.push(Tid {
                block: be32(pos + 4) as u32,
                line: u16::from_be_bytes([all[pos + 8], all[pos + 9]]),
            });
            pos += 10;
        }
        assert_eq!(pos, all.len(), "nothing after the trailer");
        assert_eq!(got, want);
    }

    /// Stored rows parse the same whatever the chunking, and a cut stream
    /// or a row of another shape is an error.
    #[test]
    fn stored_rows_parse_in_every_split() {
        let rows = sample();
        let bytes = encode(&rows);
        for split in [1usize, 2, 5, 19, 20, 21, 97, 1000, bytes.len()] {
            let mut d = StoredRows::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                d.feed(chunk, |r| {
                    got.push((r.kind.to_string(), r.start, r.key, r.sums, r.tid))
                })
                .unwrap();
            }
            d.finish().unwrap();
            assert_eq!(got, rows, "split {split}");
        }

        let mut d = StoredRows::default();
        d.feed(&bytes[..bytes.len() - 5], |_| {}).unwrap();
        assert!(d.finish().is_err());

        let mut bad = CopyBuf::new();
        bad.row(3);
        bad.text("day");
        bad.date(Day(19_900));
        bad.i64(1);
        let mut d = StoredRows::default();
        assert!(d.feed(&bad.finish(), |_| {}).is_err());
    }
}
