//! Writing results: binary COPY into the result tables inside the one
//! transaction that publishes the run, so readers see the old rows or the
//! new ones, never a mix.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Transaction;

use crate::error::{DbContext, Result};
use crate::rank::TopRow;
use crate::rules::calendar::{Day, Period, PeriodKind, PG_EPOCH_DAYS};
use crate::settle::{PeriodRows, Sums};

/// Rows written, per table.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct WriteStats {
    pub video_rows: u64,
    pub creator_rows: u64,
    pub top_rows: u64,
    pub deleted_rows: u64,
}

/// What one run publishes: every row of the days `first..=last` and of the
/// touched weeks and months, replacing what was stored for them.
pub struct Publication<'a> {
    pub first: Day,
    pub last: Day,
    pub periods: &'a [Period],
    pub video: &'a PeriodRows,
    pub creator: &'a PeriodRows,
    pub top: &'a [TopRow],
}

/// Binary COPY buffer builder.
struct CopyBuf {
    buf: BytesMut,
}

impl CopyBuf {
    fn new() -> Self {
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
    fn take_chunk(&mut self) -> Option<Bytes> {
        (self.buf.len() >= 1 << 20).then(|| self.buf.split().freeze())
    }
    fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

async fn copy_in(tx: &Transaction<'_>, sql: &str, chunks: Vec<Bytes>) -> Result<u64> {
    let t = std::time::Instant::now();
    let n = copy_in_inner(tx, sql, chunks).await?;
    tracing::debug!(sql, rows = n, secs = t.elapsed().as_secs_f64(), "copied");
    Ok(n)
}

async fn copy_in_inner(tx: &Transaction<'_>, sql: &str, chunks: Vec<Bytes>) -> Result<u64> {
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

fn sums_rows(rows: &PeriodRows) -> Vec<Bytes> {
    let mut b = CopyBuf::new();
    let mut chunks = Vec::new();
    for (p, by_id) in rows {
        let mut ids: Vec<(&i64, &Sums)> = by_id.iter().collect();
        ids.sort_unstable_by_key(|(id, _)| **id);
        for (id, s) in ids {
            b.row(9);
            b.text(p.kind.as_str());
            b.date(p.start);
            b.i64(*id);
            for v in [
                s.views,
                s.watch_seconds,
                s.ad_views,
                s.video_amount,
                s.ad_amount,
                s.total_amount,
            ] {
                b.i64(v);
            }
            if let Some(c) = b.take_chunk() {
                chunks.push(c);
            }
        }
    }
    chunks.push(b.finish());
    chunks
}

fn top_rows(rows: &[TopRow]) -> Vec<Bytes> {
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

/// Replaces the stored rows of the publication's periods with its rows.
/// The caller commits (together with the job record).
pub async fn publish(tx: &Transaction<'_>, p: &Publication<'_>) -> Result<WriteStats> {
    let first = p.first.date();
    let last = p.last.date();
    let weeks: Vec<chrono::NaiveDate> = p
        .periods
        .iter()
        .filter(|x| x.kind == PeriodKind::Week)
        .map(|x| x.start.date())
        .collect();
    let months: Vec<chrono::NaiveDate> = p
        .periods
        .iter()
        .filter(|x| x.kind == PeriodKind::Month)
        .map(|x| x.start.date())
        .collect();
    let mut stats = WriteStats::default();
    for table in ["settlement_video", "settlement_creator", "top_videos"] {
        let sql = format!(
            "DELETE FROM {table} WHERE (period_kind = 'day' AND period_start BETWEEN $1 AND $2) \
             OR (period_kind = 'week' AND period_start = ANY($3)) \
             OR (period_kind = 'month' AND period_start = ANY($4))"
        );
        let t = std::time::Instant::now();
        stats.deleted_rows += tx
            .execute(&sql, &[&first, &last, &weeks, &months])
            .await
            .db(format!("replacing rows of {table}"))?;
        tracing::debug!(
            table,
            secs = t.elapsed().as_secs_f64(),
            "deleted replaced rows"
        );
    }
    stats.video_rows = copy_in(
        tx,
        "COPY settlement_video (period_kind, period_start, video_id, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount) FROM STDIN (FORMAT binary)",
        sums_rows(p.video),
    )
    .await?;
    stats.creator_rows = copy_in(
        tx,
        "COPY settlement_creator (period_kind, period_start, creator_id, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount) FROM STDIN (FORMAT binary)",
        sums_rows(p.creator),
    )
    .await?;
    stats.top_rows = copy_in(
        tx,
        "COPY top_videos (period_kind, period_start, metric, rank, video_id, value) FROM STDIN (FORMAT binary)",
        top_rows(p.top),
    )
    .await?;
    Ok(stats)
}
