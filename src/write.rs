//! Writing results: binary COPY into the result tables inside the one
//! transaction that publishes the run, so readers see the old rows or the
//! new ones, never a mix.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
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
    /// Stored rows that already held the new values and were left alone.
    pub unchanged_rows: u64,
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
struct SumsTable {
    table: &'static str,
    key: &'static str,
}

const VIDEO: SumsTable = SumsTable {
    table: "settlement_video",
    key: "video_id",
};
const CREATOR: SumsTable = SumsTable {
    table: "settlement_creator",
    key: "creator_id",
};

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
    let cols = "period_kind, period_start, {key}, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount"
        .replace("{key}", t.key);
    let select = format!(
        "COPY (SELECT {cols} FROM {table} WHERE period_kind = 'day' AND period_start BETWEEN '{first}' AND '{last}' \
         UNION ALL \
         SELECT {s_cols} FROM unnest('{{{kinds}}}'::text[], '{{{starts}}}'::date[]) AS k(kind, start) \
         JOIN {table} s ON s.period_kind = k.kind AND s.period_start = k.start) TO STDOUT (FORMAT binary)",
        s_cols = cols
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        table = t.table,
        kinds = kinds.join(","),
        starts = starts.join(","),
    );
    let ctx = format!("reading the stored rows of {}", t.table);
    let stream = tx.copy_out(select.as_str()).await.db(ctx.clone())?;
    let stream = BinaryCopyOutStream::new(
        stream,
        &[
            Type::TEXT,
            Type::DATE,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
    );
    futures_util::pin_mut!(stream);

    // Rows already stored as they are leave `rows`: what stays is written.
    let mut doomed = CopyBuf::new();
    let mut doomed_rows = 0u64;
    while let Some(row) = stream.next().await {
        let row = row.db(ctx.clone())?;
        let kind: &str = row.get(0);
        let start: chrono::NaiveDate = row.get(1);
        let key: i64 = row.get(2);
        let stored = Sums {
            views: row.get(3),
            watch_seconds: row.get(4),
            ad_views: row.get(5),
            video_amount: row.get(6),
            ad_amount: row.get(7),
            total_amount: row.get(8),
        };
        let period = PeriodKind::parse(kind).map(|kind| Period {
            kind,
            start: Day::from_date(start),
        });
        let published = match period {
            Some(Period {
                kind: PeriodKind::Day,
                start,
            }) => start >= p.first && start <= p.last,
            Some(per) => p.periods.contains(&per),
            None => true,
        };
        if !published {
            continue;
        }
        let current =
            period
                .and_then(|per| rows.get_mut(&per))
                .is_some_and(|m| match m.get(&key) {
                    Some(n) if *n == stored => m.remove(&key).is_some(),
                    _ => false,
                });
        match current {
            true => stats.unchanged_rows += 1,
            false => {
                doomed.row(3);
                doomed.text(kind);
                doomed.date(Day::from_date(start));
                doomed.i64(key);
                doomed_rows += 1;
            }
        }
    }
    if doomed_rows > 0 {
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS publish_doomed (period_kind text, period_start date, id bigint) ON COMMIT DELETE ROWS; \
             TRUNCATE publish_doomed",
        )
        .await
        .db("preparing the list of replaced rows")?;
        copy_in(
            tx,
            "COPY publish_doomed (period_kind, period_start, id) FROM STDIN (FORMAT binary)",
            vec![doomed.finish()],
        )
        .await?;
        let sql = format!(
            "DELETE FROM {table} t USING publish_doomed d \
             WHERE t.period_kind = d.period_kind AND t.period_start = d.period_start AND t.{key} = d.id",
            table = t.table,
            key = t.key
        );
        stats.deleted_rows += tx
            .execute(&sql, &[])
            .await
            .db(format!("replacing rows of {}", t.table))?;
    }

    // Copy in what is new or changed, a chunk at a time.
    let sql = format!(
        "COPY {} (period_kind, period_start, {}, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount) FROM STDIN (FORMAT binary)",
        t.table, t.key
    );
    let sink = tx
        .copy_in::<_, Bytes>(sql.as_str())
        .await
        .db(format!("starting {sql}"))?;
    futures_util::pin_mut!(sink);
    let mut b = CopyBuf::new();
    for (per, by_id) in &rows {
        let mut ids: Vec<(&i64, &Sums)> = by_id.iter().collect();
        ids.sort_unstable_by_key(|(id, _)| **id);
        for (id, s) in ids {
            b.row(9);
            b.text(per.kind.as_str());
            b.date(per.start);
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
                sink.send(c).await.db(format!("writing {sql}"))?;
            }
        }
    }
    sink.send(b.finish()).await.db(format!("writing {sql}"))?;
    let written = sink.finish().await.db(format!("finishing {sql}"))?;
    Ok(written)
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

impl Publication<'_> {
    /// The day range and the week and month starts, as SQL parameters.
    fn bounds(
        &self,
    ) -> (
        chrono::NaiveDate,
        chrono::NaiveDate,
        Vec<chrono::NaiveDate>,
        Vec<chrono::NaiveDate>,
    ) {
        let starts = |kind| {
            self.periods
                .iter()
                .filter(|x| x.kind == kind)
                .map(|x| x.start.date())
                .collect()
        };
        (
            self.first.date(),
            self.last.date(),
            starts(PeriodKind::Week),
            starts(PeriodKind::Month),
        )
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
    stats.deleted_rows += tx
        .execute(
            "DELETE FROM top_videos WHERE (period_kind = 'day' AND period_start BETWEEN $1 AND $2) \
             OR (period_kind = 'week' AND period_start = ANY($3)) \
             OR (period_kind = 'month' AND period_start = ANY($4))",
            &[&first, &last, &weeks, &months],
        )
        .await
        .db("replacing rows of top_videos")?;
    stats.top_rows = copy_in(
        tx,
        "COPY top_videos (period_kind, period_start, metric, rank, video_id, value) FROM STDIN (FORMAT binary)",
        top_rows(p.top),
    )
    .await?;
    Ok(stats)
}
