//! `settle show`: the published results as rows for a terminal table, so
//! operators can answer "who was top last week" or "what do we owe creator
//! 42 for July" without psql. Reads only the result tables and `videos`.

use tokio_postgres::Client;

use super::{Metric, Sums, SUM_COLUMNS};
use crate::error::{DbContext, Error, Result};
use crate::rules::{Day, Period, PeriodKind};

/// How many of a period's days are settled: a table of a half-settled week
/// is not the week's final answer, and the reader should know.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Coverage {
    pub first_day: Day,
    pub last_day: Day,
    pub days: i64,
    pub settled_days: i64,
}

async fn coverage(c: &Client, first: Day, last: Day) -> Result<Coverage> {
    let settled: i64 = c
        .query_one(
            "SELECT count(*) FROM settled_day WHERE day BETWEEN $1 AND $2",
            &[&first.date(), &last.date()],
        )
        .await
        .db("counting settled days")?
        .get(0);
    Ok(Coverage {
        first_day: first,
        last_day: last,
        days: (last.0 - first.0 + 1) as i64,
        settled_days: settled,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopEntry {
    pub rank: i16,
    pub video_id: i64,
    pub title: Option<String>,
    pub creator_id: Option<i64>,
    pub value: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopList {
    pub metric: Metric,
    pub entries: Vec<TopEntry>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Top {
    pub period_kind: PeriodKind,
    pub period_start: Day,
    pub coverage: Coverage,
    pub lists: Vec<TopList>,
}

/// The published top 5 of `period` by `metric` (both metrics when None).
pub async fn top(c: &Client, period: Period, metric: Option<Metric>) -> Result<Top> {
    let metrics: Vec<Metric> = match metric {
        Some(m) => vec![m],
        None => Metric::ALL.to_vec(),
    };
    let mut lists = Vec::with_capacity(metrics.len());
    for m in metrics {
        let rows = c
            .query(
                "SELECT t.rank, t.video_id, v.title, v.uploader_id, t.value \
                 FROM top_videos t LEFT JOIN videos v USING (video_id) \
                 WHERE t.period_kind = $1 AND t.period_start = $2 AND t.metric = $3 \
                 ORDER BY t.rank",
                &[&period.kind.as_str(), &period.start.date(), &m.as_str()],
            )
            .await
            .db("reading top_videos")?;
        let entries = rows
            .iter()
            .map(|r| TopEntry {
                rank: r.get(0),
                video_id: r.get(1),
                title: r.get(2),
                creator_id: r.get(3),
                value: r.get(4),
            })
            .collect();
        lists.push(TopList { metric: m, entries });
    }
    Ok(Top {
        period_kind: period.kind,
        period_start: period.start,
        coverage: coverage(c, period.start, period.last_day()).await?,
        lists,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VideoSums {
    pub video_id: i64,
    pub title: Option<String>,
    #[serde(flatten)]
    pub sums: Sums,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CreatorMonth {
    pub creator_id: i64,
    pub month: Day,
    pub coverage: Coverage,
    /// The creator's videos' month rows, largest total first.
    pub videos: Vec<VideoSums>,
    /// The creator's published month row; None when the creator has none.
    pub total: Option<Sums>,
}

/// A creator's published month: each video's row and the creator row.
pub async fn creator(c: &Client, creator_id: i64, month: Day) -> Result<CreatorMonth> {
    let period = super::month(month);
    let rows = c
        .query(
            &format!(
                "SELECT s.video_id, v.title, {cols} FROM settlement_video s \
                 JOIN videos v USING (video_id) \
                 WHERE s.period_kind = 'month' AND s.period_start = $1 AND v.uploader_id = $2 \
                 ORDER BY s.total_amount DESC, s.video_id",
                cols = prefixed("s", SUM_COLUMNS)
            ),
            &[&period.start.date(), &creator_id],
        )
        .await
        .db("reading the creator's video rows")?;
    let videos = rows
        .iter()
        .map(|r| VideoSums {
            video_id: r.get(0),
            title: r.get(1),
            sums: Sums::from_row(r, 2),
        })
        .collect();
    let total = c
        .query_opt(
            &format!(
                "SELECT {SUM_COLUMNS} FROM settlement_creator \
                 WHERE period_kind = 'month' AND period_start = $1 AND creator_id = $2"
            ),
            &[&period.start.date(), &creator_id],
        )
        .await
        .db("reading the creator's month row")?
        .map(|r| Sums::from_row(&r, 0));
    Ok(CreatorMonth {
        creator_id,
        month: period.start,
        coverage: coverage(c, period.start, period.last_day()).await?,
        videos,
        total,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DaySums {
    pub day: Day,
    #[serde(flatten)]
    pub sums: Sums,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VideoRange {
    pub video_id: i64,
    pub title: Option<String>,
    pub creator_id: Option<i64>,
    pub coverage: Coverage,
    /// The video's published day rows in the range (days without counted
    /// views have none).
    pub days: Vec<DaySums>,
    /// The sum of those rows.
    pub total: Sums,
}

/// A video's published day rows from `first` to `last`.
pub async fn video(c: &Client, video_id: i64, first: Day, last: Day) -> Result<VideoRange> {
    if first > last {
        return Err(Error::Usage(format!("--from {first} is after --to {last}")));
    }
    let meta = c
        .query_opt(
            "SELECT title, uploader_id FROM videos WHERE video_id = $1",
            &[&video_id],
        )
        .await
        .db("reading the video")?;
    let rows = c
        .query(
            &format!(
                "SELECT period_start, {SUM_COLUMNS} FROM settlement_video \
                 WHERE period_kind = 'day' AND video_id = $1 AND period_start BETWEEN $2 AND $3 \
                 ORDER BY period_start"
            ),
            &[&video_id, &first.date(), &last.date()],
        )
        .await
        .db("reading the video's day rows")?;
    let days: Vec<DaySums> = rows
        .iter()
        .map(|r| DaySums {
            day: Day::from_date(r.get(0)),
            sums: Sums::from_row(r, 1),
        })
        .collect();
    let mut total = Sums::default();
    for d in &days {
        total.add(&d.sums);
    }
    Ok(VideoRange {
        video_id,
        title: meta.as_ref().map(|r| r.get(0)),
        creator_id: meta.as_ref().map(|r| r.get(1)),
        coverage: coverage(c, first, last).await?,
        days,
        total,
    })
}

/// `a.x, a.y` from `x, y`.
pub(crate) fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
