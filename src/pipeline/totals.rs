//! The run's merged sums of counted plays per (day, video), dense by the
//! catalog's video index: partitions merge into it and the exact path
//! corrects it.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::pipeline::aggregate::PartitionOutput;
use crate::pipeline::catalog::{Catalog, NO_VIDEO};
use crate::pipeline::cells::{put_cell, sort_summing, Cell, Unpack};

/// Catalogues up to this many videos keep a dense vector per day (6 MiB a
/// day); larger ones keep only the videos with plays, because dense days of
/// 2M videos over 60 days took 2.9 GB whatever the row count.
pub const DENSE_MAX_VIDEOS: usize = 1 << 18;

/// One day's sums by the catalogue's video index.
pub enum DayCells {
    Dense(Vec<Cell>),
    Sparse(SparseDay),
}

/// A day of a large catalogue: the cells sorted by video index and packed
/// as varints (about 5 bytes a cell), and the exact path's corrections in a
/// map beside them, added when the day is read. Maps of 32-byte cells took
/// 536 MB for the 13.8M video-days of a 100M-row log over 1M videos, sorted
/// 20-byte cells 276 MB; the read's peak is set by this.
#[derive(Default)]
pub struct SparseDay {
    packed: Vec<u8>,
    delta: FxHashMap<u32, Cell>,
}

impl SparseDay {
    fn unpack(&self) -> impl Iterator<Item = (u32, Cell)> + '_ {
        Unpack::new(&self.packed).map(|(k, c)| (k as u32, c))
    }

    /// Adds `cells`, sorted by video index, in one pass over the day.
    fn merge_sorted(&mut self, cells: &[(u32, Cell)]) {
        let mut out = Vec::with_capacity(self.packed.len() + cells.len() * 6);
        let mut next = 0;
        merge_sum(self.unpack(), cells.iter().copied(), |v, c| {
            put_cell(&mut out, &mut next, u64::from(v), c)
        });
        // The estimate leaves spare room, which a day would keep to the end.
        out.shrink_to_fit();
        self.packed = out;
    }

    fn apply(&mut self, vidx: u32, delta: &Cell) {
        self.delta.entry(vidx).or_default().merge(delta);
    }

    /// Every cell, each video once: the packed ones with their corrections,
    /// then corrections of videos not packed.
    fn for_each(&self, mut f: impl FnMut(u32, &Cell)) {
        if self.delta.is_empty() {
            return self.unpack().for_each(|(v, c)| f(v, &c));
        }
        let mut delta: Vec<(u32, Cell)> = self.delta.iter().map(|(&v, c)| (v, *c)).collect();
        delta.sort_unstable_by_key(|d| d.0);
        merge_sum(self.unpack(), delta.into_iter(), |v, c| f(v, c));
    }
}

/// Walks two runs of cells sorted by video index as one, summing a video
/// found in both, and calls `f` once per video in index order.
fn merge_sum(
    a: impl Iterator<Item = (u32, Cell)>,
    b: impl Iterator<Item = (u32, Cell)>,
    mut f: impl FnMut(u32, &Cell),
) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        let (vidx, c) = match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(x), Some(y)) if x.0 == y.0 => {
                let (vidx, mut c) = a.next().expect("peeked");
                c.merge(&b.next().expect("peeked").1);
                (vidx, c)
            }
            (Some(x), y) if y.is_none_or(|y| x.0 < y.0) => a.next().expect("peeked"),
            _ => b.next().expect("peeked"),
        };
        f(vidx, &c);
    }
}

impl DayCells {
    /// Calls `f` with every cell that may be non-zero, each video once, in
    /// no fixed order.
    pub fn for_each(&self, mut f: impl FnMut(u32, &Cell)) {
        match self {
            DayCells::Dense(v) => v.iter().enumerate().for_each(|(i, c)| f(i as u32, c)),
            DayCells::Sparse(s) => s.for_each(f),
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

    /// Bytes the days hold on the heap (maps estimated by their capacity),
    /// for the debug log's memory account.
    pub fn heap_bytes(&self) -> usize {
        let cell = std::mem::size_of::<(u32, Cell)>() + 1;
        self.days
            .values()
            .map(|d| match d {
                DayCells::Dense(v) => v.capacity() * std::mem::size_of::<Cell>(),
                DayCells::Sparse(s) => s.packed.capacity() + s.delta.capacity() * cell,
            })
            .sum()
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
                    .filter_map(|(video_id, cell)| match catalog.index(video_id) {
                        NO_VIDEO => {
                            missing += 1;
                            None
                        }
                        v => Some((v, cell)),
                    });
            match self.day(*day) {
                DayCells::Dense(v) => indexed.for_each(|(i, c)| v[i as usize].merge(&c)),
                DayCells::Sparse(s) => {
                    cells.clear();
                    cells.extend(indexed);
                    sort_summing(&mut cells);
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
    use crate::pipeline::cells::PackedCells;

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

    /// Partition merges, exact-path deltas and cells far over 32 bits (in
    /// both directions) give both layouts the same sums.
    #[test]
    fn sparse_merges_and_big_cells_agree_with_dense() {
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
                out.days.push((day, PackedCells::from_unsorted(cells)));
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

    /// The varint packing gives back every value it was given, the extremes
    /// and negative ones included, with gaps of any size between videos.
    #[test]
    fn packed_cells_round_trip() {
        let values = [
            0,
            1,
            -1,
            127,
            128,
            -129,
            i64::from(i32::MAX) + 1,
            i64::MAX,
            i64::MIN,
        ];
        let mut cells = Vec::new();
        let mut vidx = 0u32;
        for (k, &v) in values.iter().enumerate() {
            for (j, &w) in values.iter().enumerate() {
                cells.push((
                    vidx,
                    Cell {
                        views: v,
                        watch_seconds: w,
                        ad_views: values[(k + j) % values.len()],
                    },
                ));
                vidx += 1 + ((k * 7 + j * 131) as u32 % 300) * 1000;
            }
        }
        let mut day = SparseDay::default();
        day.merge_sorted(&cells);
        let mut back = Vec::new();
        day.for_each(|v, c| back.push((v, *c)));
        assert_eq!(back, cells);
    }
}
