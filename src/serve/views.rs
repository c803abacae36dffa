//! The console's pages as askama templates (templates/*.html) and the
//! small shapes they draw: phase bars and top-5 charts as inline SVG.

use askama::Template;

use super::runs::Progress;
use super::store::{AuditEntry, Fire};
use crate::jobs::history::{ExecutionRow, PartitionRow, RejectSample};

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login {
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct Dashboard {
    pub who: String,
    pub csrf: String,
    pub last_settled: Option<String>,
    pub next_run: Option<String>,
    pub in_flight: usize,
    pub attention: Vec<String>,
    pub executions: Vec<ExecutionRow>,
}

#[derive(Template)]
#[template(path = "executions.html")]
pub struct Executions {
    pub who: String,
    pub csrf: String,
    pub status: String,
    pub statuses: Vec<&'static str>,
    pub executions: Vec<ExecutionRow>,
}

pub struct PhaseBar {
    pub name: &'static str,
    pub secs: f64,
    pub x: f64,
    pub w: f64,
    pub color: &'static str,
}

/// Phases laid end to end across 900 px, each as wide as its share.
pub fn phase_bars(summary: &serde_json::Value) -> Vec<PhaseBar> {
    let p = &summary["phases"];
    let parts = [
        ("plan", "plan_s", "#8da0cb"),
        ("read", "read_aggregate_s", "#3b6fd4"),
        ("exact path", "exact_path_s", "#66c2a5"),
        ("settle", "settle_s", "#fc8d62"),
        ("write", "write_s", "#e78ac3"),
        ("publish", "publish_s", "#a6d854"),
    ];
    let total: f64 = parts.iter().filter_map(|(_, k, _)| p[*k].as_f64()).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut x = 0.0;
    parts
        .iter()
        .filter_map(|(name, key, color)| {
            let secs = p[*key].as_f64()?;
            let w = secs / total * 900.0;
            let bar = PhaseBar {
                name,
                secs,
                x,
                w,
                color,
            };
            x += w;
            Some(bar)
        })
        .collect()
}

#[derive(Template)]
#[template(path = "execution.html")]
pub struct Execution {
    pub who: String,
    pub csrf: String,
    pub e: ExecutionRow,
    pub running: bool,
    pub progress: Option<Progress>,
    pub phases: Vec<PhaseBar>,
    pub partitions: Vec<PartitionRow>,
    pub rejects: Vec<(String, i64)>,
    pub sample: Vec<RejectSample>,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct Run {
    pub who: String,
    pub csrf: String,
    pub error: Option<String>,
    pub default_day: String,
}

pub struct Bar {
    pub rank: i64,
    pub label: String,
    pub value: i64,
    pub y: i64,
    pub w: f64,
}

pub struct Chart {
    pub metric: &'static str,
    pub height: i64,
    pub bars: Vec<Bar>,
}

/// A horizontal bar chart of one metric's top 5 (the longest bar 250 px).
pub fn chart(metric: &'static str, top: &serde_json::Value) -> Chart {
    let rows: Vec<&serde_json::Value> = top.as_array().map_or(Vec::new(), |a| {
        a.iter().filter(|r| r["metric"] == metric).collect()
    });
    let max = rows
        .iter()
        .filter_map(|r| r["value"].as_i64())
        .max()
        .unwrap_or(1)
        .max(1);
    let bars = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let value = r["value"].as_i64().unwrap_or(0);
            let title = r["title"].as_str().unwrap_or("");
            let title: String = title.chars().take(18).collect();
            Bar {
                rank: r["rank"].as_i64().unwrap_or(0),
                label: format!("{} {}", r["video_id"], title),
                value,
                y: i as i64 * 26,
                w: value as f64 / max as f64 * 250.0,
            }
        })
        .collect();
    Chart {
        metric,
        height: rows.len() as i64 * 26 + 4,
        bars,
    }
}

pub struct Money {
    pub id: i64,
    pub title: String,
    pub views: i64,
    pub watch: i64,
    pub ad_views: i64,
    pub video_amount: i64,
    pub ad_amount: i64,
    pub total: i64,
}

pub fn money(rows: &serde_json::Value, id_key: &str) -> Vec<Money> {
    let n = |r: &serde_json::Value, k: &str| r[k].as_i64().unwrap_or(0);
    rows.as_array().map_or(Vec::new(), |a| {
        a.iter()
            .map(|r| Money {
                id: n(r, id_key),
                title: r["title"].as_str().unwrap_or("").to_string(),
                views: n(r, "views"),
                watch: n(r, "watch_seconds"),
                ad_views: n(r, "ad_views"),
                video_amount: n(r, "video_amount"),
                ad_amount: n(r, "ad_amount"),
                total: n(r, "total_amount"),
            })
            .collect()
    })
}

#[derive(Template)]
#[template(path = "settlements.html")]
pub struct Settlements {
    pub who: String,
    pub csrf: String,
    pub period: String,
    pub start: String,
    pub creator: String,
    pub charts: Vec<Chart>,
    pub creators: Vec<Money>,
    pub videos: Vec<Money>,
}

pub struct ScheduleCard {
    pub id: i64,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub day_offset: i32,
    pub catch_up: String,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub failures: i32,
    pub max_failures: i32,
    pub last_fire: String,
    pub next_fire: Option<String>,
    pub would_run: Vec<String>,
    pub fires: Vec<Fire>,
}

#[derive(Template)]
#[template(path = "schedules.html")]
pub struct Schedules {
    pub who: String,
    pub csrf: String,
    pub error: Option<String>,
    pub schedules: Vec<ScheduleCard>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct Audit {
    pub who: String,
    pub csrf: String,
    pub entries: Vec<AuditEntry>,
}
