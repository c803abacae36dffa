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
    Sparse(SparseDay),
}

/// A day of a large catalogue: the cells sorted by video index in 20 bytes
/// each, and the few whose views or ad views outgrow `i32` (or that the
/// exact path adds after the read) in a map. No video is in both. Maps of
/// 32-byte cells took 536 MB for the 13.8M video-days of a 100M-row log
/// over 1M videos; the sorted cells take 276 MB.
#[derive(Default)]
pub struct SparseDay {
    sorted: Vec<Narrow>,
    wide: FxHashMap<u32, Cell>,
}

/// A cell in 20 bytes (alignment 4: `watch_seconds` in two halves).
#[derive(Clone, Copy)]
struct Narrow {
    vidx: u32,
    views: i32,
    ad_views: i32,
    watch: [u32; 2],
}

impl Narrow {
    fn new(vidx: u32, c: &Cell) -> Option<Narrow> {
        Some(Narrow {
            vidx,
            views: i32::try_from(c.views).ok()?,
            ad_views: i32::try_from(c.ad_views).ok()?,
            watch: [c.watch_seconds as u32, (c.watch_seconds >> 32) as u32],
        })
    }

    fn cell(&self) -> Cell {
        Cell {
            views: self.views.into(),
            watch_seconds: (i64::from(self.watch[1] as i32) << 32) | i64::from(self.watch[0]),
            ad_views: self.ad_views.into(),
        }
    }
}

impl SparseDay {
    /// Adds `cells`, sorted by video index, in one pass over the day.
    fn merge_sorted(&mut self, cells: &[(u32, Cell)]) {
        let old = std::mem::take(&mut self.sorted);
        let mut out = Vec::with_capacity(old.len() + cells.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let (vidx, c) = match (old.get(i), cells.get(j)) {
                (None, None) => break,
                (Some(a), b) if b.is_none_or(|b| a.vidx < b.0) => {
                    i += 1;
                    out.push(*a);
                    continue;
                }
                (Some(a), Some(b)) if a.vidx == b.0 => {
                    i += 1;
                    j += 1;
                    let mut c = a.cell();
                    c.merge(&b.1);
                    (a.vidx, c)
                }
                (_, Some(b)) => {
                    j += 1;
                    (b.0, b.1)
                }
                (Some(_), None) => unreachable!("taken by the first arm"),
            };
            if let Some(w) = self.wide.get_mut(&vidx) {
                w.merge(&c);
                continue;
            }
            match Narrow::new(vidx, &c) {
                Some(n) => out.push(n),
                None => {
                    self.wide.insert(vidx, c);
                }
            }
        }
        // Videos on both sides leave spare room, which a day keeps to the end.
        out.shrink_to_fit();
        self.sorted = out;
    }

    fn apply(&mut self, vidx: u32, delta: &Cell) {
        match self.sorted.binary_search_by_key(&vidx, |n| n.vidx) {
            Ok(k) => {
                let mut c = self.sorted[k].cell();
                c.merge(delta);
                match Narrow::new(vidx, &c) {
                    Some(n) => self.sorted[k] = n,
                    None => {
                        self.sorted.remove(k);
                        self.wide.insert(vidx, c);
                    }
                }
            }
            Err(_) => self.wide.entry(vidx).or_default().merge(delta),
        }
    }
}

impl DayCells {
    /// Calls `f` with every cell that may be non-zero, each video once, in
    /// no fixed order.
    pub fn for_each(&self, mut f: impl FnMut(u32, &Cell)) {
        match self {
            DayCells::Dense(v) => v.iter().enumerate().for_each(|(i, c)| f(i as u32, c)),
            DayCells::Sparse(s) => {
                s.sorted.iter().for_each(|n| f(n.vidx, &n.cell()));
                s.wide.iter().for_each(|(&i, c)| f(i, c));
            }
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
                DayCells::Sparse(SparseDay::default())
            }
        })
    }

    #[inline]
    pub fn apply(&mut self, day: i32, vidx: u32, delta: Cell) {
        match self.day(day) {
            DayCells::Dense(v) => v[vidx as usize].merge(&delta),
            DayCells::Sparse(s) => s.apply(vidx, &delta),
        }
    }

    /// Adds a partition's sums. Cells of videos missing from the catalog
    /// cannot occur (such plays are rejected), but a restart might reuse a
    /// partition read under an older catalog; those are reported.
    pub fn merge(&mut self, out: &PartitionOutput, catalog: &Catalog) -> u64 {
        let mut missing = 0;
        let mut cells = Vec::new();
        for (day, day_cells) in &out.days {
            let indexed =
                day_cells
                    .iter()
                    .filter_map(|(video_id, cell)| match catalog.index(*video_id) {
                        NO_VIDEO => {
                            missing += 1;
                            None
                        }
                        v => Some((v, *cell)),
                    });
            match self.day(*day) {
                DayCells::Dense(v) => indexed.for_each(|(i, c)| v[i as usize].merge(&c)),
                DayCells::Sparse(s) => {
                    cells.clear();
                    cells.extend(indexed);
                    cells.sort_unstable_by_key(|c| c.0);
                    cells.dedup_by(|later, kept| {
                        let same = later.0 == kept.0;
                        if same {
                            kept.1.merge(&later.1);
                        }
                        same
                    });
                    s.merge_sorted(&cells);
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

    /// Partition merges, exact-path deltas and cells too big for 20 bytes
    /// (in both directions) give both layouts the same sums.
    #[test]
    fn sparse_merges_and_wide_cells_agree_with_dense() {
        let catalog = Catalog::new((0..40).map(|v| (1000 + v, 7, 60)).collect());
        let mut dense = Totals::with_layout(40, true);
        let mut sparse = Totals::with_layout(40, false);
        let mut x: u64 = 11;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 16
        };
        for round in 0..30 {
            let mut out = PartitionOutput::default();
            for day in 19_900..19_903 {
                let mut cells = Vec::new();
                for _ in 0..(next() % 30) {
                    let big = next() % 7 == 0;
                    let views = if big {
                        3_000_000_000
                    } else {
                        (next() % 50) as i64
                    };
                    cells.push((
                        1000 + (next() % 40) as i64,
                        Cell {
                            views,
                            watch_seconds: views * 9_000 - (next() % 5) as i64,
                            ad_views: views / 3,
                        },
                    ));
                }
                out.days.push((day, cells));
            }
            assert_eq!(dense.merge(&out, &catalog), 0);
            assert_eq!(sparse.merge(&out, &catalog), 0);
            // Deltas after the merges, some taking a big cell back down.
            if round % 3 == 2 {
                for _ in 0..10 {
                    let (day, v) = (19_900 + (next() % 3) as i32, (next() % 40) as u32);
                    let d = Cell {
                        views: -2_999_999_999,
                        watch_seconds: -1,
                        ad_views: -3,
                    };
                    dense.apply(day, v, d);
                    sparse.apply(day, v, d);
                }
            }
        }
        let c = cells(&dense);
        assert!(c.values().any(|v| v.0 > i32::MAX as i64));
        assert!(c.values().any(|v| v.0 < 0));
        assert_eq!(c, cells(&sparse));
    }
}
