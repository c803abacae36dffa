//! Per-partition aggregation: validation, exclusions and per (video, day)
//! sums in one pass over a partition's rows, in whatever order they arrive.
//!
//! rapid_replay needs every earlier play of the same (user, video) within
//! 30 s. Rows arrive in roughly `started_at` order (a play is logged when it
//! stops), so a sliding window over `started_at` decides almost every row in
//! the pass. What the window cannot decide is handed to the exact path
//! (`replay`) as *seeds*:
//! - late rows, whose `started_at` lies more than the disorder allowance
//!   behind the newest play seen: they are not aggregated here at all;
//! - head rows, early enough in time that an earlier partition may hold a
//!   play within 30 s of them.
//!
//! Provisional decisions here use only this partition's non-late rows; the
//! exact path recomputes that same decision for the rows near seeds and
//! applies the difference, so the final sums are exact.

use rustc_hash::FxHashMap;

use crate::pipeline::catalog::{Catalog, Meta, NO_VIDEO};
use crate::pipeline::keyfilter::KeyFilter;
use crate::pipeline::partition::{Partition, Scope};
use crate::pipeline::read::Play;
use crate::pipeline::window::{prefetch_ptr, Rec, Window};
use crate::rules::calendar::{seoul_day_pg, Day};
use crate::rules::{precedes_within_window, Reject, REPLAY_WINDOW_MICROS};

pub use crate::pipeline::cells::{Cell, PackedCells};

/// A play the exact path must look at (or that marks where to look).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    pub user_id: i64,
    pub video_id: i64,
    pub started_at: i64,
    pub id: i64,
}

/// A rejected row as recorded in `rejected_play`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejected {
    pub play: PlayRecord,
    pub reason: RejectReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RejectReason {
    UnknownVideo,
    BadPosition,
}

impl From<Reject> for RejectReason {
    fn from(r: Reject) -> Self {
        match r {
            Reject::UnknownVideo => RejectReason::UnknownVideo,
            Reject::BadPosition => RejectReason::BadPosition,
        }
    }
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownVideo => "unknown_video",
            RejectReason::BadPosition => "bad_position",
        }
    }
}

/// Serializable copy of a `Play`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlayRecord {
    pub id: i64,
    pub user_id: i64,
    pub video_id: i64,
    pub started_at: i64,
    pub start_position: i32,
    pub end_position: i32,
}

impl From<&Play> for PlayRecord {
    fn from(p: &Play) -> Self {
        PlayRecord {
            id: p.id,
            user_id: p.user_id,
            video_id: p.video_id,
            started_at: p.started_at,
            start_position: p.start_position,
            end_position: p.end_position,
        }
    }
}

/// Counts of what a partition saw, all restricted to rows that count for the
/// run's days except `rows_read` and `lookback_rows`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows_read: u64,
    pub lookback_rows: u64,
    pub self_play: u64,
    /// Valid, not self_play: counted plus rapid_replay in the end.
    pub candidates: u64,
    pub unknown_video: u64,
    pub bad_position: u64,
    pub late_rows: u64,
}

impl Counts {
    pub fn merge(&mut self, o: &Counts) {
        self.rows_read += o.rows_read;
        self.lookback_rows += o.lookback_rows;
        self.self_play += o.self_play;
        self.candidates += o.candidates;
        self.unknown_video += o.unknown_video;
        self.bad_position += o.bad_position;
        self.late_rows += o.late_rows;
    }

    pub fn rejected(&self) -> u64 {
        self.unknown_video + self.bad_position
    }
}

/// Everything a finished partition contributes; mergeable in any order and
/// serializable, so a restart can reuse it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PartitionOutput {
    pub partition: Option<Partition>,
    pub counts: Counts,
    /// Non-zero cells per day: (day, [(video_id, cell)]).
    pub days: Vec<(i32, PackedCells)>,
    pub rejected: Vec<Rejected>,
    /// Head rows, already limited to the retention cut.
    pub head: Vec<Seed>,
    pub late: Vec<Seed>,
    /// min / max `started_at` of valid non-self_play rows (incl. look-back).
    pub ts_lo: Option<i64>,
    pub ts_hi: Option<i64>,
    /// Largest (newest seen - started_at) over rows, in µs.
    pub max_lag: i64,
    /// First and last Seoul day of any row read that counts (valid or not).
    pub day_lo: Option<i32>,
    pub day_hi: Option<i32>,
    /// The disorder allowance the pass ran with.
    pub allowance: i64,
    /// Rows per Seoul day (any row, valid or not) that started in the day's
    /// last `allowance`: what a later run compares to notice plays written
    /// after the day was settled. Not kept for a restart: a run that reuses
    /// partitions records no tail counts.
    #[serde(skip)]
    pub tails: Vec<(i32, u64)>,
    /// The keys of the final window, so the exact path can clear higher
    /// partitions' head rows (`None`: unknown, every head row stays a seed).
    /// Encoded after the rest (see `jobs::repository::encode_output`), so
    /// results kept before it existed still decode.
    #[serde(skip)]
    pub window_keys: Option<KeyFilter>,
}

/// Memory one worker's passes reuse from partition to partition: the
/// window, zeroed per-day cell tables and the head buffer. Fresh ones would
/// be faulted in and zeroed by the kernel each time (15% of the client's
/// CPU at 100M rows).
#[derive(Default)]
pub struct Scratch {
    window: Window,
    spare: Vec<Vec<Acc>>,
    head: Vec<Seed>,
}

/// Rows looked up together, so their cache misses overlap.
const GROUP: usize = 16;

/// Rows a reader hands to [`Aggregator::push_batch`] at a time: long
/// enough that the pipeline's first and last groups, which have no group
/// ahead to overlap, are few.
pub const BATCH: usize = 512;

const UNKNOWN_META: Meta = Meta {
    uploader: 0,
    duration: 0,
    vidx: NO_VIDEO,
};

/// One partition's pass. Feed rows with `push`, then `finish`.
pub struct Aggregator<'a> {
    catalog: &'a Catalog,
    scope: Scope,
    allowance: i64,
    counts: Counts,
    /// Day tables by slot. A slot whose day is final is emptied, not
    /// reused, so a record's `day_slot` never points at another day.
    days: Vec<(Day, Vec<Acc>)>,
    /// Sums that left an [`Acc`]'s width, by (day slot, video index).
    overflow: FxHashMap<(u16, u32), Cell>,
    /// Non-zero cells of the days already final, by day.
    flushed: Vec<(i32, PackedCells)>,
    last_day: Option<(Day, u16)>,
    window: Window,
    newest: i64,
    rejected: Vec<Rejected>,
    head: Vec<Seed>,
    late: Vec<Seed>,
    ts_lo: i64,
    ts_hi: i64,
    max_lag: i64,
    day_lo: i32,
    day_hi: i32,
    since_evict: u32,
    spare: Vec<Vec<Acc>>,
    tails: Vec<(i32, u64)>,
    /// (day, its tail start) of the last row counted.
    tail_day: (i32, i64),
}

impl<'a> Aggregator<'a> {
    /// `allowance`: how far (µs) a row's `started_at` may trail the newest
    /// seen before it counts as late.
    pub fn new(catalog: &'a Catalog, scope: Scope, allowance: i64) -> Self {
        Self::with_scratch(catalog, scope, allowance, Scratch::default())
    }

    /// As `new`, reusing the memory of an earlier pass (see `finish_keep`).
    pub fn with_scratch(
        catalog: &'a Catalog,
        scope: Scope,
        allowance: i64,
        mut scratch: Scratch,
    ) -> Self {
        scratch.window.clear();
        scratch.head.clear();
        Aggregator {
            catalog,
            scope,
            allowance,
            counts: Counts::default(),
            days: Vec::new(),
            flushed: Vec::new(),
            overflow: FxHashMap::default(),
            last_day: None,
            window: scratch.window,
            newest: i64::MIN,
            rejected: Vec::new(),
            head: scratch.head,
            late: Vec::new(),
            ts_lo: i64::MAX,
            ts_hi: i64::MIN,
            max_lag: 0,
            day_lo: i32::MAX,
            day_hi: i32::MIN,
            since_evict: 0,
            spare: scratch.spare,
            tails: Vec::new(),
            tail_day: (i32::MIN, i64::MIN),
        }
    }

    #[inline]
    fn day_slot(&mut self, day: Day) -> u16 {
        let slot = match self.open_slot(day) {
            Some(s) => s as u16,
            None => {
                let n = self.catalog.len();
                let cells = match self.spare.pop() {
                    Some(c) if c.len() == n => c,
                    _ => vec![Acc::default(); n],
                };
                self.days.push((day, cells));
                (self.days.len() - 1) as u16
            }
        };
        self.last_day = Some((day, slot));
        slot
    }

    /// The slot of a day still open, without making one: the last row's
    /// day first, as most rows share it.
    #[inline]
    fn open_slot(&self, day: Day) -> Option<usize> {
        match self.last_day {
            Some((d, s)) if d == day => Some(s as usize),
            _ => self
                .days
                .iter()
                .position(|(d, cells)| *d == day && !cells.is_empty()),
        }
    }

    /// Pushes a batch of rows as a software pipeline a group apart: while
    /// group g is pushed, group g+1's window slots and day cells and group
    /// g+2's catalogue entries are already loading. Each load is so asked
    /// for a group of rows before it is needed, not just before, so the
    /// cache misses overlap the work instead of stalling it. Batches of
    /// [`BATCH`] rows keep the pipeline's fill and drain rare.
    pub fn push_batch(&mut self, plays: &[Play]) {
        let groups = plays.len().div_ceil(GROUP);
        let group = |g: usize| &plays[g * GROUP..((g + 1) * GROUP).min(plays.len())];
        let mut metas = [[UNKNOWN_META; GROUP]; 2];
        for g in 0..groups.min(2) {
            self.prefetch_catalog(group(g));
        }
        if groups > 0 {
            self.resolve(group(0), &mut metas[0]);
        }
        for g in 0..groups {
            if g + 2 < groups {
                self.prefetch_catalog(group(g + 2));
            }
            if g + 1 < groups {
                self.resolve(group(g + 1), &mut metas[(g + 1) % 2]);
            }
            let mine = metas[g % 2];
            for (m, p) in mine.iter().zip(group(g)) {
                self.push_meta(p, *m);
            }
        }
    }

    #[inline(always)]
    fn prefetch_catalog(&self, group: &[Play]) {
        for p in group {
            self.catalog.prefetch(p.video_id);
        }
    }

    /// Reads a group's catalogue entries into `metas` and starts loading
    /// the window slot and day cell of each row that will reach them.
    #[inline(always)]
    fn resolve(&self, group: &[Play], metas: &mut [Meta; GROUP]) {
        for (m, p) in metas.iter_mut().zip(group) {
            *m = self.catalog.meta(p.video_id);
            if m.vidx == NO_VIDEO
                || !(0 <= p.start_position
                    && p.start_position <= p.end_position
                    && p.end_position <= m.duration)
                || p.user_id == m.uploader
            {
                continue;
            }
            self.window.prefetch(p.user_id, m.vidx);
            // A late row is not aggregated, so it must not open a day:
            // look the day up without making one.
            if self.scope.in_count(p.started_at) {
                if let Some(s) = self.open_slot(seoul_day_pg(p.started_at)) {
                    prefetch_ptr(&self.days[s].1[m.vidx as usize]);
                }
            }
        }
    }

    pub fn push(&mut self, p: &Play) {
        self.push_meta(p, self.catalog.meta(p.video_id));
    }

    #[inline(always)]
    fn push_meta(&mut self, p: &Play, meta: Meta) {
        self.counts.rows_read += 1;
        let counts = self.scope.in_count(p.started_at);
        if !counts {
            self.counts.lookback_rows += 1;
        } else {
            let d = seoul_day_pg(p.started_at).0;
            self.day_lo = self.day_lo.min(d);
            self.day_hi = self.day_hi.max(d);
            if p.started_at >= self.tail_from(d) {
                match self.tails.last_mut().filter(|t| t.0 == d) {
                    Some(t) => t.1 += 1,
                    None => self.count_tail_slow(d),
                }
            }
        }
        let vidx = meta.vidx;
        if vidx == NO_VIDEO {
            if counts {
                self.counts.unknown_video += 1;
                self.rejected.push(Rejected {
                    play: p.into(),
                    reason: RejectReason::UnknownVideo,
                });
            }
            return;
        }
        let v = vidx as usize;
        let duration = meta.duration;
        if !(0 <= p.start_position
            && p.start_position <= p.end_position
            && p.end_position <= duration)
        {
            if counts {
                self.counts.bad_position += 1;
                self.rejected.push(Rejected {
                    play: p.into(),
                    reason: RejectReason::BadPosition,
                });
            }
            return;
        }
        if p.user_id == meta.uploader {
            if counts {
                self.counts.self_play += 1;
            }
            return;
        }
        if counts {
            self.counts.candidates += 1;
        }
        let ts = p.started_at;
        self.ts_lo = self.ts_lo.min(ts);
        self.ts_hi = self.ts_hi.max(ts);
        if ts > self.newest {
            self.newest = ts;
        }
        let lag = self.newest - ts;
        if lag > self.max_lag {
            self.max_lag = lag;
        }
        let seed = Seed {
            user_id: p.user_id,
            video_id: p.video_id,
            started_at: ts,
            id: p.id,
        };
        if lag > self.allowance {
            self.counts.late_rows += 1;
            self.late.push(seed);
            return;
        }
        if ts <= self.ts_lo.saturating_add(head_reach(self.allowance)) {
            self.head.push(seed);
        }

        let day_slot = if counts {
            self.day_slot(seoul_day_pg(ts))
        } else {
            u16::MAX
        };
        let mut counted = true;
        let days = &mut self.days;
        let mut uncount: Option<(u16, u32, u32)> = None;
        let rec = Rec::new(p.user_id, vidx, ts, p.id);
        self.window.insert_visiting(rec, |r| {
            if precedes_within_window(r.started_at, r.id, ts, p.id) {
                counted = false;
            } else if r.counted() && precedes_within_window(ts, p.id, r.started_at, r.id) {
                r.uncount();
                let (slot, w, a) = (r.day_slot(), r.watch(), r.ads());
                if r.counts() && !days[slot as usize].1[v].try_sub(w, a) {
                    uncount = Some((slot, w, a));
                }
            }
        });
        if let Some((slot, w, a)) = uncount {
            self.spilled_sub(slot, vidx, w, a);
        }
        // The record was appended before its outcome was known: fill it in.
        let rec = rec.with_outcome(p.start_position, p.end_position, day_slot, counted, counts);
        self.window.set_newest(rec);
        let (watch, ads) = (rec.watch(), rec.ads());
        if counted && counts && !self.days[day_slot as usize].1[v].try_add(watch, ads) {
            self.spill_add(day_slot, vidx, watch, ads);
        }
        self.since_evict += 1;
        if self.since_evict >= 1024 {
            self.since_evict = 0;
            self.evict();
        }
    }

    /// A cell too full for one more play: its sums move to the overflow map
    /// and the play starts it afresh.
    #[cold]
    fn spill_add(&mut self, slot: u16, vidx: u32, watch: u32, ads: u32) {
        let acc = &mut self.days[slot as usize].1[vidx as usize];
        self.overflow
            .entry((slot, vidx))
            .or_default()
            .merge(&acc.to_cell());
        *acc = Acc::default();
        let added = acc.try_add(watch, ads);
        debug_assert!(added, "an empty cell takes any play");
    }

    /// An un-count the cell cannot take, because its sums moved to the
    /// overflow map after the play was added: taken from there.
    #[cold]
    fn spilled_sub(&mut self, slot: u16, vidx: u32, watch: u32, ads: u32) {
        self.overflow
            .entry((slot, vidx))
            .or_default()
            .sub(watch, ads);
    }

    /// Closes a day slot: its cells packed, its table zeroed and kept for
    /// a later day, and the slot never used again.
    fn close_day(&mut self, slot: usize) -> (i32, PackedCells) {
        let day = self.days[slot].0 .0;
        let packed = self.pack_day(slot);
        self.spare.push(std::mem::take(&mut self.days[slot].1));
        if self.last_day.is_some_and(|(_, s)| s as usize == slot) {
            self.last_day = None;
        }
        (day, packed)
    }

    /// A day slot's non-zero cells, packed, leaving its table zeroed.
    fn pack_day(&mut self, slot: usize) -> PackedCells {
        let cells = &mut self.days[slot].1;
        let video_ids = &self.catalog.video_ids;
        let nonzero = cells
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| !c.is_zero())
            .map(|(i, c)| (video_ids[i], std::mem::take(c).to_cell()));
        if self.overflow.is_empty() {
            return PackedCells::from_sorted(nonzero);
        }
        let mut all: Vec<(i64, Cell)> = nonzero.collect();
        self.overflow.retain(|&(s, v), c| {
            let mine = s as usize == slot;
            if mine {
                all.push((video_ids[v as usize], *c));
            }
            !mine
        });
        all.retain(|(_, c)| !c.is_zero());
        PackedCells::from_unsorted(all)
    }

    /// Where day `d`'s tail starts, cached for the day of the last row.
    #[inline(always)]
    fn tail_from(&mut self, d: i32) -> i64 {
        if self.tail_day.0 != d {
            self.tail_day = (d, day_tail_from(Day(d), self.allowance));
        }
        self.tail_day.1
    }

    #[cold]
    fn count_tail_slow(&mut self, d: i32) {
        // The day counted last goes to the end, where the next row looks.
        match self.tails.iter().position(|t| t.0 == d) {
            Some(i) => {
                let last = self.tails.len() - 1;
                self.tails.swap(i, last);
                self.tails[last].1 += 1;
            }
            None => self.tails.push((d, 1)),
        }
    }

    /// Drops window records no non-late row can reach any more.
    fn evict(&mut self) {
        let cutoff = self
            .newest
            .saturating_sub(self.allowance)
            .saturating_sub(REPLAY_WINDOW_MICROS);
        self.window.evict_before(cutoff);
        self.flush_final_days();
    }

    /// Moves the days no row can change any more out of their dense tables,
    /// so a worker holds about two days' tables, not one per day its
    /// partition touches (24 MiB each at 1M videos).
    ///
    /// A non-late row starts at or after `newest - allowance`, and the only
    /// earlier record it can un-count starts after it, so a day that ended
    /// by then is final. `newest` only grows.
    fn flush_final_days(&mut self) {
        let settled_before = self.newest.saturating_sub(self.allowance);
        for slot in 0..self.days.len() {
            let (day, cells) = &self.days[slot];
            if !cells.is_empty() && day.next().start_pg_micros() <= settled_before {
                let closed = self.close_day(slot);
                self.flushed.push(closed);
            }
        }
    }

    /// The final window's keys: every non-late candidate that started at or
    /// after the window's last cutoff is among them.
    fn window_keys(&self) -> KeyFilter {
        let mut f = KeyFilter::with_capacity(self.window.len(), self.window.complete_from());
        for r in self.window.live_records() {
            f.insert(r.user_id, self.catalog.video_ids[r.vidx as usize]);
        }
        f
    }

    pub fn finish(self, partition: Option<Partition>) -> PartitionOutput {
        self.finish_keep(partition).0
    }

    /// Finishes the pass and hands back its memory, zeroed, for the next.
    pub fn finish_keep(mut self, partition: Option<Partition>) -> (PartitionOutput, Scratch) {
        let (ts_lo, ts_hi) = if self.ts_lo <= self.ts_hi {
            (Some(self.ts_lo), Some(self.ts_hi))
        } else {
            (None, None)
        };
        // The retained head goes out in a vector of its own size; the buffer,
        // which held the partition's first hours, stays for the next pass.
        let head: Vec<Seed> = match ts_lo {
            Some(lo) => {
                let cut = lo.saturating_add(head_reach(self.allowance));
                self.head
                    .iter()
                    .filter(|s| s.started_at <= cut)
                    .copied()
                    .collect()
            }
            None => Vec::new(),
        };
        self.head.clear();
        let mut days = std::mem::take(&mut self.flushed);
        for slot in 0..self.days.len() {
            if !self.days[slot].1.is_empty() {
                days.push(self.close_day(slot));
            }
        }
        days.sort_by_key(|d| d.0);
        let window_keys = self.window_keys();
        let out = PartitionOutput {
            partition,
            counts: self.counts,
            days,
            rejected: self.rejected,
            head,
            late: self.late,
            ts_lo,
            ts_hi,
            max_lag: self.max_lag,
            day_lo: (self.day_lo <= self.day_hi).then_some(self.day_lo),
            day_hi: (self.day_lo <= self.day_hi).then_some(self.day_hi),
            allowance: self.allowance,
            tails: self.tails,
            window_keys: Some(window_keys),
        };
        tracing::debug!(
            ring = self.window.ring_len(),
            index = self.window.index_len(),
            live = self.window.len(),
            head = out.head.len(),
            head_cap = self.head.capacity(),
            late = out.late.len(),
            rejected = out.rejected.len(),
            days = out.days.len(),
            day_bytes = out.days.iter().map(|d| d.1.heap_bytes()).sum::<usize>(),
            rss_now_mib = crate::sys::rss_now_bytes() >> 20,
            "partition window"
        );
        let scratch = Scratch {
            window: self.window,
            spare: self.spare,
            head: self.head,
        };
        (out, scratch)
    }
}

/// A worker's running sums of one video-day in 16 bytes, so a dense day
/// of 1M videos takes 16 MiB, not 24. A play that would take views or ad
/// views past `u32` spills the cell to the aggregator's overflow map;
/// watch seconds cannot overflow first (a `u32` of views of `i32` each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acc {
    watch: u64,
    views: u32,
    ads: u32,
}

impl Acc {
    #[inline(always)]
    fn try_add(&mut self, watch: u32, ads: u32) -> bool {
        match (self.views.checked_add(1), self.ads.checked_add(ads)) {
            (Some(v), Some(a)) => {
                self.views = v;
                self.ads = a;
                self.watch += u64::from(watch);
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn try_sub(&mut self, watch: u32, ads: u32) -> bool {
        let w = self.watch.checked_sub(u64::from(watch));
        match (self.views.checked_sub(1), self.ads.checked_sub(ads), w) {
            (Some(v), Some(a), Some(w)) => {
                (self.views, self.ads, self.watch) = (v, a, w);
                true
            }
            _ => false,
        }
    }

    fn is_zero(&self) -> bool {
        *self == Acc::default()
    }

    fn to_cell(self) -> Cell {
        Cell {
            views: i64::from(self.views),
            watch_seconds: self.watch as i64,
            ad_views: i64::from(self.ads),
        }
    }
}

/// Where a day's tail starts: `allowance` before the next Seoul midnight.
/// Plays of the tail may still be running, and so unwritten, when the day
/// is settled shortly after it ends.
pub fn day_tail_from(day: Day, allowance: i64) -> i64 {
    day.next().start_pg_micros().saturating_sub(allowance)
}

/// How far above a partition's earliest play the head is kept: the earlier
/// partitions' plays lie at most `allowance` after it (bounded disorder),
/// plus the 30 s window, plus 30 s of slack.
pub fn head_reach(allowance: i64) -> i64 {
    allowance.saturating_add(2 * REPLAY_WINDOW_MICROS)
}

#[cfg(test)]
mod tests;
