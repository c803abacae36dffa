//! A tiny deterministic PRNG. SplitMix64 is fast (one multiply-xorshift chain
//! per draw), passes BigCrush, and needs no dependency; determinism across
//! machines matters more here than cryptographic quality.

/// Mixes a 64-bit value (the SplitMix64 finaliser). Used to derive
/// independent seeds from (seed, chunk) tuples.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed for a stream identified by `parts` under the global `seed`.
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ 0x5eed_5e77_1e00_0000);
    for &p in parts {
        h = mix(h ^ mix(p.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    }
    h
}

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40
    /// for every n used here). `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `threshold / 2^64` (see [`prob`]).
    #[inline]
    pub fn chance(&mut self, threshold: u64) -> bool {
        self.next_u64() < threshold
    }

    /// Skewed toward 0: `n * x^2` for uniform x in [0, 1), so low indices
    /// (heavy users, big creators) are drawn far more often.
    #[inline]
    pub fn skewed_below(&mut self, n: u64) -> u64 {
        let x = self.next_u64() >> 32;
        ((n as u128 * (x * x) as u128) >> 64) as u64
    }
}

/// A probability as a threshold on a uniform u64 draw.
pub fn prob(p: f64) -> u64 {
    if p <= 0.0 {
        0
    } else if p >= 1.0 {
        u64::MAX
    } else {
        (p * 18_446_744_073_709_551_616.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.below(7) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn derive_separates_streams() {
        assert_ne!(derive(42, &[1, 2]), derive(42, &[2, 1]));
        assert_ne!(derive(42, &[1]), derive(43, &[1]));
        assert_eq!(derive(42, &[7, 9]), derive(42, &[7, 9]));
    }
}
