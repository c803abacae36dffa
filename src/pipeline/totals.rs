//! The run's merged sums of counted plays per (day, video), dense by the
//! catalog's video index: partitions merge into it and the exact path
//! corrects it.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::pipeline::aggregate::{Cell, PartitionOutput};
use crate::pipeline::catalog::{Catalog, NO_VIDEO};

/// Catalogues up to this many videos keep a dense vector per day (6 MiB a
/// day); larger ones keep only the videos with plays, because dense days of
/// 2M videos over 60 days took 2.9 GB whatever the row count.
pub const DENSE_MAX_VIDEOS: usize = 1 << 18;

/// One day's sums by the catalogue's video index.
pub enum DayCells {
    Dense(Vec<Cell>),
    Sparse(FxHashMap<u32, Cell>),
}

impl DayCells {
    #[inline]
    fn cell(&mut self, vidx: u32) -> &mut Cell {
        match self {
            DayCells::Dense(v) => &mut v[vidx as usize],
            DayCells::Sparse(m) => m.entry(vidx).or_default(),
        }
    }

    /// Calls `f` with every cell that may be non-zero, in no fixed order.
    pub fn for_each(&self, mut f: impl FnMut(u32, &Cell)) {
        match self {
            DayCells::Dense(v) => v.iter().enumerate().for_each(|(i, c)| f(i as u32, c)),
            DayCells::Sparse(m) => m.iter().for_each(|(&i, c)| f(i, c)),
        }
    }
}

pub struct Totals {
    n_videos: usize,
    dense: bool,
    pub days: BTreeMap<i32, DayCells>,
}

impl Totals {
    pub fn new(catalog: &Catalog) -> Self {
        Self::with_layout(catalog.len(), catalog.len() <= DENSE_MAX_VIDEOS)
    }

    /// Totals for `n_videos` videos, dense or sparse per day.
    pub fn with_layout(n_videos: usize, dense: bool) -> Self {
        Totals {
            n_videos,
            dense,
            days: BTreeMap::new(),
        }
    }

    fn day(&mut self, day: i32) -> &mut DayCells {
        let (n, dense) = (self.n_videos, self.dense);
        self.days.entry(day).or_insert_with(|| {
            if dense {
                DayCells::Dense(vec![Cell::default(); n])
            } else {
                DayCells::Sparse(FxHashMap::default())
            }
        })
    }

    #[inline]
    pub fn apply(&mut self, day: i32, vidx: u32, delta: Cell) {
        self.day(day).cell(vidx).merge(&delta);
    }

    /// Adds a partition's sums. Cells of videos missing from the catalog
    /// cannot occur (such plays are rejected), but a restart might reuse a
    /// partition read under an older catalog; those are reported.
    pub fn merge(&mut self, out: &PartitionOutput, catalog: &Catalog) -> u64 {
        let mut missing = 0;
        for (day, cells) in &out.days {
            let day = self.day(*day);
            for (video_id, cell) in cells {
                let v = catalog.index(*video_id);
                if v == NO_VIDEO {
                    missing += 1;
                } else {
                    day.cell(v).merge(cell);
                }
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(t: &Totals) -> BTreeMap<(i32, u32), (i64, i64, i64)> {
        let mut out = BTreeMap::new();
        for (&d, cells) in &t.days {
            cells.for_each(|v, c| {
                if !c.is_zero() {
                    out.insert((d, v), (c.views, c.watch_seconds, c.ad_views));
                }
            });
        }
        out
    }

    /// Both layouts hold the same sums after the same deltas, negative
    /// corrections included.
    #[test]
    fn dense_and_sparse_days_agree() {
        let mut dense = Totals::with_layout(50, true);
        let mut sparse = Totals::with_layout(50, false);
        let mut x: u64 = 7;
        for _ in 0..5_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (day, v) = (19_900 + (x >> 60) as i32, ((x >> 40) % 50) as u32);
            let sign = if (x >> 20).is_multiple_of(5) { -1 } else { 1 };
            let d = Cell {
                views: sign,
                watch_seconds: sign * ((x >> 8) % 3600) as i64,
                ad_views: sign * ((x >> 30) % 4) as i64,
            };
            dense.apply(day, v, d);
            sparse.apply(day, v, d);
        }
        assert!(matches!(
            sparse.days.values().next(),
            Some(DayCells::Sparse(_))
        ));
        let c = cells(&dense);
        assert!(c.len() > 100);
        assert_eq!(c, cells(&sparse));
    }
}
