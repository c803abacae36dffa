//! The rapid_replay sliding window: recent valid plays by (user, video),
//! kept compact so that the per-row lookup stays in cache.
//!
//! Records live in a ring buffer in arrival order; each links to the
//! previous record of its key. An open-addressing index maps a key's
//! fingerprint to its newest record in 8 bytes a slot. Eviction only moves
//! the ring's tail; index slots that point behind it are stale and are
//! dropped when the index is rebuilt, so no per-row deletion is needed.

const EMPTY: u64 = 0;
const NO_PREV: u32 = u32::MAX;
/// How many inserts ahead the ring's next slots are prefetched.
const RING_AHEAD: u64 = 32;

/// One play in the window.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub user_id: i64,
    pub started_at: i64,
    pub id: i64,
    pub vidx: u32,
    pub watch: u32,
    pub ads: u32,
    pub day_slot: u16,
    /// Provisionally counted.
    pub counted: bool,
    /// Inside the run's days (look-back rows only serve as predecessors).
    pub counts: bool,
    prev: u32,
}

impl Rec {
    pub fn new(user_id: i64, vidx: u32, started_at: i64, id: i64) -> Rec {
        Rec {
            user_id,
            started_at,
            id,
            vidx,
            watch: 0,
            ads: 0,
            day_slot: u16::MAX,
            counted: false,
            counts: false,
            prev: NO_PREV,
        }
    }
}

pub struct Window {
    ring: Vec<Rec>,
    head: u64,
    tail: u64,
    index: Vec<u64>,
    used: usize,
    /// The largest eviction cutoff so far: every record that started at or
    /// after it is still live.
    complete_from: i64,
}

#[inline(always)]
fn fingerprint(user_id: i64, vidx: u32) -> u64 {
    // A cheap, well-mixed 64-bit hash (splitmix64 finaliser).
    let mut z = (user_id as u64) ^ ((vidx as u64) << 40) ^ ((vidx as u64) >> 24);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Starts loading the cache line of `r`: a hint, never a fault.
#[inline(always)]
pub fn prefetch_ptr<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and `r` is a valid reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch(r as *const T as *const i8, _MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// As [`prefetch_ptr`], for a line about to be written: asks for it in
/// exclusive state, so the store needs no second trip.
#[inline(always)]
fn prefetch_write<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and `r` is a valid reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        _mm_prefetch(r as *const T as *const i8, _MM_HINT_ET0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

impl Default for Window {
    fn default() -> Self {
        Window::new()
    }
}

impl Window {
    pub fn new() -> Window {
        Window {
            ring: vec![Rec::new(0, 0, 0, 0); 1 << 12],
            head: 0,
            tail: 0,
            index: vec![EMPTY; 1 << 13],
            used: 0,
            complete_from: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        (self.head - self.tail) as usize
    }

    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    #[inline(always)]
    fn slot_of(&self, pos: u64) -> usize {
        (pos as usize) & (self.ring.len() - 1)
    }

    /// The full position of a truncated one, if it is live.
    #[inline(always)]
    fn live(&self, p32: u32) -> Option<u64> {
        let pos = self.tail + (p32.wrapping_sub(self.tail as u32) as u64);
        (pos < self.head).then_some(pos)
    }

    /// Starts loading the index slot of a key, so that a batch of lookups
    /// overlaps its cache misses instead of paying them one after another.
    #[inline(always)]
    pub fn prefetch(&self, user_id: i64, vidx: u32) {
        let fp = fingerprint(user_id, vidx);
        let slot = (fp as usize) & (self.index.len() - 1);
        prefetch_ptr(&self.index[slot]);
    }

    /// Forgets every record but keeps the memory, so the next partition
    /// does not fault in (and the kernel zero) a fresh ring and index.
    pub fn clear(&mut self) {
        self.tail = self.head;
        self.index.fill(EMPTY);
        self.used = 0;
        self.complete_from = i64::MIN;
    }

    /// Every record inserted since `clear` that started at or after this is
    /// still live (see [`Window::live_records`]).
    pub fn complete_from(&self) -> i64 {
        self.complete_from
    }

    /// The live records, oldest arrival first.
    pub fn live_records(&self) -> impl Iterator<Item = &Rec> {
        (self.tail..self.head).map(|pos| &self.ring[self.slot_of(pos)])
    }

    /// Visits every live record of the key, newest first, then appends
    /// `rec` as the key's newest. `visit` may change the visited records.
    #[inline]
    pub fn insert_visiting(&mut self, mut rec: Rec, mut visit: impl FnMut(&mut Rec)) {
        if self.len() + 1 >= self.ring.len() {
            self.grow_ring();
        }
        if (self.used + 1) * 2 > self.index.len() {
            self.rebuild_index();
        }
        let fp = fingerprint(rec.user_id, rec.vidx);
        let tag = (fp >> 32) | 1;
        let mask = self.index.len() - 1;
        let mut slot = (fp as usize) & mask;
        let mut newest: Option<u64> = None;
        // A stale slot met on the way; reused if the key has no live slot.
        let mut reusable: Option<usize> = None;
        loop {
            let e = self.index[slot];
            if e == EMPTY {
                match reusable {
                    Some(r) => slot = r,
                    None => self.used += 1,
                }
                break;
            }
            match self.live(e as u32) {
                Some(pos) if e >> 32 == tag => {
                    let r = &self.ring[self.slot_of(pos)];
                    if r.user_id == rec.user_id && r.vidx == rec.vidx {
                        newest = Some(pos);
                        break;
                    }
                }
                Some(_) => {}
                None => {
                    reusable.get_or_insert(slot);
                }
            }
            slot = (slot + 1) & mask;
        }
        let mut at = newest;
        while let Some(pos) = at {
            let s = self.slot_of(pos);
            let r = &mut self.ring[s];
            if r.user_id != rec.user_id || r.vidx != rec.vidx {
                break;
            }
            visit(r);
            let prev = r.prev;
            at = if prev == NO_PREV {
                None
            } else {
                self.live(prev)
            };
        }
        rec.prev = newest.map_or(NO_PREV, |p| p as u32);
        let pos = self.head;
        // The ring slot written a few inserts from now was last touched a
        // whole window ago: start its line loading, or the store stalls.
        prefetch_write(&self.ring[self.slot_of(pos + RING_AHEAD)]);
        let s = self.slot_of(pos);
        self.ring[s] = rec;
        self.head += 1;
        self.index[slot] = (tag << 32) | (pos as u32 as u64);
    }

    /// Replaces the newest record (the one just inserted), keeping its link.
    #[inline]
    pub fn set_newest(&mut self, mut rec: Rec) {
        let s = self.slot_of(self.head - 1);
        rec.prev = self.ring[s].prev;
        self.ring[s] = rec;
    }

    /// Drops records from the oldest end while they started before `cutoff`.
    /// (Arrival order is not time order, so some older ones may stay a while;
    /// keeping a record longer never changes a decision.)
    #[inline]
    pub fn evict_before(&mut self, cutoff: i64) {
        self.complete_from = self.complete_from.max(cutoff);
        while self.tail < self.head && self.ring[self.slot_of(self.tail)].started_at < cutoff {
            self.tail += 1;
        }
    }

    fn grow_ring(&mut self) {
        let mut ring = vec![Rec::new(0, 0, 0, 0); self.ring.len() * 2];
        let mask = ring.len() - 1;
        for pos in self.tail..self.head {
            ring[(pos as usize) & mask] = self.ring[self.slot_of(pos)];
        }
        self.ring = ring;
    }

    /// Rebuilds the index from the live records, sized for them: at most a
    /// third full, so that some live records' worth of inserts go by before
    /// it reaches half and is rebuilt again. (Four times live, the index of
    /// a dense 300M-row log took 128 MiB a worker; this halves that.)
    fn rebuild_index(&mut self) {
        let live = self.len();
        let cap = (live * 3).next_power_of_two().max(1 << 13);
        self.index.clear();
        self.index.resize(cap, EMPTY);
        self.used = 0;
        let mask = cap - 1;
        for pos in self.tail..self.head {
            let r = self.ring[self.slot_of(pos)];
            let fp = fingerprint(r.user_id, r.vidx);
            let tag = (fp >> 32) | 1;
            let mut slot = (fp as usize) & mask;
            loop {
                let e = self.index[slot];
                if e == EMPTY {
                    self.used += 1;
                    break;
                }
                if e >> 32 == tag {
                    let other = self.ring[self.slot_of(self.live(e as u32).expect("live"))];
                    if other.user_id == r.user_id && other.vidx == r.vidx {
                        break; // a newer record of the same key replaces it
                    }
                }
                slot = (slot + 1) & mask;
            }
            self.index[slot] = (tag << 32) | (pos as u32 as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window finds exactly the live records of a key, whatever the
    /// collisions, growth and evictions in between.
    #[test]
    fn finds_all_live_records_of_a_key() {
        let mut w = Window::new();
        let mut truth: Vec<(i64, u32, i64)> = Vec::new();
        let mut x = 1u64;
        for i in 0..200_000i64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let user = (x >> 40) as i64 % 300;
            let vidx = ((x >> 20) % 7) as u32;
            let ts = i * 10;
            let mut seen = Vec::new();
            w.insert_visiting(Rec::new(user, vidx, ts, i), |r| seen.push(r.started_at));
            let cutoff = ts - 5_000;
            let mut expect: Vec<i64> = truth
                .iter()
                .filter(|t| t.0 == user && t.1 == vidx && t.2 >= cutoff - 10)
                .map(|t| t.2)
                .collect();
            expect.reverse();
            // Records older than the cutoff may linger, never the reverse.
            let recent: Vec<i64> = seen.iter().copied().filter(|&t| t >= cutoff - 10).collect();
            assert_eq!(recent, expect, "row {i}");
            truth.push((user, vidx, ts));
            truth.retain(|t| t.2 >= cutoff - 10);
            w.evict_before(cutoff);
            // Every record from `complete_from` on is live (the key filter
            // built from them relies on it).
            if i % 997 == 0 {
                let from = w.complete_from();
                let live: Vec<i64> = w.live_records().map(|r| r.started_at).collect();
                for t in truth.iter().filter(|t| t.2 >= from) {
                    assert!(live.contains(&t.2), "row at {} lost", t.2);
                }
            }
        }
    }
}
