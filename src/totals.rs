//! The run's merged sums of counted plays per (day, video), dense by the
//! catalog's video index: partitions merge into it and the exact path
//! corrects it.

use std::collections::BTreeMap;

use crate::aggregate::{Cell, PartitionOutput};
use crate::catalog::{Catalog, NO_VIDEO};

pub struct Totals {
    n_videos: usize,
    pub days: BTreeMap<i32, Vec<Cell>>,
}

impl Totals {
    pub fn new(catalog: &Catalog) -> Self {
        Totals {
            n_videos: catalog.len(),
            days: BTreeMap::new(),
        }
    }

    fn day(&mut self, day: i32) -> &mut Vec<Cell> {
        let n = self.n_videos;
        self.days
            .entry(day)
            .or_insert_with(|| vec![Cell::default(); n])
    }

    #[inline]
    pub fn apply(&mut self, day: i32, vidx: u32, delta: Cell) {
        self.day(day)[vidx as usize].merge(&delta);
    }

    /// Adds a partition's sums. Cells of videos missing from the catalog
    /// cannot occur (such plays are rejected), but a restart might reuse a
    /// partition read under an older catalog; those are reported.
    pub fn merge(&mut self, out: &PartitionOutput, catalog: &Catalog) -> u64 {
        let mut missing = 0;
        for (day, cells) in &out.days {
            let dense = self.day(*day);
            for (video_id, cell) in cells {
                let v = catalog.index(*video_id);
                if v == NO_VIDEO {
                    missing += 1;
                } else {
                    dense[v as usize].merge(cell);
                }
            }
        }
        missing
    }
}
