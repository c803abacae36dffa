//! `settle demo`: a real settlement end to end on a small generated dataset,
//! with a readable report. The README's first command.

use std::fmt::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

use crate::db::{migrate, Database};
use crate::engine::{self, Outcome, RunOptions, RunSummary};
use crate::error::{DbContext, Error, Result};
use crate::jobs::Requested;
use crate::report::{human_count, run_summary};

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopEntry {
    pub rank: i16,
    pub video_id: i64,
    pub value: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TopBlock {
    pub period_kind: String,
    pub period_start: String,
    pub by_views: Vec<TopEntry>,
    pub by_watch_seconds: Vec<TopEntry>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CreatorEntry {
    pub creator_id: i64,
    pub views: i64,
    pub video_amount: i64,
    pub ad_amount: i64,
    pub total_amount: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoReport {
    pub database: String,
    pub phases: Vec<(String, f64)>,
    pub datagen: serde_json::Value,
    pub run: RunSummary,
    pub tops: Vec<TopBlock>,
    pub month: String,
    pub top_creators: Vec<CreatorEntry>,
}

/// Migrates, generates `flags` worth of data (datagen flags), settles it all
/// and reads back a report.
pub async fn demo(
    database: &Database,
    datagen_flags: &[String],
    obs: &dyn engine::Observer,
) -> Result<DemoReport> {
    let mut phases = Vec::new();
    let t = Instant::now();
    let mut c = database.connect().await?;
    migrate::migrate(&mut c).await?;
    phases.push(("migrate".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let args = settle_datagen::DatagenArgs::from_flags(datagen_flags)
        .map_err(|e| Error::Usage(format!("bad demo dataset flags: {e}")))?;
    let generated = settle_datagen::run(&args, database.config())
        .await
        .map_err(|e| Error::Tool(format!("generating the demo data failed: {e}")))?;
    phases.push(("generate data".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let mut opts = RunOptions::new(Requested::All);
    opts.force = true;
    // The demo regenerates its data each time, so earlier results are stale.
    c.batch_execute(&format!(
        "TRUNCATE {}",
        crate::pipeline::publish::PUBLISHED_TABLES
    ))
    .await
    .db("clearing the previous demo's results")?;
    let run = match engine::run(database, &opts, Arc::new(AtomicBool::new(false)), obs).await? {
        Outcome::Completed(s) => *s,
        Outcome::AlreadyCompleted { .. } => unreachable!("forced runs always execute"),
    };
    phases.push(("settle".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let (tops, month, top_creators) = read_report(&c).await?;
    phases.push(("report".to_string(), t.elapsed().as_secs_f64()));
    Ok(DemoReport {
        database: database.display.clone(),
        phases,
        datagen: serde_json::to_value(&generated).unwrap_or_default(),
        run,
        tops,
        month,
        top_creators,
    })
}

async fn read_report(c: &Client) -> Result<(Vec<TopBlock>, String, Vec<CreatorEntry>)> {
    // The last day, the last complete week, and the first month of the results.
    let picks = c
        .query(
            "WITH d AS (SELECT max(period_start) AS last_day FROM settlement_video WHERE period_kind = 'day')
             SELECT 'day', last_day FROM d
             UNION ALL
             SELECT 'week', coalesce(
                 (SELECT max(period_start) FROM settlement_video, d WHERE period_kind = 'week' AND period_start + 6 <= d.last_day),
                 (SELECT max(period_start) FROM settlement_video WHERE period_kind = 'week'))
             FROM d
             UNION ALL
             SELECT 'month', (SELECT min(period_start) FROM settlement_video WHERE period_kind = 'month')",
            &[],
        )
        .await
        .db("choosing periods for the report")?;
    let mut tops = Vec::new();
    let mut month = String::new();
    for p in picks {
        let kind: String = p.get(0);
        let Some(start) = p.get::<_, Option<chrono::NaiveDate>>(1) else {
            continue;
        };
        if kind == "month" {
            month = start.to_string();
        }
        let rows = c
            .query(
                "SELECT metric, rank, video_id, value FROM top_videos WHERE period_kind = $1 AND period_start = $2 ORDER BY metric, rank",
                &[&kind, &start],
            )
            .await
            .db("reading rankings")?;
        let entry = |r: &tokio_postgres::Row| TopEntry {
            rank: r.get(1),
            video_id: r.get(2),
            value: r.get(3),
        };
        tops.push(TopBlock {
            period_kind: kind,
            period_start: start.to_string(),
            by_views: rows
                .iter()
                .filter(|r| r.get::<_, &str>(0) == "views")
                .map(entry)
                .collect(),
            by_watch_seconds: rows
                .iter()
                .filter(|r| r.get::<_, &str>(0) == "watch_seconds")
                .map(entry)
                .collect(),
        });
    }
    let creators = c
        .query(
            "SELECT creator_id, views, video_amount, ad_amount, total_amount FROM settlement_creator \
             WHERE period_kind = 'month' AND period_start = (SELECT min(period_start) FROM settlement_creator WHERE period_kind = 'month') \
             ORDER BY total_amount DESC, creator_id LIMIT 5",
            &[],
        )
        .await
        .db("reading creator amounts")?
        .iter()
        .map(|r| CreatorEntry {
            creator_id: r.get(0),
            views: r.get(1),
            video_amount: r.get(2),
            ad_amount: r.get(3),
            total_amount: r.get(4),
        })
        .collect();
    Ok((tops, month, creators))
}

pub fn render(r: &DemoReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "settle demo on {}\n", r.database);
    for t in &r.tops {
        let _ = writeln!(
            o,
            "Top 5 for the {} starting {}:",
            t.period_kind, t.period_start
        );
        let _ = writeln!(
            o,
            "  {:<4} {:>10} {:>12}    {:>10} {:>16}",
            "rank", "video", "views", "video", "watch seconds"
        );
        for i in 0..t.by_views.len().max(t.by_watch_seconds.len()) {
            let v = t.by_views.get(i);
            let w = t.by_watch_seconds.get(i);
            let _ = writeln!(
                o,
                "  {:<4} {:>10} {:>12}    {:>10} {:>16}",
                i + 1,
                v.map(|x| x.video_id.to_string()).unwrap_or_default(),
                v.map(|x| human_count(x.value as u64)).unwrap_or_default(),
                w.map(|x| x.video_id.to_string()).unwrap_or_default(),
                w.map(|x| human_count(x.value as u64)).unwrap_or_default(),
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "Top creators for the month starting {} (won):", r.month);
    let _ = writeln!(
        o,
        "  {:>10} {:>12} {:>14} {:>14} {:>14}",
        "creator", "views", "video amount", "ad amount", "total"
    );
    for c in &r.top_creators {
        let _ = writeln!(
            o,
            "  {:>10} {:>12} {:>14} {:>14} {:>14}",
            c.creator_id,
            human_count(c.views as u64),
            human_count(c.video_amount as u64),
            human_count(c.ad_amount as u64),
            human_count(c.total_amount as u64)
        );
    }
    o.push('\n');
    o.push_str(&run_summary(&r.run));
    o.push('\n');
    let total: f64 = r.phases.iter().map(|p| p.1).sum();
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect();
    let _ = writeln!(o, "Demo phases: {} (total {total:.1}s)", phases.join(", "));
    o
}
