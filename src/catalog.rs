//! The `videos` table in memory: validation and the creator of each play
//! need one lookup per row, so ids map to dense indexes.

use rustc_hash::FxHashMap;
use tokio_postgres::Client;

use crate::error::{DbContext, Result};

pub const NO_VIDEO: u32 = u32::MAX;

pub struct Catalog {
    /// video_id of each dense index.
    pub video_ids: Vec<i64>,
    pub uploaders: Vec<i64>,
    pub durations: Vec<i32>,
    lookup: Lookup,
}

/// A direct table when ids are dense enough, else a hash map.
enum Lookup {
    Dense { base: i64, slots: Vec<u32> },
    Sparse(FxHashMap<i64, u32>),
}

impl Catalog {
    pub fn new(mut rows: Vec<(i64, i64, i32)>) -> Catalog {
        rows.sort_unstable_by_key(|r| r.0);
        let video_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let uploaders = rows.iter().map(|r| r.1).collect();
        let durations = rows.iter().map(|r| r.2).collect();
        let lookup = match (video_ids.first(), video_ids.last()) {
            (Some(&lo), Some(&hi))
                if (hi as i128 - lo as i128) < (4 * video_ids.len() as i128 + 1024) =>
            {
                let mut slots = vec![NO_VIDEO; (hi - lo + 1) as usize];
                for (i, &v) in video_ids.iter().enumerate() {
                    slots[(v - lo) as usize] = i as u32;
                }
                Lookup::Dense { base: lo, slots }
            }
            _ => Lookup::Sparse(
                video_ids
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, i as u32))
                    .collect(),
            ),
        };
        Catalog {
            video_ids,
            uploaders,
            durations,
            lookup,
        }
    }

    pub async fn load(client: &Client) -> Result<Catalog> {
        let rows = client
            .query(
                "SELECT video_id, uploader_id, duration_seconds FROM videos",
                &[],
            )
            .await
            .db("loading videos")?;
        Ok(Catalog::new(
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        ))
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
        match &self.lookup {
            Lookup::Dense { base, slots } => {
                let off = video_id.wrapping_sub(*base);
                if (off as u64) < slots.len() as u64 {
                    slots[off as usize]
                } else {
                    NO_VIDEO
                }
            }
            Lookup::Sparse(map) => map.get(&video_id).copied().unwrap_or(NO_VIDEO),
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
        assert!(matches!(sparse.lookup, Lookup::Sparse(_)));
        assert_eq!(dense.durations[dense.index(12) as usize], 200);
        assert_eq!(dense.index(13), NO_VIDEO);
        assert_eq!(dense.index(9), NO_VIDEO);
        assert_eq!(dense.index(i64::MIN), NO_VIDEO);
        assert_eq!(sparse.uploaders[sparse.index(i64::MAX) as usize], 2);
        assert_eq!(sparse.index(11), NO_VIDEO);
    }
}
