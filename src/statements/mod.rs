//! What operators, auditors and finance read out of the published results:
//! `show` (tables for the terminal), `verify` (an independent recount and
//! the stores' internal identities) and `export` (per-creator statement
//! files with a manifest). They read the result tables, never the engine's
//! code path, and record verifications in the job repository.

pub mod export;
mod export_write;
pub mod show;
pub mod verify;
mod verify_sql;

use crate::rules::{Day, Period, PeriodKind};

/// The six sums of a result row: the pipeline's own, read from rows with
/// `Sums::from_row`.
pub use crate::pipeline::price::Sums;

/// The SQL list of the six sums, for queries built from constants.
pub(crate) const SUM_COLUMNS: &str =
    "views, watch_seconds, ad_views, video_amount, ad_amount, total_amount";

/// A ranking metric of `top_videos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Views,
    WatchSeconds,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Views, Metric::WatchSeconds];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Views => "views",
            Metric::WatchSeconds => "watch_seconds",
        }
    }
}

/// The month (as its first day) of `YYYY-MM`.
pub fn parse_month(s: &str) -> Option<Day> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let d = chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)?;
    Some(Day::from_date(d))
}

/// `YYYY-MM` of the month starting `first`.
pub fn month_name(first: Day) -> String {
    first.date().format("%Y-%m").to_string()
}

/// The month period starting `first`.
pub fn month(first: Day) -> Period {
    Period {
        kind: PeriodKind::Month,
        start: first.month_start(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        assert_eq!(
            parse_month("2024-07").map(|d| d.to_string()),
            Some("2024-07-01".into())
        );
        assert_eq!(parse_month("2024-7"), None);
        assert_eq!(parse_month("2024-13"), None);
        assert_eq!(parse_month("2024-07-01"), None);
        assert_eq!(month_name(parse_month("2024-12").unwrap()), "2024-12");
    }
}
