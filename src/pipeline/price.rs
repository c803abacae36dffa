//! Settlement: prices each (video, day) by its place in the video's all-time
//! history, then sums days into weeks and months, and videos into creators.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::pipeline::catalog::{Catalog, NO_VIDEO};
use crate::pipeline::totals::Totals;
use crate::rules::calendar::{Day, Period, PeriodKind};
use crate::rules::{ad_tenths, view_tenths, won_from_tenths};

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

/// Prices every day of `first..=last` in date order, carrying each video's
/// ordinals forward from `prior`.
pub fn price_days(
    totals: &Totals,
    first: Day,
    last: Day,
    catalog: &Catalog,
    prior: &Prior,
) -> PeriodRows {
    let mut before: Vec<(u64, u64)> = catalog
        .video_ids
        .iter()
        .map(|v| prior.get(v).copied().unwrap_or((0, 0)))
        .collect();
    let mut out = PeriodRows::new();
    for (&day, cells) in totals.days.range(first.0..=last.0) {
        let mut rows = FxHashMap::default();
        cells.for_each(|v, c| {
            if c.views == 0 {
                debug_assert!(c.watch_seconds == 0 && c.ad_views == 0);
                return;
            }
            assert!(
                c.views > 0 && c.ad_views >= 0,
                "negative sums for a video-day"
            );
            let v = v as usize;
            let (bv, ba) = before[v];
            let (views, ads) = (c.views as u64, c.ad_views as u64);
            let video_amount = won_from_tenths(view_tenths(bv, views));
            let ad_amount = won_from_tenths(ad_tenths(ba, ads));
            before[v] = (bv + views, ba + ads);
            rows.insert(
                catalog.video_ids[v],
                Sums {
                    views: c.views,
                    watch_seconds: c.watch_seconds,
                    ad_views: c.ad_views,
                    video_amount,
                    ad_amount,
                    total_amount: video_amount + ad_amount,
                },
            );
        });
        out.insert(
            Period {
                kind: PeriodKind::Day,
                start: Day(day),
            },
            rows,
        );
    }
    // Days of the range with no plays still replace whatever was stored.
    let mut d = first;
    while d <= last {
        out.entry(Period {
            kind: PeriodKind::Day,
            start: d,
        })
        .or_default();
        d = d.next();
    }
    out
}

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

/// Week and month rows. A period inside the run is the sum of its new day
/// rows. A partial period (with settled days outside `first..=last`) adds
/// the new day rows to what its days outside the run contribute: its stored
/// row less the stored rows of the days replaced, or the stored rows of the
/// days outside, as `partial` says (the stored rows are in `old_days` and
/// `old_periods`).
pub fn roll_up(
    new_days: &PeriodRows,
    old_days: &PeriodRows,
    old_periods: &PeriodRows,
    periods: &[Period],
    partial: &[(Period, Rebase)],
    (first, last): (Day, Day),
) -> PeriodRows {
    let mut out = PeriodRows::new();
    for &p in periods {
        let mut rows = FxHashMap::default();
        if let Some(&(_, how)) = partial.iter().find(|(q, _)| *q == p) {
            if how == Rebase::Stored {
                rows = old_periods.get(&p).cloned().unwrap_or_default();
            }
            for d in how.days(p, first, last) {
                let key = Period {
                    kind: PeriodKind::Day,
                    start: d,
                };
                for (id, s) in old_days.get(&key).into_iter().flatten() {
                    let sums = rows.entry(*id).or_default();
                    match how {
                        Rebase::Stored => sums.sub(s),
                        Rebase::Days => sums.add(s),
                    }
                }
            }
        }
        for (_, day_rows) in new_days.range(day_range(p.start, p.last_day())) {
            for (id, s) in day_rows {
                rows.entry(*id).or_default().add(s);
            }
        }
        rows.retain(|_, s| {
            assert!(
                s.views >= 0,
                "stored period rows disagree with stored day rows for {p:?}"
            );
            s.views > 0
        });
        out.insert(p, rows);
    }
    out
}

fn day_range(first: Day, last: Day) -> std::ops::RangeInclusive<Period> {
    Period {
        kind: PeriodKind::Day,
        start: first,
    }..=Period {
        kind: PeriodKind::Day,
        start: last,
    }
}

/// Creator rows: each period's video rows summed by the video's uploader.
/// Returns the rows and the number of video rows whose video is no longer in
/// `videos` (they cannot be attributed).
pub fn creators(video_rows: &PeriodRows, catalog: &Catalog) -> (PeriodRows, u64) {
    let mut out = PeriodRows::new();
    let mut unattributed = 0;
    for (p, rows) in video_rows {
        let mut by_creator: FxHashMap<i64, Sums> = FxHashMap::default();
        for (video, s) in rows {
            let m = catalog.meta(*video);
            if m.vidx == NO_VIDEO {
                unattributed += 1;
                continue;
            }
            by_creator.entry(m.uploader).or_default().add(s);
        }
        out.insert(*p, by_creator);
    }
    (out, unattributed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn day(m: u32, d: u32) -> Day {
        Day::from_date(NaiveDate::from_ymd_opt(2024, m, d).unwrap())
    }

    fn key(d: Day) -> Period {
        Period {
            kind: PeriodKind::Day,
            start: d,
        }
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

    /// Both ways give the same period rows, including videos that leave or
    /// join the period through the days replaced.
    #[test]
    fn both_rebases_give_the_same_rows() {
        let july = Period {
            kind: PeriodKind::Month,
            start: day(7, 1),
        };
        let sums = |v: i64| Sums {
            views: v,
            watch_seconds: 7 * v,
            ad_views: v / 2,
            video_amount: v + 1,
            ad_amount: 3 * v,
            total_amount: 4 * v + 1,
        };
        // Stored days 07-01..07-31: video d % 5 with d views, and video 9
        // only on 07-20 (the run replaces that day without it).
        let mut old_days = PeriodRows::new();
        let mut month = FxHashMap::default();
        for d in 1..=31 {
            let mut rows = FxHashMap::default();
            rows.insert((d % 5) as i64, sums(d as i64));
            if d == 20 {
                rows.insert(9, sums(4));
            }
            for (id, s) in &rows {
                month.entry(*id).or_insert_with(Sums::default).add(s);
            }
            old_days.insert(key(day(7, d)), rows);
        }
        let old_periods: PeriodRows = [(july, month)].into_iter().collect();
        for (a, b) in [(20, 31), (2, 31), (20, 20), (1, 15), (10, 12)] {
            let (first, last) = (day(7, a), day(7, b));
            let mut new_days = PeriodRows::new();
            for d in a..=b {
                let mut rows = FxHashMap::default();
                rows.insert(7, sums(d as i64 + 100));
                new_days.insert(key(day(7, d)), rows);
            }
            let roll = |how| {
                roll_up(
                    &new_days,
                    &old_days,
                    &old_periods,
                    &[july],
                    &[(july, how)],
                    (first, last),
                )
            };
            let (stored, days) = (roll(Rebase::Stored), roll(Rebase::Days));
            assert_eq!(stored, days, "run 07-{a}..07-{b}");
            let rows = &stored[&july];
            assert_eq!(rows.contains_key(&9), !(a..=b).contains(&20));
            assert_eq!(rows[&7].views, (a..=b).map(|d| d as i64 + 100).sum::<i64>());
        }
    }
}
