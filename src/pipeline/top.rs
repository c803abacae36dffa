//! Rankings: the top 5 videos of each period by views and by watch time.

use crate::pipeline::price::Sums;
use crate::rules::calendar::Period;
use crate::rules::top5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    Views,
    WatchSeconds,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Views => "views",
            Metric::WatchSeconds => "watch_seconds",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopRow {
    pub period: Period,
    pub metric: Metric,
    pub rank: i16,
    pub video_id: i64,
    pub value: i64,
}

/// The top rows of one period, from its video rows in any order (ties go
/// to the lower video id, so the order does not matter). A period with no
/// plays has none, and its stored rankings are still replaced.
pub fn rank_period<'a, I>(period: Period, rows: I) -> Vec<TopRow>
where
    I: Iterator<Item = (i64, &'a Sums)> + Clone,
{
    let mut out = Vec::new();
    for metric in [Metric::Views, Metric::WatchSeconds] {
        let best = top5(rows.clone().map(|(v, s)| {
            (
                v,
                match metric {
                    Metric::Views => s.views,
                    Metric::WatchSeconds => s.watch_seconds,
                },
            )
        }));
        for (i, (video_id, value)) in best.into_iter().enumerate() {
            out.push(TopRow {
                period,
                metric,
                rank: i as i16 + 1,
                video_id,
                value,
            });
        }
    }
    out
}
