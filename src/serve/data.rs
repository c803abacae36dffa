//! Reading the published results for the API and the console: a period's
//! creators or videos, one creator's month with its videos, and the top 5.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio_postgres::Client;

use super::api::{parse_day, parse_id, parse_limit};
use super::error::{ApiError, ApiResult};
use crate::error::DbContext;
use crate::rules::{Day, PeriodKind};

fn period(p: &HashMap<String, String>) -> ApiResult<PeriodKind> {
    let s = p.get("period").map_or("month", String::as_str);
    PeriodKind::parse(s)
        .ok_or_else(|| ApiError::bad(format!("period: {s:?} is not day, week or month")))
}

/// `start` snapped to its period's first day, if given.
fn start(p: &HashMap<String, String>, kind: PeriodKind) -> ApiResult<Option<Day>> {
    p.get("start")
        .filter(|s| !s.is_empty())
        .map(|s| parse_day("start", s).map(|d| d.period_start(kind)))
        .transpose()
}

fn opt_id(p: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    p.get(key)
        .filter(|s| !s.is_empty())
        .map(|s| parse_id(s))
        .transpose()
}

pub struct SettlementQuery {
    pub kind: PeriodKind,
    pub start: Option<Day>,
    pub creator: Option<i64>,
    pub video: Option<i64>,
    pub limit: i64,
}

impl SettlementQuery {
    pub fn parse(p: &HashMap<String, String>) -> ApiResult<SettlementQuery> {
        let kind = period(p)?;
        Ok(SettlementQuery {
            kind,
            start: start(p, kind)?,
            creator: opt_id(p, "creator")?,
            video: opt_id(p, "video")?,
            limit: parse_limit(p, 100)?,
        })
    }
}

/// The latest published period of a kind, when none was asked for.
async fn resolve_start(
    c: &Client,
    kind: PeriodKind,
    start: Option<Day>,
) -> ApiResult<Option<chrono::NaiveDate>> {
    if let Some(d) = start {
        return Ok(Some(d.date()));
    }
    Ok(c.query_one(
        "SELECT max(period_start) FROM settlement_creator WHERE period_kind = $1",
        &[&kind.as_str()],
    )
    .await
    .db("finding the latest period")?
    .get(0))
}

const CREATORS: &str = "SELECT coalesce(json_agg(t), '[]') FROM (SELECT creator_id, views, watch_seconds, ad_views, \
    video_amount, ad_amount, total_amount FROM settlement_creator WHERE period_kind = $1 AND period_start = $2 \
    AND ($3::bigint IS NULL OR creator_id = $3) ORDER BY total_amount DESC, creator_id LIMIT $4) t";

const VIDEOS: &str = "SELECT coalesce(json_agg(t), '[]') FROM (SELECT s.video_id, v.title, v.uploader_id AS creator_id, \
    s.views, s.watch_seconds, s.ad_views, s.video_amount, s.ad_amount, s.total_amount \
    FROM settlement_video s LEFT JOIN videos v USING (video_id) WHERE s.period_kind = $1 AND s.period_start = $2 \
    AND ($3::bigint IS NULL OR v.uploader_id = $3) AND ($4::bigint IS NULL OR s.video_id = $4) \
    ORDER BY s.total_amount DESC, s.video_id LIMIT $5) t";

/// Creators of the period (or one creator) and, when a creator or video is
/// named, the videos.
pub async fn settlements(c: &Client, q: &SettlementQuery) -> ApiResult<Value> {
    let kind = q.kind.as_str();
    let Some(start) = resolve_start(c, q.kind, q.start).await? else {
        return Ok(json!({ "period": kind, "start": null, "creators": [], "videos": [] }));
    };
    let creators: Value = if q.video.is_some() {
        json!([])
    } else {
        c.query_one(CREATORS, &[&kind, &start, &q.creator, &q.limit])
            .await
            .db("reading creators")?
            .get(0)
    };
    let videos: Value = if q.creator.is_some() || q.video.is_some() {
        c.query_one(VIDEOS, &[&kind, &start, &q.creator, &q.video, &q.limit])
            .await
            .db("reading videos")?
            .get(0)
    } else {
        json!([])
    };
    Ok(
        json!({ "period": kind, "start": start.to_string(), "creators": creators, "videos": videos }),
    )
}

pub struct TopQuery {
    pub kind: PeriodKind,
    pub start: Option<Day>,
    pub metric: Option<&'static str>,
}

impl TopQuery {
    pub fn parse(p: &HashMap<String, String>) -> ApiResult<TopQuery> {
        let kind = period(p)?;
        let metric = match p.get("metric").map(String::as_str) {
            None | Some("") => None,
            Some("views") => Some("views"),
            Some("watch_seconds") => Some("watch_seconds"),
            Some(m) => {
                return Err(ApiError::bad(format!(
                    "metric: {m:?} is not views or watch_seconds"
                )))
            }
        };
        Ok(TopQuery {
            kind,
            start: start(p, kind)?,
            metric,
        })
    }
}

const TOP: &str =
    "SELECT coalesce(json_agg(t), '[]') FROM (SELECT t.metric, t.rank, t.video_id, v.title, \
    v.uploader_id AS creator_id, t.value FROM top_videos t LEFT JOIN videos v USING (video_id) \
    WHERE t.period_kind = $1 AND t.period_start = $2 AND ($3::text IS NULL OR t.metric = $3) \
    ORDER BY t.metric DESC, t.rank) t";

/// The top 5 videos by views and by watch time.
pub async fn top(c: &Client, q: &TopQuery) -> ApiResult<Value> {
    let kind = q.kind.as_str();
    let start = match q.start {
        Some(d) => Some(d.date()),
        None => c
            .query_one(
                "SELECT max(period_start) FROM top_videos WHERE period_kind = $1",
                &[&kind],
            )
            .await
            .db("finding the latest period")?
            .get(0),
    };
    let Some(start) = start else {
        return Ok(json!({ "period": kind, "start": null, "top": [] }));
    };
    let top: Value = c
        .query_one(TOP, &[&kind, &start, &q.metric])
        .await
        .db("reading the top 5")?
        .get(0);
    Ok(json!({ "period": kind, "start": start.to_string(), "top": top }))
}
