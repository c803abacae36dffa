//! The sums of result rows, and the periods a run touches and how the
//! partial ones are rebased; [`super::settle`] prices and rolls them up.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::rules::calendar::{Day, Period, PeriodKind};

/// The six sums of a result row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sums {
    pub views: i64,
    pub watch_seconds: i64,
    pub ad_views: i64,
    pub video_amount: i64,
    pub ad_amount: i64,
    pub total_amount: i64,
}

impl Sums {
    /// The six sums in column order, and back: for packing.
    pub(crate) fn to_array(self) -> [i64; 6] {
        [
            self.views,
            self.watch_seconds,
            self.ad_views,
            self.video_amount,
            self.ad_amount,
            self.total_amount,
        ]
    }

    pub(crate) fn from_array(a: &[i64; 6]) -> Sums {
        let [views, watch_seconds, ad_views, video_amount, ad_amount, total_amount] = *a;
        Sums {
            views,
            watch_seconds,
            ad_views,
            video_amount,
            ad_amount,
            total_amount,
        }
    }

    /// Reads the six sums from `row`, starting at column `from` (the result
    /// tables keep them in this order).
    pub(crate) fn from_row(row: &tokio_postgres::Row, from: usize) -> Sums {
        Sums {
            views: row.get(from),
            watch_seconds: row.get(from + 1),
            ad_views: row.get(from + 2),
            video_amount: row.get(from + 3),
            ad_amount: row.get(from + 4),
            total_amount: row.get(from + 5),
        }
    }

    /// A video-day's counted sums, not yet priced.
    pub(crate) fn from_cell(c: &crate::pipeline::aggregate::Cell) -> Sums {
        Sums {
            views: c.views,
            watch_seconds: c.watch_seconds,
            ad_views: c.ad_views,
            ..Sums::default()
        }
    }

    pub fn add(&mut self, o: &Sums) {
        self.views += o.views;
        self.watch_seconds += o.watch_seconds;
        self.ad_views += o.ad_views;
        self.video_amount += o.video_amount;
        self.ad_amount += o.ad_amount;
        self.total_amount += o.total_amount;
    }

    pub fn sub(&mut self, o: &Sums) {
        self.views -= o.views;
        self.watch_seconds -= o.watch_seconds;
        self.ad_views -= o.ad_views;
        self.video_amount -= o.video_amount;
        self.ad_amount -= o.ad_amount;
        self.total_amount -= o.total_amount;
    }
}

/// Rows of one period, keyed by video_id (or creator_id).
pub type PeriodRows = BTreeMap<Period, FxHashMap<i64, Sums>>;

/// All-time counted views and ad views of each video before the run.
pub type Prior = FxHashMap<i64, (u64, u64)>;

/// The weeks and months that `first..=last` touches.
pub fn touched_periods(first: Day, last: Day) -> Vec<Period> {
    let mut out = Vec::new();
    for kind in [PeriodKind::Week, PeriodKind::Month] {
        let mut d = first.period_start(kind);
        while d <= last {
            let p = Period { kind, start: d };
            out.push(p);
            d = p.last_day().next();
        }
    }
    out
}

/// Where a week or month with settled days outside the run (a *partial*
/// period) gets the part those days contribute. Either way the stored rows
/// read are the fewer: a nightly run reads one day and the period rows, a
/// run over most of a month the few days outside it (30 of 31 days at 100M:
/// 3M stored day rows read for nothing, most of a 13 s settle phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebase {
    /// The stored period row, less the stored rows of its days in the run.
    Stored,
    /// The stored rows of its days outside the run.
    Days,
}

impl Rebase {
    /// The cheaper way for `p` and the run `first..=last`.
    pub fn choose(p: Period, first: Day, last: Day) -> Rebase {
        let (a, b) = (p.start.0, p.last_day().0);
        let inside = (b.min(last.0) - a.max(first.0) + 1).max(0);
        let outside = (b - a + 1) - inside;
        // The stored row costs about one day's worth of rows.
        if outside <= inside {
            Rebase::Days
        } else {
            Rebase::Stored
        }
    }

    /// The stored day rows `p` needs this way.
    pub fn days(self, p: Period, first: Day, last: Day) -> impl Iterator<Item = Day> {
        let in_run = move |d: &Day| *d >= first && *d <= last;
        (p.start.0..=p.last_day().0)
            .map(Day)
            .filter(move |d| in_run(d) == (self == Rebase::Stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn day(m: u32, d: u32) -> Day {
        Day::from_date(NaiveDate::from_ymd_opt(2024, m, d).unwrap())
    }

    #[test]
    fn rebase_reads_the_fewer_stored_days() {
        let july = Period {
            kind: PeriodKind::Month,
            start: day(7, 1),
        };
        let week = Period {
            kind: PeriodKind::Week,
            start: day(7, 1),
        };
        let days = |how: Rebase, p, a, b| how.days(p, a, b).collect::<Vec<_>>();
        // The nightly run: its one day and the stored month row.
        assert_eq!(Rebase::choose(july, day(7, 31), day(7, 31)), Rebase::Stored);
        assert_eq!(
            days(Rebase::Stored, july, day(7, 31), day(7, 31)),
            [day(7, 31)]
        );
        // Most of the month: the one day outside it.
        assert_eq!(Rebase::choose(july, day(7, 2), day(7, 31)), Rebase::Days);
        assert_eq!(days(Rebase::Days, july, day(7, 2), day(7, 31)), [day(7, 1)]);
        // 4 of 7 days in the run: the 3 outside.
        assert_eq!(Rebase::choose(week, day(7, 4), day(7, 20)), Rebase::Days);
        assert_eq!(
            days(Rebase::Days, week, day(7, 4), day(7, 20)),
            [day(7, 1), day(7, 2), day(7, 3)]
        );
        assert_eq!(Rebase::choose(week, day(7, 5), day(7, 20)), Rebase::Stored);
    }
}
