//! Changes to settled input since it was settled, as the triggers of
//! migration 0007 record them: plays inserted into, deleted from or
//! corrected on settled days, and videos added, removed or given another
//! uploader or duration. A run settles again from the earliest settled day
//! they touch, and clears them when it publishes.

use tokio_postgres::GenericClient;

use crate::error::{DbContext, Result};
use crate::rules::calendar::Day;

/// What changed on one settled day.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DayChange {
    pub day: Day,
    pub inserted: i64,
    pub deleted: i64,
    /// Rows updated in place (counted on the day of their old version).
    pub updated: i64,
    /// Rows an update moved here from another day.
    pub moved_in: i64,
}

impl DayChange {
    /// Rows more (positive) or fewer (negative) than when it was settled.
    pub fn net(&self) -> i64 {
        self.inserted + self.moved_in - self.deleted
    }
}

/// A video whose change reaches settled days.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VideoChange {
    pub video_id: i64,
    /// INSERT, UPDATE or DELETE.
    pub op: String,
    /// The earliest settled day with a play of it.
    pub from: Day,
}

/// Pending changes to settled input, as `c`'s snapshot sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputChanges {
    pub days: Vec<DayChange>,
    pub videos: Vec<VideoChange>,
    /// The log was truncated: every settled day changed.
    pub truncated: bool,
}

impl InputChanges {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.videos.is_empty() && !self.truncated
    }

    /// The earliest settled day whose input changed.
    pub fn earliest(&self, settled: Option<(Day, Day)>) -> Option<Day> {
        let from_days = self.days.iter().map(|d| d.day);
        let from_videos = self.videos.iter().map(|v| v.from);
        let truncated = self.truncated.then(|| settled.map(|s| s.0)).flatten();
        from_days.chain(from_videos).chain(truncated).min()
    }
}

/// Reads the pending changes that touch `settled` days.
pub async fn pending(c: &impl GenericClient, settled: Option<(Day, Day)>) -> Result<InputChanges> {
    let mut out = InputChanges::default();
    let Some((lo, hi)) = settled else {
        return Ok(out);
    };
    let rows = c
        .query(
            "SELECT c.day, \
                    coalesce(sum(c.rows_in) FILTER (WHERE c.op = 'INSERT'), 0)::int8, \
                    coalesce(sum(c.rows_out) FILTER (WHERE c.op = 'DELETE'), 0)::int8, \
                    coalesce(sum(c.rows_out) FILTER (WHERE c.op = 'UPDATE'), 0)::int8, \
                    coalesce(sum(c.rows_in) FILTER (WHERE c.op = 'UPDATE'), 0)::int8 \
             FROM input_change c JOIN settled_day s ON s.day = c.day \
             WHERE c.source = 'viewing_log' GROUP BY c.day ORDER BY c.day",
            &[],
        )
        .await
        .db("reading the changes to settled plays")?;
    for r in rows {
        let (inserted, deleted, updated_out, updated_in): (i64, i64, i64, i64) =
            (r.get(1), r.get(2), r.get(3), r.get(4));
        // An update's old and new versions on one day are one changed row.
        let updated = updated_out.min(updated_in);
        out.days.push(DayChange {
            day: Day::from_date(r.get(0)),
            inserted,
            deleted: deleted + (updated_out - updated),
            updated,
            moved_in: updated_in - updated,
        });
    }
    out.truncated = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM input_change WHERE op = 'TRUNCATE')",
            &[],
        )
        .await
        .db("reading the changes to settled plays")?
        .get(0);
    out.videos = video_changes(c, lo, hi).await?;
    Ok(out)
}

/// Videos whose change reaches a settled day. Removed or changed videos
/// are looked up in the log (a scan, but only when such a change is
/// pending); added ones matter only where plays of them were rejected as
/// unknown, which the rejected rows say.
async fn video_changes(c: &impl GenericClient, lo: Day, hi: Day) -> Result<Vec<VideoChange>> {
    let (lo, hi) = (lo.date(), hi.date());
    let rows = c
        .query(
            "WITH v AS (SELECT video_id, string_agg(DISTINCT op, ',') AS op, \
                               bool_or(op <> 'INSERT') AS scan \
                        FROM input_change WHERE source = 'videos' GROUP BY video_id), \
             plays AS ( \
                 SELECT l.video_id, min(l.started_at) AS first FROM viewing_log l \
                 WHERE l.video_id IN (SELECT video_id FROM v WHERE scan) \
                   AND l.started_at >= ($1::date::timestamp AT TIME ZONE 'Asia/Seoul') \
                   AND l.started_at < (($2::date + 1)::timestamp AT TIME ZONE 'Asia/Seoul') \
                 GROUP BY l.video_id \
                 UNION ALL \
                 SELECT r.video_id, min(r.started_at) FROM rejected_play r \
                 WHERE r.reason = 'unknown_video' \
                   AND r.video_id IN (SELECT video_id FROM v WHERE NOT scan) \
                   AND r.started_at >= ($1::date::timestamp AT TIME ZONE 'Asia/Seoul') \
                   AND r.started_at < (($2::date + 1)::timestamp AT TIME ZONE 'Asia/Seoul') \
                 GROUP BY r.video_id) \
             SELECT v.video_id, v.op, (min(p.first) AT TIME ZONE 'Asia/Seoul')::date \
             FROM v JOIN plays p USING (video_id) GROUP BY v.video_id, v.op ORDER BY 3, 1",
            &[&lo, &hi],
        )
        .await
        .db("reading the changes to settled videos")?;
    Ok(rows
        .iter()
        .map(|r| VideoChange {
            video_id: r.get(0),
            op: r.get(1),
            from: Day::from_date(r.get(2)),
        })
        .collect())
}

/// Forgets the changes `snapshot` saw: the publishing run has settled
/// again every day they touch. Called inside the publish transaction.
pub async fn clear_seen(tx: &impl GenericClient, snapshot: &str) -> Result<u64> {
    tx.execute(
        "DELETE FROM input_change WHERE pg_visible_in_snapshot(xid, $1::text::pg_snapshot)",
        &[&snapshot],
    )
    .await
    .db("clearing the input changes this run settled")
}

/// Puts the change-recording triggers back where they are missing (a full
/// `settle datagen` load recreates viewing_log without them). Returns how
/// many it created.
pub async fn watch(c: &impl GenericClient) -> Result<i32> {
    let made: i32 = c
        .query_one("SELECT settle_watch_input()", &[])
        .await
        .db("installing the input-change triggers")?
        .get(0);
    if made > 0 {
        tracing::info!(made, "installed missing input-change triggers");
    }
    Ok(made)
}
