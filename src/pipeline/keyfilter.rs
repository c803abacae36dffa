//! The (user, video) keys a finished partition's window still held, as a
//! blocked Bloom filter: the exact path asks it whether a higher
//! partition's head row can have a play of this partition within 30 s.
//! Without it every head row is a seed, and a log with three times the
//! plays per hour has nine times the seeds (2M at 300M rows, 17 s).
//!
//! A "no" is certain for plays that started at or after `complete_from`:
//! the window evicts only records older than its cutoffs, so every valid,
//! non-late, non-self_play row of the partition from then on was still in
//! it. A "maybe" keeps the seed, so a false positive costs a re-read, never
//! exactness. About 10 bits a key, under 1 % false positives.

/// Bits per key: 10 gives about 1 % false positives with [`PROBES`].
const BITS_PER_KEY: usize = 10;
/// Bits set per key, all in one 512-bit block (one cache line).
const PROBES: u32 = 6;
const BLOCK_WORDS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyFilter {
    /// Every candidate play of the partition that started at or after this
    /// (µs) is in the filter.
    pub complete_from: i64,
    /// `BLOCK_WORDS` words a block.
    words: Vec<u64>,
}

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline(always)]
fn key_hash(user_id: i64, video_id: i64) -> u64 {
    mix((user_id as u64) ^ mix(video_id as u64 ^ 0x9E37_79B9_7F4A_7C15))
}

impl KeyFilter {
    /// A filter for about `keys` keys, complete from `complete_from`; at
    /// least one block, so that any key can be inserted.
    pub fn with_capacity(keys: usize, complete_from: i64) -> KeyFilter {
        let blocks = (keys * BITS_PER_KEY).div_ceil(BLOCK_WORDS * 64).max(1);
        KeyFilter {
            complete_from,
            words: vec![0; blocks * BLOCK_WORDS],
        }
    }

    /// The block's first word and the bit pattern of a key.
    #[inline(always)]
    fn locate(&self, user_id: i64, video_id: i64) -> (usize, [u16; PROBES as usize]) {
        let h = key_hash(user_id, video_id);
        let blocks = (self.words.len() / BLOCK_WORDS) as u64;
        let block = ((h as u128 * blocks as u128) >> 64) as usize;
        let mut bits = [0u16; PROBES as usize];
        let g = mix(h);
        for (i, b) in bits.iter_mut().enumerate() {
            *b = ((g >> (9 * i)) & 511) as u16;
        }
        (block * BLOCK_WORDS, bits)
    }

    pub fn insert(&mut self, user_id: i64, video_id: i64) {
        let (base, bits) = self.locate(user_id, video_id);
        for b in bits {
            self.words[base + (b as usize >> 6)] |= 1 << (b & 63);
        }
    }

    /// False only if the key was never inserted. (A decoded filter with no
    /// words, which this module never builds, holds nothing.)
    pub fn may_contain(&self, user_id: i64, video_id: i64) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let (base, bits) = self.locate(user_id, video_id);
        bits.iter()
            .all(|&b| self.words[base + (b as usize >> 6)] & (1 << (b & 63)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every inserted key is found; keys never inserted mostly are not.
    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let n = 100_000i64;
        let mut f = KeyFilter::with_capacity(n as usize, 0);
        for u in 0..n {
            f.insert(u * 7919, u % 1_000);
        }
        assert!((0..n).all(|u| f.may_contain(u * 7919, u % 1_000)));
        let false_pos = (0..n)
            .filter(|&u| f.may_contain(u * 7919 + 1, u % 1_000))
            .count();
        assert!(false_pos < n as usize / 50, "{false_pos} false positives");
        let empty = KeyFilter::with_capacity(0, 0);
        assert!(!empty.may_contain(1, 1));
    }
}
