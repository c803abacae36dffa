//! Publishing a big run by swapping tables. A run that rewrites most of the
//! result tables (a first `--all`, a restatement of everything) builds their
//! next versions on two connections of their own, each in its own
//! transaction: `COPY ... FREEZE` into a table created in that transaction
//! (no WAL at `wal_level=minimal`, no hint-bit rewrite later), the rows
//! outside the run copied over, and the primary key built once after the
//! load. The publishing transaction then only renames: it locks the four
//! published tables, puts the next versions in place of the current ones
//! and drops those, together with the ledger and the job record. Readers see
//! the old tables or the new, never a mix.
//!
//! A nightly run rewrites a sliver of the tables and keeps the difference
//! publish of [`super::publish`]; [`choose`] picks by size.
//!
//! A staged table left behind by a killed run is only a table named
//! `*_next`: the current tables are untouched until the swap commits, and
//! the next publish drops the leftover first.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Config, Transaction};

use super::publish::{copy_in, top_rows, Bounds, CopyBuf, SumsTable, WriteStats, CREATOR, VIDEO};
use super::settle::Block;
use super::top::TopRow;
use crate::error::{DbContext, Error, Result};
use crate::pipeline::cells::PackedRows;
use crate::pipeline::price::{PeriodRows, Sums};
use crate::rules::calendar::{Day, PeriodKind};

/// How a run publishes its rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// Swap when the run rewrites most of the tables, else the difference.
    #[default]
    Auto,
    /// Write only the rows that changed, in the publishing transaction.
    Diff,
    /// Build the tables anew on parallel connections and swap them in.
    Swap,
}

/// Below this many new rows the difference publish is cheap whatever the
/// tables hold (a nightly run of 100k videos writes ~300k).
pub const SWAP_MIN_ROWS: u64 = 250_000;

/// Above this many new day rows a run swaps even when its periods are
/// already stored: the difference publish holds all its result rows, and
/// an unchanged rerun over 1M videos (13.8M day rows, 19.65M rows in all)
/// peaked at 2178 MiB that way. A month of 100k videos (3.0M day rows)
/// still reruns by difference, writing nothing.
pub const HOLD_MAX_DAY_ROWS: u64 = 4_000_000;

/// The tables a swap replaces, and each one's primary key columns.
const SWAPPED: [(&str, &str); 3] = [
    ("settlement_video", "period_kind, period_start, video_id"),
    (
        "settlement_creator",
        "period_kind, period_start, creator_id",
    ),
    ("top_videos", "period_kind, period_start, metric, rank"),
];

/// The publish chosen, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub swap: bool,
    pub why: String,
}

/// Picks the publish for a run of `new_rows` day rows (its weeks, months
/// and creators add more): a swap when it writes at least
/// [`SWAP_MIN_ROWS`] rows, the stored rows it would have to carry over
/// (those outside its periods) are no more than it writes, and either it
/// has over [`HOLD_MAX_DAY_ROWS`] day rows or its own
/// periods hold fewer than half as many stored rows (which a rerun mostly
/// finds current); the difference otherwise, or when something hangs off the tables that a swap would
/// leave behind (a view, a trigger, a foreign key, a rule, a policy).
pub async fn choose(
    c: &Client,
    mode: PublishMode,
    new_rows: u64,
    bounds: &Bounds,
) -> Result<Choice> {
    if mode == PublishMode::Diff {
        return Ok(choice(false, "asked for (--publish diff)"));
    }
    if let Some(why) = blocker(c).await? {
        if mode == PublishMode::Swap {
            return Err(Error::Usage(format!(
                "--publish swap would drop {why}; publish with --publish diff (or auto), or remove it"
            )));
        }
        return Ok(choice(false, &format!("a swap would drop {why}")));
    }
    if mode == PublishMode::Swap {
        return Ok(choice(true, "asked for (--publish swap)"));
    }
    if new_rows < SWAP_MIN_ROWS {
        return Ok(choice(
            false,
            &format!("{new_rows} new day rows, under {SWAP_MIN_ROWS}"),
        ));
    }
    let (first, last, weeks, months) = bounds;
    // Both counts stop at their limits: a nightly run must not scan the
    // tables to learn that they are big.
    let count = |inside: bool, limit: u64| {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM settlement_video s WHERE {}{IN_RUN} LIMIT $5) k",
            if inside { "" } else { "NOT " }
        );
        let limit = limit as i64 + 1;
        async move {
            c.query_one(&sql, &[first, last, weeks, months, &limit])
                .await
                .db("counting the stored result rows")
                .map(|r| r.get::<_, i64>(0) as u64)
        }
    };
    let kept = count(false, new_rows).await?;
    if kept > new_rows {
        return Ok(choice(
            false,
            &format!("more rows kept than written ({new_rows} day rows written)"),
        ));
    }
    // A difference holds every result row to compare them with the stored
    // ones; a swap streams them.
    if new_rows > HOLD_MAX_DAY_ROWS {
        return Ok(choice(
            true,
            &format!(
                "{new_rows} new day rows, over {HOLD_MAX_DAY_ROWS}: too many to hold for a difference"
            ),
        ));
    }
    // Stored rows of the run's own periods are mostly current on a rerun,
    // and the difference then writes next to nothing.
    let current = count(true, new_rows / 2).await?;
    Ok(if current > new_rows / 2 {
        choice(
            false,
            &format!("{new_rows} new day rows, most of their periods already stored"),
        )
    } else {
        choice(
            true,
            &format!("{new_rows} new day rows, {kept} kept, {current} replaced"),
        )
    })
}

fn choice(swap: bool, why: &str) -> Choice {
    Choice {
        swap,
        why: why.to_string(),
    }
}

/// A row of the run's periods, with `$1..$4` the publication's bounds.
const IN_RUN: &str = "((s.period_kind = 'day' AND s.period_start BETWEEN $1 AND $2) \
     OR (s.period_kind = 'week' AND s.period_start = ANY($3)) \
     OR (s.period_kind = 'month' AND s.period_start = ANY($4)))";

/// What depends on a swapped table by its identity rather than its name.
async fn blocker(c: &Client) -> Result<Option<String>> {
    let tables: Vec<&str> = SWAPPED.iter().map(|t| t.0).collect();
    let row = c
        .query_opt(
            "SELECT c.relname::text || ': ' || concat_ws(', ', \
                 CASE WHEN c.relhastriggers THEN 'a trigger' END, \
                 CASE WHEN c.relhasrules THEN 'a rule' END, \
                 CASE WHEN c.relrowsecurity THEN 'row security' END, \
                 CASE WHEN c.relhassubclass THEN 'a child table' END, \
                 CASE WHEN EXISTS (SELECT 1 FROM pg_depend d WHERE d.refobjid = c.oid \
                                   AND d.classid = 'pg_rewrite'::regclass) THEN 'a view' END, \
                 CASE WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = c.oid) \
                      THEN 'a foreign key' END) \
             FROM pg_class c \
             WHERE c.oid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t) \
               AND (c.relhastriggers OR c.relhasrules OR c.relrowsecurity OR c.relhassubclass \
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.refobjid = c.oid \
                               AND d.classid = 'pg_rewrite'::regclass) \
                    OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = c.oid)) \
             ORDER BY 1 LIMIT 1",
            &[&tables],
        )
        .await
        .db("checking what depends on the result tables")?;
    Ok(row.map(|r| r.get(0)))
}

/// Where a streamed settlement sends the rows of a swap: binary COPY
/// chunks of the video and creator rows, and at the end the top rows,
/// which with `video_done` also say that the rows are complete (a staging
/// transaction that never hears so rolls back).
pub struct Feeds {
    video: mpsc::Sender<Bytes>,
    creator: mpsc::Sender<Bytes>,
    video_done: Option<oneshot::Sender<()>>,
    top_done: Option<oneshot::Sender<Vec<TopRow>>>,
    bufs: [CopyBuf; 2],
    top: Vec<TopRow>,
    /// Weeks and months, held packed until the days are sent.
    later: Vec<Held>,
    failed: bool,
}

impl Feeds {
    /// Sends a period's rows on; false once a staging connection has
    /// failed, when there is no point settling further. Days go at once;
    /// weeks and months wait for the end, so that each table's rows arrive
    /// in primary-key order ('day' < 'month' < 'week'): keying the video
    /// table took 5.9 s instead of about 3 with the weeks among the days.
    pub fn send(&mut self, b: Block) -> bool {
        self.top.extend_from_slice(&b.top);
        let (kind, start) = (b.period.kind.as_str(), b.period.start);
        if b.period.kind == PeriodKind::Day {
            self.write(kind, start, 0, b.video.into_iter())
                && self.write(kind, start, 1, b.creator.into_iter())
        } else {
            // Held as they were, these took 217 MiB at 1M videos.
            self.later.push(Held {
                kind,
                start,
                rows: [&b.video, &b.creator].map(|rows| {
                    let mut packed = PackedRows::default();
                    rows.iter()
                        .for_each(|(id, s)| packed.push(*id, &s.to_array()));
                    packed
                }),
            });
            true
        }
    }

    /// Writes rows to the video (`i` = 0) or creator (1) feed.
    fn write(
        &mut self,
        kind: &str,
        start: Day,
        i: usize,
        rows: impl Iterator<Item = (i64, Sums)>,
    ) -> bool {
        for (id, s) in rows {
            self.bufs[i].sums_row(kind, start, id, &s);
            if let Some(c) = self.bufs[i].take_chunk() {
                let to = if i == 0 { &self.video } else { &self.creator };
                if to.blocking_send(c).is_err() {
                    self.failed = true;
                    return false;
                }
            }
        }
        true
    }

    /// Sends the weeks and months, flushes the last chunks and says the
    /// rows are complete.
    fn finish(mut self) {
        let mut later = std::mem::take(&mut self.later);
        later.sort_by_key(|h| (h.kind, h.start));
        for h in later {
            for (i, rows) in h.rows.iter().enumerate() {
                let rows = rows.iter().map(|(id, a)| (id, Sums::from_array(&a)));
                if self.failed || !self.write(h.kind, h.start, i, rows) {
                    return;
                }
            }
        }
        let [v, c] = std::mem::replace(&mut self.bufs, [CopyBuf::new(), CopyBuf::new()]);
        if self.video.blocking_send(v.finish()).is_ok()
            && self.creator.blocking_send(c.finish()).is_ok()
        {
            let (vd, td) = (self.video_done.take(), self.top_done.take());
            vd.map(|d| d.send(()));
            td.map(|d| d.send(std::mem::take(&mut self.top)));
        }
    }
}

/// A week or month held back: its video and creator rows.
struct Held {
    kind: &'static str,
    start: Day,
    rows: [PackedRows<6>; 2],
}

/// Builds the next versions of the three result tables on two connections
/// at once, from the rows `settle` sends to its [`Feeds`] on a thread of
/// its own (it settles while the rows are copied) and the stored rows
/// outside the run, and commits them as `*_next`. Nothing readers see
/// changes until [`swap`]. Returns what `settle` returned.
pub async fn stage<T: Send + 'static>(
    config: &Config,
    bounds: &Bounds,
    settle: impl FnOnce(&mut Feeds) -> T + Send + 'static,
) -> Result<(WriteStats, T)> {
    let mut a = crate::db::connect(config).await?;
    let mut b = crate::db::connect(config).await?;
    // A few chunks in flight each way: settling waits for the slower COPY
    // rather than holding rows.
    let (video_tx, video_rx) = mpsc::channel(4);
    let (creator_tx, creator_rx) = mpsc::channel(4);
    let (video_done, video_ok) = oneshot::channel();
    let (top_done, top_ok) = oneshot::channel();
    let t = std::time::Instant::now();
    let settler = tokio::task::spawn_blocking(move || {
        let mut feeds = Feeds {
            video: video_tx,
            creator: creator_tx,
            video_done: Some(video_done),
            top_done: Some(top_done),
            bufs: [CopyBuf::new(), CopyBuf::new()],
            top: Vec::new(),
            later: Vec::new(),
            failed: false,
        };
        let out = settle(&mut feeds);
        feeds.finish();
        tracing::debug!(secs = t.elapsed().as_secs_f64(), "settled");
        out
    });
    let unfinished = || {
        Error::Tool("settling stopped before its rows were complete; nothing was published".into())
    };
    let video_side = async {
        let tx = begin_stage(&mut a, VIDEO.table).await?;
        let Some((written, ())) = copy_from(&tx, &sums_copy(&VIDEO), video_rx, video_ok).await?
        else {
            return Ok(None);
        };
        tracing::debug!(secs = t.elapsed().as_secs_f64(), "video rows copied");
        let replaced = finish_stage(tx, VIDEO.table, SWAPPED[0].1, bounds).await?;
        tracing::debug!(secs = t.elapsed().as_secs_f64(), "video table staged");
        Ok::<_, Error>(Some(Staged { written, replaced }))
    };
    let other_side = async {
        let tx = begin_stage(&mut b, CREATOR.table).await?;
        let Some((written, top)) = copy_from(&tx, &sums_copy(&CREATOR), creator_rx, top_ok).await?
        else {
            return Ok(None);
        };
        let replaced = finish_stage(tx, CREATOR.table, SWAPPED[1].1, bounds).await?;
        let c = Staged { written, replaced };
        let t = stage_top(&mut b, &top, bounds).await?;
        Ok::<_, Error>(Some((c, t)))
    };
    let settled = async {
        settler
            .await
            .map_err(|e| Error::Tool(format!("settling failed: {e}; nothing was published")))
    };
    // All three end (a failed side stops the settling, which ends the
    // other side's feed, abandoned). The cause is told: a failed settle,
    // else a failed side.
    let (v, other, out) = tokio::join!(video_side, other_side, settled);
    let out = out?;
    let (Some(v), Some((c, t))) = (v?, other?) else {
        return Err(unfinished());
    };
    let stats = WriteStats {
        video_rows: v.written,
        creator_rows: c.written,
        top_rows: t.written,
        deleted_rows: v.replaced + c.replaced + t.replaced,
        unchanged_rows: 0,
        swapped: true,
    };
    Ok((stats, out))
}

/// Runs the COPY `sql` with the chunks from `rx` until its sender is gone,
/// and ends it if `done` then says the rows were complete; otherwise it is
/// abandoned (the server discards it) and `None` returned.
async fn copy_from<T>(
    tx: &Transaction<'_>,
    sql: &str,
    mut rx: mpsc::Receiver<Bytes>,
    mut done: oneshot::Receiver<T>,
) -> Result<Option<(u64, T)>> {
    use futures_util::SinkExt;
    let sink = tx
        .copy_in::<_, Bytes>(sql)
        .await
        .db(format!("starting {sql}"))?;
    futures_util::pin_mut!(sink);
    while let Some(c) = rx.recv().await {
        sink.send(c).await.db(format!("writing {sql}"))?;
    }
    // The settler says so before it lets go of the feed.
    let Ok(out) = done.try_recv() else {
        return Ok(None);
    };
    let n = sink.finish().await.db(format!("finishing {sql}"))?;
    Ok(Some((n, out)))
}

fn sums_copy(t: &SumsTable) -> String {
    format!(
        "COPY {}_next (period_kind, period_start, {}, views, watch_seconds, ad_views, video_amount, ad_amount, total_amount) \
         FROM STDIN (FORMAT binary, FREEZE)",
        t.table, t.key
    )
}

/// One staged table: rows the run wrote, and current rows it replaces.
struct Staged {
    written: u64,
    replaced: u64,
}

/// Opens the staging transaction of `table`: a fresh `table_next`, created
/// here so that COPY may FREEZE it.
async fn begin_stage<'c>(c: &'c mut Client, table: &str) -> Result<Transaction<'c>> {
    let tx = c.transaction().await.db("starting a staging transaction")?;
    tx.batch_execute(&format!(
        "SET LOCAL synchronous_commit = off; \
         DROP TABLE IF EXISTS {table}_next; \
         CREATE TABLE {table}_next (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)"
    ))
    .await
    .db(format!("creating {table}_next"))?;
    Ok(tx)
}

/// Carries the current rows outside the run over, keys and analyses the
/// staged table, and commits it. Returns the current rows it replaces.
async fn finish_stage(tx: Transaction<'_>, table: &str, key: &str, bounds: &Bounds) -> Result<u64> {
    let (first, last, weeks, months) = bounds;
    let kept = tx
        .execute(
            &format!("INSERT INTO {table}_next SELECT s.* FROM {table} s WHERE NOT {IN_RUN}"),
            &[first, last, weeks, months],
        )
        .await
        .db(format!(
            "carrying the rows outside the run into {table}_next"
        ))?;
    let before: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .db(format!("counting {table}"))?
        .get(0);
    tx.batch_execute(&format!(
        "ALTER TABLE {table}_next ADD CONSTRAINT {table}_next_pkey PRIMARY KEY ({key}); \
         ANALYZE {table}_next"
    ))
    .await
    .db(format!(
        "keying {table}_next (a duplicate key is a bug in the engine)"
    ))?;
    tx.commit().await.db(format!("committing {table}_next"))?;
    Ok((before as u64).saturating_sub(kept))
}

async fn stage_top(c: &mut Client, top: &[super::top::TopRow], bounds: &Bounds) -> Result<Staged> {
    let tx = begin_stage(c, "top_videos").await?;
    let written = copy_in(
        &tx,
        "COPY top_videos_next (period_kind, period_start, metric, rank, video_id, value) FROM STDIN (FORMAT binary, FREEZE)",
        top_rows(top),
    )
    .await?;
    let replaced = finish_stage(tx, "top_videos", SWAPPED[2].1, bounds).await?;
    Ok(Staged { written, replaced })
}

/// The binary COPY of `rows`, a chunk at a time, in primary-key order:
/// periods by the key's text kind ('day' < 'month' < 'week', not the enum's
/// day, week, month) and start, each period's rows by id. A primary key
/// built on sorted input skips most of its sort (PostgreSQL's quicksort
/// checks for sorted runs first).
pub(crate) fn sums_chunks(rows: &PeriodRows) -> impl Iterator<Item = bytes::Bytes> + '_ {
    let mut periods: Vec<_> = rows.iter().collect();
    periods.sort_by_key(|(p, _)| (p.kind.as_str(), p.start));
    let mut rows = periods.into_iter().flat_map(|(per, by_id)| {
        let mut ids: Vec<(&i64, &Sums)> = by_id.iter().collect();
        ids.sort_unstable_by_key(|(id, _)| **id);
        ids.into_iter().map(move |(id, s)| (*per, *id, *s))
    });
    let mut b = Some(CopyBuf::new());
    std::iter::from_fn(move || {
        let buf = b.as_mut()?;
        for (per, id, s) in rows.by_ref() {
            buf.sums_row(per.kind.as_str(), per.start, id, &s);
            if let Some(c) = buf.take_chunk() {
                return Some(c);
            }
        }
        b.take().map(CopyBuf::finish)
    })
}

/// Puts the staged tables in place of the current ones inside `tx`, the
/// publishing transaction. It first takes every published table (the
/// ledger too) exclusively: a reader that has touched any of them holds
/// the swap back until it ends, so what it reads stays of one version.
/// Grants on the current tables are carried to the new ones.
pub async fn swap(tx: &Transaction<'_>) -> Result<()> {
    lock_for_swap(tx).await?;
    let mut missing = Vec::new();
    for (t, _) in SWAPPED {
        let there: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{t}_next")],
            )
            .await
            .db("finding the staged tables")?
            .get(0);
        if !there {
            missing.push(format!("{t}_next"));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Tool(format!(
            "the staged table(s) {} vanished before the swap (dropped by hand?); nothing was published, run again",
            missing.join(", ")
        )));
    }
    for (t, _) in SWAPPED {
        tx.batch_execute(&format!(
            "DO $$ DECLARE g record; BEGIN \
               FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable \
                        FROM pg_class c, aclexplode(c.relacl) a \
                        WHERE c.oid = '{t}'::regclass AND a.grantee <> c.relowner LOOP \
                 EXECUTE format('GRANT %s ON {t}_next TO %s%s', g.privilege_type, \
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END, \
                   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END); \
               END LOOP; END $$; \
             ALTER TABLE {t} RENAME TO {t}_prev; \
             ALTER TABLE {t}_prev RENAME CONSTRAINT {t}_pkey TO {t}_prev_pkey; \
             ALTER TABLE {t}_next RENAME TO {t}; \
             ALTER TABLE {t} RENAME CONSTRAINT {t}_next_pkey TO {t}_pkey; \
             DROP TABLE {t}_prev"
        ))
        .await
        .db(format!("swapping in the new {t}"))?;
    }
    Ok(())
}

/// The published tables in the one order both the swap and `READ_LOCK`
/// lock them: the results, then the ledger (see `lock_for_swap`).
macro_rules! published_in_lock_order {
    () => {
        "settlement_video, settlement_creator, top_videos, settled_day"
    };
}

/// How long the swap keeps trying to lock the tables before it gives up.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes the four published tables exclusively. A reader's statement takes
/// them one at a time in its own order, so waiting for all of them could
/// deadlock with it, and the server would then cancel one side (perhaps
/// the publish). Each try waits at most 200 ms, less than the server's
/// deadlock check, then lets go of everything and tries again; meanwhile
/// new readers queue behind the request, so the tables drain. The order is
/// `READ_LOCK`'s too, and a query's that names the results before the ledger:
/// settled_day first livelocked against a reader looping over such a query
/// (each try caught it holding the results and waiting for settled_day).
async fn lock_for_swap(tx: &Transaction<'_>) -> Result<()> {
    let t = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        let tried = tx
            .batch_execute(
                concat!(
                    "SAVEPOINT swap_lock; SET LOCAL lock_timeout = '200ms'; LOCK TABLE ",
                    published_in_lock_order!(),
                    " IN ACCESS EXCLUSIVE MODE; SET LOCAL lock_timeout = 0; RELEASE SAVEPOINT swap_lock"
                ),
            )
            .await;
        match tried {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT swap_lock")
                    .await
                    .db("retrying the swap's lock")?;
                if t.elapsed() > LOCK_PATIENCE {
                    return Err(Error::Tool(format!(
                        "readers kept the result tables busy for {} s, so the swap could not lock them; \
                         nothing was published: run again when they are quieter, or with --publish diff",
                        LOCK_PATIENCE.as_secs()
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e).db("locking the result tables for the swap"),
        }
    }
}

/// Drops staged tables a killed run left behind (the caller holds the run
/// lock, so no publish is staging now).
pub async fn drop_leftovers(c: &Client) -> Result<()> {
    c.batch_execute(
        "DROP TABLE IF EXISTS settlement_video_next, settlement_creator_next, top_videos_next",
    )
    .await
    .db("dropping staged tables a killed run left")
}

/// The statement a reader's REPEATABLE READ transaction should begin with
/// to read several result tables as of one publish: it waits out a swap in
/// progress, and holds the next one back until the transaction ends (its
/// snapshot is taken after the locks).
pub const READ_LOCK: &str = concat!(
    "LOCK TABLE ",
    published_in_lock_order!(),
    " IN ACCESS SHARE MODE"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::calendar::{Day, Period, PeriodKind};

    /// Rows come out sorted by period, then key, as one binary COPY.
    #[test]
    fn sums_chunks_sort_each_period_by_key() {
        let mut rows = PeriodRows::new();
        for (start, ids) in [(20_000, vec![9_i64, 3, 7]), (19_990, vec![5, 1])] {
            let per = Period {
                kind: PeriodKind::Day,
                start: Day(start),
            };
            let m = rows.entry(per).or_default();
            for id in ids {
                m.insert(
                    id,
                    Sums {
                        views: id,
                        ..Default::default()
                    },
                );
            }
        }
        let all: Vec<u8> = sums_chunks(&rows).flat_map(|c| c.to_vec()).collect();
        let mut pos = crate::pipeline::read::header_len(&all).unwrap().unwrap();
        let mut keys = Vec::new();
        loop {
            let fields = i16::from_be_bytes([all[pos], all[pos + 1]]);
            pos += 2;
            if fields == -1 {
                break;
            }
            assert_eq!(fields, 9);
            // kind (4 + 3), start (4 + 4), then the key.
            pos += 4 + 3 + 4 + 4 + 4;
            keys.push(i64::from_be_bytes(all[pos..pos + 8].try_into().unwrap()));
            pos += 8 + 6 * 12;
        }
        assert_eq!(pos, all.len());
        assert_eq!(keys, [1, 5, 3, 7, 9]);
    }
}
