//! The `videos` table in memory: validation and the creator of each play
//! need one lookup per row, so ids map to dense indexes.

use futures_util::StreamExt;
use rustc_hash::FxHashMap;
use tokio_postgres::Client;

use crate::error::{DbContext, Result};

pub const NO_VIDEO: u32 = u32::MAX;

/// What a row needs to know of its video, packed so that validation, the
/// self_play check and the dense index cost one cache line, not three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub uploader: i64,
    pub duration: i32,
    /// Dense index, or `NO_VIDEO` for an unknown id.
    pub vidx: u32,
}

const UNKNOWN: Meta = Meta {
    uploader: i64::MIN,
    duration: -1,
    vidx: NO_VIDEO,
};

pub struct Catalog {
    /// video_id of each dense index.
    pub video_ids: Vec<i64>,
    lookup: Lookup,
}

/// A direct table when ids are dense enough, else a hash map.
enum Lookup {
    Dense {
        base: i64,
        slots: Vec<Meta>,
    },
    Sparse {
        map: FxHashMap<i64, u32>,
        metas: Vec<Meta>,
    },
}

impl Catalog {
    pub fn new(mut rows: Vec<(i64, i64, i32)>) -> Catalog {
        rows.sort_unstable_by_key(|r| r.0);
        let video_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let meta = |i: usize| Meta {
            uploader: rows[i].1,
            duration: rows[i].2,
            vidx: i as u32,
        };
        let lookup = match (video_ids.first(), video_ids.last()) {
            (Some(&lo), Some(&hi))
                if (hi as i128 - lo as i128) < (4 * video_ids.len() as i128 + 1024) =>
            {
                let mut slots = vec![UNKNOWN; (hi - lo + 1) as usize];
                for (i, &v) in video_ids.iter().enumerate() {
                    slots[(v - lo) as usize] = meta(i);
                }
                Lookup::Dense { base: lo, slots }
            }
            _ => Lookup::Sparse {
                map: video_ids
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, i as u32))
                    .collect(),
                metas: (0..video_ids.len()).map(meta).collect(),
            },
        };
        Catalog { video_ids, lookup }
    }

    /// Streamed: a catalogue of millions collected as `Row`s first would
    /// hold ~250 bytes a video, where the catalogue keeps 24.
    pub async fn load(client: &Client) -> Result<Catalog> {
        let rows = client
            .query_raw(
                "SELECT video_id, uploader_id, duration_seconds FROM videos",
                std::iter::empty::<i64>(),
            )
            .await
            .db("loading videos")?;
        futures_util::pin_mut!(rows);
        let mut videos = Vec::new();
        while let Some(r) = rows.next().await {
            let r = r.db("loading videos")?;
            videos.push((r.get(0), r.get(1), r.get(2)));
        }
        Ok(Catalog::new(videos))
    }

    pub fn len(&self) -> usize {
        self.video_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.video_ids.is_empty()
    }

    /// The dense index of `video_id`, or `NO_VIDEO`.
    #[inline(always)]
    pub fn index(&self, video_id: i64) -> u32 {
        self.meta(video_id).vidx
    }

    /// The video's uploader, duration and dense index (`vidx == NO_VIDEO`
    /// when the id is unknown).
    #[inline(always)]
    pub fn meta(&self, video_id: i64) -> Meta {
        match &self.lookup {
            Lookup::Dense { base, slots } => {
                let off = video_id.wrapping_sub(*base);
                if (off as u64) < slots.len() as u64 {
                    slots[off as usize]
                } else {
                    UNKNOWN
                }
            }
            Lookup::Sparse { map, metas } => match map.get(&video_id) {
                Some(&i) => metas[i as usize],
                None => UNKNOWN,
            },
        }
    }

    /// Starts loading a video's entry, so a batch overlaps its cache misses.
    #[inline(always)]
    pub fn prefetch(&self, video_id: i64) {
        if let Lookup::Dense { base, slots } = &self.lookup {
            let off = video_id.wrapping_sub(*base);
            if (off as u64) < slots.len() as u64 {
                crate::pipeline::window::prefetch_ptr(&slots[off as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_agree() {
        let dense = Catalog::new(vec![(10, 1, 100), (12, 2, 200), (11, 3, 300)]);
        assert!(matches!(dense.lookup, Lookup::Dense { .. }));
        let sparse = Catalog::new(vec![(10, 1, 100), (i64::MAX, 2, 200), (-5, 3, 300)]);
        assert!(matches!(sparse.lookup, Lookup::Sparse { .. }));
        assert_eq!(dense.meta(12).duration, 200);
        assert_eq!(dense.index(13), NO_VIDEO);
        assert_eq!(dense.index(9), NO_VIDEO);
        assert_eq!(dense.index(i64::MIN), NO_VIDEO);
        assert_eq!(sparse.meta(i64::MAX).uploader, 2);
        assert_eq!(sparse.index(11), NO_VIDEO);
        for c in [&dense, &sparse] {
            let m = c.meta(10);
            assert_eq!((m.uploader, m.duration), (1, 100));
            assert_eq!(c.video_ids[m.vidx as usize], 10);
            assert_eq!(c.meta(7).vidx, NO_VIDEO);
        }
    }
}
