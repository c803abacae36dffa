//! Settlement: prices each (video, day) by its place in the video's all-time
//! history, then sums days into weeks and months, and videos into creators.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::catalog::{Catalog, NO_VIDEO};
use crate::rules::calendar::{Day, Period, PeriodKind};
use crate::rules::{ad_tenths, view_tenths, won_from_tenths};
use crate::totals::Totals;

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
        for (v, c) in cells.iter().enumerate() {
            if c.views == 0 {
                debug_assert!(c.watch_seconds == 0 && c.ad_views == 0);
                continue;
            }
            assert!(
                c.views > 0 && c.ad_views >= 0,
                "negative sums for a video-day"
            );
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
        }
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

/// Week and month rows. A period inside the run is the sum of its new day
/// rows. A period with settled days outside the run (`partial`) is its
/// stored row, minus the stored day rows being replaced, plus the new day
/// rows: days outside the run keep counting through the stored period row.
pub fn roll_up(
    new_days: &PeriodRows,
    old_days: &PeriodRows,
    old_periods: &PeriodRows,
    periods: &[Period],
    partial: &[Period],
) -> PeriodRows {
    let mut out = PeriodRows::new();
    for &p in periods {
        let last = p.last_day();
        let mut rows = FxHashMap::default();
        if partial.contains(&p) {
            rows = old_periods.get(&p).cloned().unwrap_or_default();
            for (day, day_rows) in old_days.range(day_range(p.start, last)) {
                debug_assert_eq!(day.kind, PeriodKind::Day);
                for (id, s) in day_rows {
                    rows.entry(*id).or_default().sub(s);
                }
            }
        }
        for (_, day_rows) in new_days.range(day_range(p.start, last)) {
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
