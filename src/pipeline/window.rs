//! The rapid_replay sliding window: recent valid plays by (user, video),
//! kept compact so that the per-row lookup stays in cache.
//!
//! Records live in a ring in arrival order; each links to the previous
//! record of its key. An open-addressing index maps a key's fingerprint to
//! its newest record in 8 bytes a slot. Eviction only moves the ring's
//! tail; index slots that point behind it are stale and are dropped when
//! the index is rebuilt, so no per-row deletion is needed.
//!
//! The ring is a deque of fixed chunks, not one power-of-two buffer: the
//! window's size follows the evening peak of the plays an hour, and a
//! buffer doubled past it held up to twice the live records (192 MiB a
//! worker for 2.5M live at 300M rows). Chunks cost one more (cached) load
//! per access and hold the live records plus one chunk.

use crate::rules::ads::AD_INTERVAL_SECONDS;

const EMPTY: u64 = 0;
const NO_PREV: u32 = u32::MAX;
/// How many inserts ahead the ring's next slots are prefetched.
const RING_AHEAD: u64 = 32;
/// Records a ring chunk (40 B each: 2.5 MiB a chunk).
const CHUNK_SHIFT: u32 = 16;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u64 = CHUNK as u64 - 1;

const COUNTED: u32 = 1 << 25;
const COUNTS: u32 = 1 << 26;
const PHASE_SHIFT: u32 = 16;
const PHASE_MASK: u32 = 0x1ff;

/// One play in the window: 40 bytes. Its ad views are kept as the start
/// position's offset past its last 5-minute mark (9 bits) beside the watch
/// seconds, from which they follow exactly (see [`Rec::ads`]); holding
/// them whole made a record 48 bytes.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub user_id: i64,
    pub started_at: i64,
    pub id: i64,
    pub vidx: u32,
    prev: u32,
    watch: u32,
    /// day_slot (bits 0-15), phase (16-24), counted (25), counts (26).
    bits: u32,
}

impl Rec {
    pub fn new(user_id: i64, vidx: u32, started_at: i64, id: i64) -> Rec {
        Rec {
            user_id,
            started_at,
            id,
            vidx,
            prev: NO_PREV,
            watch: 0,
            bits: u32::from(u16::MAX),
        }
    }

    /// Fills in a valid play's outcome: its positions (`0 <= start <= end`),
    /// its day slot, whether it is provisionally counted, and whether it is
    /// inside the run's days (look-back rows only serve as predecessors).
    pub fn with_outcome(
        mut self,
        start: i32,
        end: i32,
        day_slot: u16,
        counted: bool,
        counts: bool,
    ) -> Rec {
        debug_assert!(0 <= start && start <= end);
        self.watch = (end - start) as u32;
        let phase = (start % AD_INTERVAL_SECONDS) as u32;
        self.bits = u32::from(day_slot)
            | phase << PHASE_SHIFT
            | if counted { COUNTED } else { 0 }
            | if counts { COUNTS } else { 0 };
        self
    }

    pub fn watch(&self) -> u32 {
        self.watch
    }

    /// With the start at `300m + phase` and the end `watch` later, the
    /// marks passed are `floor((phase + watch) / 300)`, the same as
    /// `ad_views(start, end)`.
    pub fn ads(&self) -> u32 {
        let phase = (self.bits >> PHASE_SHIFT) & PHASE_MASK;
        (phase + self.watch) / AD_INTERVAL_SECONDS as u32
    }

    pub fn day_slot(&self) -> u16 {
        self.bits as u16
    }

    /// Provisionally counted.
    pub fn counted(&self) -> bool {
        self.bits & COUNTED != 0
    }

    pub fn uncount(&mut self) {
        self.bits &= !COUNTED;
    }

    /// Inside the run's days.
    pub fn counts(&self) -> bool {
        self.bits & COUNTS != 0
    }
}

type Chunk = Box<[Rec]>;

fn new_chunk() -> Chunk {
    vec![Rec::new(0, 0, 0, 0); CHUNK].into_boxed_slice()
}

pub struct Window {
    /// The chunks holding positions `base << CHUNK_SHIFT` onwards.
    chunks: Vec<Chunk>,
    base: u64,
    /// Chunks the tail left, kept so that refilling them does not fault in
    /// (and the kernel zero) fresh memory.
    spare: Vec<Chunk>,
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
            chunks: vec![new_chunk()],
            base: 0,
            spare: Vec::new(),
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

    /// Records the ring's memory holds, in use or spare.
    pub fn ring_len(&self) -> usize {
        (self.chunks.len() + self.spare.len()) * CHUNK
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Positions from the tail to `RING_AHEAD` past the head are held.
    #[inline(always)]
    fn rec(&self, pos: u64) -> &Rec {
        &self.chunks[((pos >> CHUNK_SHIFT) - self.base) as usize][(pos & CHUNK_MASK) as usize]
    }

    #[inline(always)]
    fn rec_mut(&mut self, pos: u64) -> &mut Rec {
        &mut self.chunks[((pos >> CHUNK_SHIFT) - self.base) as usize][(pos & CHUNK_MASK) as usize]
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
        self.release_behind_tail();
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
        (self.tail..self.head).map(|pos| self.rec(pos))
    }

    /// Visits every live record of the key, newest first, then appends
    /// `rec` as the key's newest. `visit` may change the visited records.
    #[inline]
    pub fn insert_visiting(&mut self, mut rec: Rec, mut visit: impl FnMut(&mut Rec)) {
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
                    let r = self.rec(pos);
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
            let r = self.rec_mut(pos);
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
        prefetch_write(self.rec(pos + RING_AHEAD));
        *self.rec_mut(pos) = rec;
        self.head += 1;
        self.index[slot] = (tag << 32) | (pos as u32 as u64);
        if (self.head + RING_AHEAD) & CHUNK_MASK == 0 {
            let chunk = self.spare.pop().unwrap_or_else(new_chunk);
            self.chunks.push(chunk);
        }
    }

    /// Replaces the newest record (the one just inserted), keeping its link.
    #[inline]
    pub fn set_newest(&mut self, mut rec: Rec) {
        let r = self.rec_mut(self.head - 1);
        rec.prev = r.prev;
        *r = rec;
    }

    /// Drops records from the oldest end while they started before `cutoff`.
    /// (Arrival order is not time order, so some older ones may stay a while;
    /// keeping a record longer never changes a decision.)
    #[inline]
    pub fn evict_before(&mut self, cutoff: i64) {
        self.complete_from = self.complete_from.max(cutoff);
        while self.tail < self.head && self.rec(self.tail).started_at < cutoff {
            self.tail += 1;
        }
        self.release_behind_tail();
    }

    /// Moves the chunks wholly behind the tail to the spares.
    fn release_behind_tail(&mut self) {
        let first_live = self.tail >> CHUNK_SHIFT;
        if first_live > self.base {
            let n = (first_live - self.base) as usize;
            self.spare.extend(self.chunks.drain(..n));
            self.base = first_live;
        }
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
            let r = *self.rec(pos);
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
                    let other = self.rec(self.live(e as u32).expect("live"));
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
    use crate::rules::ad_views;

    /// A record gives back the outcome it was filled with: its ad views
    /// rebuilt from the start's phase equal `ad_views` of the positions,
    /// on and around every mark and at the largest positions.
    #[test]
    fn a_record_keeps_its_outcome_in_40_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 40);
        let mut starts: Vec<i32> = (0..1_500).collect();
        starts.extend([i32::MAX - 600, i32::MAX - 300, i32::MAX - 1, i32::MAX]);
        for &s in &starts {
            for w in [0, 1, 10, 299, 300, 301, 599, 600, 601, 7_200, 100_000] {
                let Some(e) = s.checked_add(w) else { continue };
                for (slot, counted, counts) in
                    [(0, true, true), (u16::MAX, false, true), (7, true, false)]
                {
                    let r = Rec::new(1, 2, 3, 4).with_outcome(s, e, slot, counted, counts);
                    assert_eq!(r.ads(), ad_views(s, e), "start {s} end {e}");
                    assert_eq!(r.watch(), (e - s) as u32);
                    assert_eq!(
                        (r.day_slot(), r.counted(), r.counts()),
                        (slot, counted, counts)
                    );
                    let mut u = r;
                    u.uncount();
                    assert_eq!((u.counted(), u.counts(), u.ads()), (false, counts, r.ads()));
                }
            }
        }
    }

    /// The window finds exactly the live records of a key, whatever the
    /// collisions, index rebuilds, evictions and ring chunks in between:
    /// a narrow window of a few hundred records and a wide one of 150,000
    /// (a few chunks, taken and given back as the tail moves), and nothing
    /// survives a `clear`.
    #[test]
    fn finds_all_live_records_of_a_key() {
        check(200_000, 5_000, 300);
        check(600_000, 1_500_000, 1_000_000);
    }

    fn check(rows: i64, span: i64, users: u64) {
        use std::collections::{HashMap, HashSet, VecDeque};
        let mut w = Window::new();
        let mut truth: HashMap<(i64, u32), VecDeque<i64>> = HashMap::new();
        let mut order: VecDeque<(i64, u32, i64)> = VecDeque::new();
        let mut x = 1u64;
        for i in 0..rows {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let user = ((x >> 24) % users) as i64;
            let vidx = ((x >> 8) % 7) as u32;
            let ts = i * 10;
            let mut seen = Vec::new();
            w.insert_visiting(Rec::new(user, vidx, ts, i), |r| seen.push(r.started_at));
            let cutoff = ts - span;
            let keep = cutoff - 10;
            let expect: Vec<i64> = truth
                .get(&(user, vidx))
                .map(|q| q.iter().rev().copied().filter(|&t| t >= keep).collect())
                .unwrap_or_default();
            // Records older than the cutoff may linger, never the reverse.
            let recent: Vec<i64> = seen.iter().copied().filter(|&t| t >= keep).collect();
            assert_eq!(recent, expect, "row {i}");
            truth.entry((user, vidx)).or_default().push_back(ts);
            order.push_back((user, vidx, ts));
            while order.front().is_some_and(|o| o.2 < keep) {
                let (u, v, _) = order.pop_front().expect("front");
                truth.get_mut(&(u, v)).expect("key").pop_front();
            }
            w.evict_before(cutoff);
            // Every record from `complete_from` on is live (the key filter
            // built from them relies on it).
            if i % 9_973 == 0 {
                let from = w.complete_from();
                let live: HashSet<i64> = w.live_records().map(|r| r.started_at).collect();
                for o in order.iter().filter(|o| o.2 >= from) {
                    assert!(live.contains(&o.2), "row at {} lost", o.2);
                }
            }
        }
        assert!(w.len() as i64 >= span / 10, "the window held {}", w.len());
        w.clear();
        assert!(w.is_empty() && w.live_records().next().is_none());
        let (user, vidx) = (order.back().expect("rows").0, order.back().expect("rows").1);
        let mut visited = 0;
        w.insert_visiting(Rec::new(user, vidx, rows * 10, rows), |_| visited += 1);
        assert_eq!((visited, w.len()), (0, 1));
    }
}
