//! What the data looks like: the video catalogue, popularity, the daily
//! rhythm and the shape of one play. Everything here is a pure function of
//! the seed and the flags, so any worker can produce any chunk.

use crate::prng::{derive, prob, Rng};

/// Longest wall-clock time a play may last (watched seconds plus pauses).
/// Ids follow stop times, so this bounds how far id order strays from
/// `started_at` order; the engine relies on 3 hours, this keeps 30 min slack.
pub const MAX_WALL_SECS: u32 = 9_000;
/// Longest video.
pub const MAX_DURATION: u32 = 7_200;

/// Percent of restarts in a replay group that come less than 30 s after
/// the previous play (the rest come exactly 30 s after it).
const GAP_REPLAY_PCT: u64 = 85;

const TAG_VIDEO: u64 = 1;
const TAG_CHUNK: u64 = 2;
const TAG_POPULARITY: u64 = 3;
const TAG_CREATORS: u64 = 4;
const TAG_PICKS: u64 = 5;

/// Plays per hour of the Seoul day (relative): evening peak at 21:00, trough
/// at 04:00-05:00. Interpolated linearly between hour midpoints.
const HOURLY: [u64; 24] = [
    70, 48, 30, 18, 12, 12, 16, 26, 36, 42, 46, 52, 60, 58, 56, 57, 62, 72, 84, 96, 108, 116, 104,
    86,
];
/// Plays per weekday (Monday first): weekends are busier.
const WEEKDAY: [u64; 7] = [96, 95, 95, 97, 104, 112, 110];

/// One play as generated, before it gets its id. Times are seconds since the
/// start of the generated window (Seoul midnight of the first day).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Play {
    /// When the play stopped (and was written): the id order.
    pub stop: u32,
    pub start: u32,
    pub start_pos: i32,
    pub end_pos: i32,
    pub user: u64,
    pub video: u64,
}

/// A video as the generator needs it.
#[derive(Clone, Copy, Debug)]
pub struct VideoMeta {
    pub id: u64,
    pub uploader: u64,
    pub duration: u32,
}

/// A full `videos` row.
#[derive(Clone, Debug)]
pub struct VideoRow {
    pub meta: VideoMeta,
    pub title: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The user id of creator number `c` (0-based): creators are spread evenly
/// over the user ids, at a seed-dependent offset.
pub fn creator_user_id(seed: u64, users: u64, creators: u64, c: u64) -> u64 {
    let stride = (users / creators).max(1);
    let offset = derive(seed, &[TAG_CREATORS]) % stride;
    1 + (c * stride + offset) % users
}

const ADJECTIVES: [&str; 12] = [
    "Ultimate",
    "Quick",
    "Late-night",
    "Cozy",
    "Epic",
    "Honest",
    "Tiny",
    "Hidden",
    "Daily",
    "Rainy-day",
    "Unboxing:",
    "Live:",
];
const TOPICS: [&str; 16] = [
    "ramen review",
    "Seoul night walk",
    "piano cover",
    "speedrun",
    "office vlog",
    "street food tour",
    "K-drama recap",
    "study with me",
    "camping trip",
    "coding stream",
    "dance practice",
    "baseball highlights",
    "cat compilation",
    "makeup tutorial",
    "indie game review",
    "Jeju travel diary",
];
const SUFFIXES: [&str; 6] = ["", " (full)", " part 2", " #shorts", " [4K]", " ep."];

/// Video `id` (1-based) of a freshly generated catalogue. Durations are
/// skewed short: 45% under 5 minutes, 8% of an hour or more, up to 2 hours.
pub fn video_row(seed: u64, id: u64, users: u64, creators: u64, before_unix: i64) -> VideoRow {
    let mut r = Rng::new(derive(seed, &[TAG_VIDEO, id]));
    let creator = r.skewed_below(creators);
    let uploader = creator_user_id(seed, users, creators, creator);
    let duration = match r.below(100) {
        0..=44 => r.range(15, 299),
        45..=74 => r.range(300, 1_199),
        75..=91 => r.range(1_200, 3_599),
        _ => r.range(3_600, MAX_DURATION as u64),
    } as u32;
    let adj = ADJECTIVES[r.below(ADJECTIVES.len() as u64) as usize];
    let topic = TOPICS[r.below(TOPICS.len() as u64) as usize];
    let suffix = SUFFIXES[r.below(SUFFIXES.len() as u64) as usize];
    let title = if suffix == " ep." {
        format!("{adj} {topic} ep. {}", 1 + r.below(120))
    } else {
        format!("{adj} {topic}{suffix}")
    };
    // Uploaded 1 to 1000 days before the first generated day.
    let created_at = before_unix - r.range(86_400, 1_000 * 86_400) as i64;
    VideoRow {
        meta: VideoMeta {
            id,
            uploader,
            duration,
        },
        title,
        created_at,
    }
}

/// Ranks kept in the small, cache-resident head table.
const HEAD_RANKS: usize = 2_048;

/// Walker/Vose alias table: O(1) draws from a discrete distribution. Each
/// slot carries both of its videos, so a draw reads one slot and nothing else.
struct Alias {
    slots: Vec<Slot>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// Keep `own` when the high half of the draw is below this, else `other`.
    threshold: u32,
    own: VideoMeta,
    other: VideoMeta,
}

impl Alias {
    /// `videos[i]` has weight `weights[i]`.
    fn new(weights: &[f64], videos: &[VideoMeta]) -> Alias {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<usize> = (0..n).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            alias[s] = l;
            scaled[l] = (scaled[l] + scaled[s]) - 1.0;
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        for &i in large.iter().chain(small.iter()) {
            scaled[i] = 1.0;
        }
        let slots = (0..n)
            .map(|i| Slot {
                threshold: if scaled[i] >= 1.0 {
                    u32::MAX
                } else {
                    (scaled[i] * 4_294_967_296.0) as u32
                },
                own: videos[i],
                other: videos[alias[i]],
            })
            .collect();
        Alias { slots }
    }

    #[inline]
    fn sample(&self, x: u64) -> VideoMeta {
        let i = ((x as u32 as u64 * self.slots.len() as u64) >> 32) as usize;
        let slot = &self.slots[i];
        if slot.threshold == u32::MAX || ((x >> 32) as u32) < slot.threshold {
            slot.own
        } else {
            slot.other
        }
    }
}

/// Zipf popularity (exponent 1) over the catalogue, with a seeded rank ->
/// video shuffle. Split into the top HEAD_RANKS ranks (about two thirds of
/// all plays at 100k videos, in a table that stays in cache) and the tail,
/// so most draws touch no cold memory and the others one slot.
pub struct Popularity {
    /// Chance of drawing from the head, as a u64 threshold.
    head_chance: u64,
    head: Alias,
    tail: Option<Alias>,
}

impl Popularity {
    /// Rank r (0-based) has weight 1/(r+1). Floats only shape a
    /// distribution; no amount depends on them.
    pub fn zipf(seed: u64, videos: &[VideoMeta]) -> Self {
        let n = videos.len();
        assert!(n > 0 && n <= u32::MAX as usize);
        let mut by_rank = videos.to_vec();
        let mut r = Rng::new(derive(seed, &[TAG_POPULARITY]));
        for i in (1..n).rev() {
            let j = r.below(i as u64 + 1) as usize;
            by_rank.swap(i, j);
        }
        let weights: Vec<f64> = (0..n).map(|r| 1.0 / (r as f64 + 1.0)).collect();
        let k = n.min(HEAD_RANKS);
        let head_mass: f64 = weights[..k].iter().sum();
        let total: f64 = head_mass + weights[k..].iter().sum::<f64>();
        Popularity {
            head_chance: prob(head_mass / total),
            head: Alias::new(&weights[..k], &by_rank[..k]),
            tail: (k < n).then(|| Alias::new(&weights[k..], &by_rank[k..])),
        }
    }

    /// A video, Zipf-distributed.
    #[inline]
    pub fn sample(&self, r: &mut Rng) -> VideoMeta {
        let pick = r.next_u64();
        let x = r.next_u64();
        match &self.tail {
            Some(tail) if pick >= self.head_chance => tail.sample(x),
            _ => self.head.sample(x),
        }
    }
}

/// Splits `total` into parts proportional to `weights`, exactly (largest
/// remainder, ties to the lower index), in integers.
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given = 0u64;
    for (i, &w) in weights.iter().enumerate() {
        let exact = total as u128 * w as u128;
        let q = (exact / sum) as u64;
        given += q;
        parts.push(q);
        rems.push((exact % sum, i));
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rems.iter().take((total - given) as usize) {
        parts[i] += 1;
    }
    parts
}

/// Relative play density at second `t` of the Seoul day (integer, smooth).
fn rhythm_at(t: u64) -> u64 {
    // Hour h's weight sits at h:30; interpolate between neighbours.
    let shifted = (t + 86_400 - 1_800) % 86_400;
    let h = (shifted / 3_600) as usize;
    let frac = shifted % 3_600;
    let a = HOURLY[h];
    let b = HOURLY[(h + 1) % 24];
    (a * (3_600 - frac) + b * frac) / 36
}

/// The weekday weight of a day, `days_from_ce` as in chrono (Monday = 1 mod 7).
pub fn weekday_weight(weekday_from_monday: u32) -> u64 {
    WEEKDAY[weekday_from_monday as usize % 7]
}

/// Chunk layout of a run: each Seoul day is cut into equal time slices and
/// each slice is one chunk, generated independently from (seed, day, slice).
pub struct Plan {
    pub slice_secs: u32,
    pub slices_per_day: u32,
    /// Absolute day numbers (days since 1970-01-01 of the Seoul date).
    pub abs_days: Vec<i64>,
    /// Rows per chunk, day-major.
    pub counts: Vec<u32>,
    pub total: u64,
}

/// Slice lengths that divide a day; the plan takes the longest whose busiest
/// chunk stays small, so memory in flight is bounded whatever --rows is.
const SLICE_CHOICES: [u32; 10] = [600, 300, 240, 180, 120, 60, 30, 20, 15, 10];
const MAX_CHUNK_ROWS: u64 = 50_000;

impl Plan {
    pub fn new(total: u64, abs_days: Vec<i64>, weekday_of_first: u32) -> Plan {
        let day_weights: Vec<u64> = (0..abs_days.len() as u32)
            .map(|d| weekday_weight(weekday_of_first + d))
            .collect();
        let per_day = apportion(total, &day_weights);
        let busiest = per_day.iter().copied().max().unwrap_or(0);
        // Peak density is about 2x the daily mean.
        let slice_secs = SLICE_CHOICES
            .iter()
            .copied()
            .find(|&s| busiest.saturating_mul(2 * s as u64) / 86_400 <= MAX_CHUNK_ROWS)
            .unwrap_or(*SLICE_CHOICES.last().unwrap());
        let slices_per_day = 86_400 / slice_secs;
        let slice_weights: Vec<u64> = (0..slices_per_day as u64)
            .map(|s| {
                // Midpoint density of the slice times its length.
                rhythm_at(s * slice_secs as u64 + slice_secs as u64 / 2) * slice_secs as u64
            })
            .collect();
        let mut counts = Vec::with_capacity(abs_days.len() * slices_per_day as usize);
        for &n in &per_day {
            counts.extend(
                apportion(n, &slice_weights)
                    .into_iter()
                    .map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
            );
        }
        Plan {
            slice_secs,
            slices_per_day,
            abs_days,
            counts,
            total,
        }
    }

    pub fn chunks(&self) -> usize {
        self.counts.len()
    }

    /// Window-relative start and end second of chunk `k`.
    pub fn bounds(&self, k: usize) -> (u32, u32) {
        let start = k as u32 * self.slice_secs;
        (start, start + self.slice_secs)
    }

    pub fn window_secs(&self) -> u32 {
        self.abs_days.len() as u32 * 86_400
    }
}

/// The videos of a chunk's plays, drawn from their own stream in batches:
/// the draws of a batch are independent, so the CPU overlaps their cache
/// misses instead of waiting for each in turn.
struct Picks<'a> {
    popularity: &'a Popularity,
    rng: Rng,
    batch: [VideoMeta; 64],
    at: usize,
}

impl<'a> Picks<'a> {
    fn new(popularity: &'a Popularity, seed: u64) -> Self {
        let none = VideoMeta {
            id: 0,
            uploader: 0,
            duration: 1,
        };
        Picks {
            popularity,
            rng: Rng::new(seed),
            batch: [none; 64],
            at: 64,
        }
    }

    #[inline]
    fn next(&mut self) -> VideoMeta {
        if self.at == self.batch.len() {
            for v in self.batch.iter_mut() {
                *v = self.popularity.sample(&mut self.rng);
            }
            self.at = 0;
        }
        self.at += 1;
        self.batch[self.at - 1]
    }
}

/// Sorts plays by stop time, equal stop times in generation order
/// (deterministic). Sorting packed u64 keys and gathering is about twice as
/// fast as a stable sort of the 32-byte plays.
fn sort_by_stop(plays: &mut Vec<Play>) {
    let mut keys: Vec<u64> = plays
        .iter()
        .enumerate()
        .map(|(i, p)| (p.stop as u64) << 32 | i as u64)
        .collect();
    keys.sort_unstable();
    let sorted: Vec<Play> = keys
        .iter()
        .map(|&k| plays[(k & 0xffff_ffff) as usize])
        .collect();
    *plays = sorted;
}

/// Everything a worker needs to generate chunks.
pub struct Profile {
    pub seed: u64,
    pub users: u64,
    pub popularity: Popularity,
    /// Video ids above this are unknown (used for invalid rows).
    pub max_video_id: u64,
    /// Per-event thresholds on a u64 draw (cumulative).
    t_invalid: u64,
    t_self: u64,
    t_group: u64,
    /// Chance a replay group has a second replay (a chain).
    t_chain: u64,
}

/// Rates are shares of rows. A replay group emits 1 base play and m replays
/// (m = 2 with probability 1/8), so the per-event probabilities are scaled
/// to give the requested shares of rows.
impl Profile {
    pub fn new(
        seed: u64,
        users: u64,
        videos: Vec<VideoMeta>,
        self_rate: f64,
        replay_rate: f64,
        invalid_rate: f64,
    ) -> Profile {
        let popularity = Popularity::zipf(seed, &videos);
        let max_video_id = videos.iter().map(|v| v.id).max().unwrap_or(0);
        let chain = 1.0 / 8.0;
        let mean_m = 1.0 + chain;
        // A restart exactly 30 s later is not a rapid replay (the window is
        // < 30 s): only GAP_REPLAY_PCT of restarts are.
        let q = GAP_REPLAY_PCT as f64 / 100.0;
        // Rows per event = 1 + p_group * mean_m; the replay share of rows is
        // p_group * mean_m * q / (1 + p_group * mean_m) = replay_rate.
        let p_group = replay_rate / (mean_m * (q - replay_rate));
        let rows_per_event = 1.0 + p_group * mean_m;
        let p_invalid = invalid_rate * rows_per_event;
        let p_self = self_rate * rows_per_event;
        Profile {
            seed,
            users,
            popularity,
            max_video_id,
            t_invalid: prob(p_invalid),
            t_self: prob(p_invalid + p_self),
            t_group: prob(p_invalid + p_self + p_group),
            t_chain: prob(chain),
        }
    }

    #[inline]
    fn user(&self, r: &mut Rng) -> u64 {
        // 30% of plays come from the heaviest 5% of users.
        if r.below(10) < 3 {
            1 + r.below((self.users / 20).max(1))
        } else {
            1 + r.below(self.users)
        }
    }

    /// Start/end positions of an ordinary play of a `d`-second video:
    /// 15% resume (a third of those exactly on a 5-minute mark); then 30%
    /// abandon within a minute, 35% stop part-way, 35% watch to the end.
    #[inline]
    fn positions(r: &mut Rng, d: u32) -> (i32, i32) {
        let d = d as u64;
        let mut sp = 0;
        if d > 1 && r.below(100) < 15 {
            sp = if d > 300 && r.below(3) == 0 {
                300 * r.range(1, (d - 1) / 300)
            } else {
                r.range(1, d - 1)
            };
        }
        let remaining = d - sp;
        let len = match r.below(100) {
            0..=29 => r.range(1, remaining.min(60)),
            30..=64 => r.range(1, remaining),
            _ => remaining,
        };
        (sp as i32, (sp + len) as i32)
    }

    /// Watched seconds plus, 15% of the time, a pause of up to 15 minutes.
    #[inline]
    fn wall(r: &mut Rng, watched: i64) -> u32 {
        let pause = if r.below(100) < 15 {
            r.range(1, 900)
        } else {
            0
        };
        (watched.max(0) as u64 + pause).min(MAX_WALL_SECS as u64) as u32
    }

    /// The plays of chunk `k`, sorted by stop time (ties in generation order).
    pub fn chunk(&self, plan: &Plan, k: usize, out: &mut Vec<Play>) {
        out.clear();
        let n = plan.counts[k] as usize;
        if n == 0 {
            return;
        }
        let day = k / plan.slices_per_day as usize;
        let slice = (k % plan.slices_per_day as usize) as u64;
        let (lo, hi) = plan.bounds(k);
        let last_second = plan.window_secs() - 1;
        let mut r = Rng::new(derive(
            self.seed,
            &[
                TAG_CHUNK,
                plan.abs_days[day] as u64,
                slice,
                plan.slice_secs as u64,
            ],
        ));
        let mut picks = Picks::new(
            &self.popularity,
            derive(
                self.seed,
                &[
                    TAG_PICKS,
                    plan.abs_days[day] as u64,
                    slice,
                    plan.slice_secs as u64,
                ],
            ),
        );
        while out.len() < n {
            let start = lo + r.below((hi - lo) as u64) as u32;
            let u = r.next_u64();
            if u < self.t_invalid {
                out.push(self.invalid(&mut r, picks.next(), start));
            } else if u < self.t_self {
                let v = picks.next();
                let (sp, ep) = Self::positions(&mut r, v.duration);
                out.push(Play {
                    stop: start + Self::wall(&mut r, (ep - sp) as i64),
                    start,
                    start_pos: sp,
                    end_pos: ep,
                    user: v.uploader,
                    video: v.id,
                });
            } else if u < self.t_group && n - out.len() >= 2 {
                let m = if r.chance(self.t_chain) && n - out.len() >= 3 {
                    2
                } else {
                    1
                };
                self.replay_group(&mut r, picks.next(), start, m, last_second, out);
            } else {
                let v = picks.next();
                let (sp, ep) = Self::positions(&mut r, v.duration);
                out.push(Play {
                    stop: start + Self::wall(&mut r, (ep - sp) as i64),
                    start,
                    start_pos: sp,
                    end_pos: ep,
                    user: self.user(&mut r),
                    video: v.id,
                });
            }
        }
        sort_by_stop(out);
    }

    /// A base play abandoned within seconds and `m` restarts of it by the
    /// same viewer: 10% at the very same second, 15% exactly 30 s later
    /// (the boundary: not a rapid replay), the rest 1-29 s later.
    fn replay_group(
        &self,
        r: &mut Rng,
        v: VideoMeta,
        start: u32,
        m: usize,
        last: u32,
        out: &mut Vec<Play>,
    ) {
        let mut user = self.user(r);
        if user == v.uploader {
            user = user % self.users + 1;
        }
        let mut t = start;
        for _ in 0..m {
            let gap = match r.below(100) {
                0..=9 => 0,
                p if p >= GAP_REPLAY_PCT => 30,
                _ => r.range(1, 29) as u32,
            }
            .min(last - t);
            let watched = r.below(gap.min(v.duration) as u64 + 1) as i32;
            out.push(Play {
                stop: t + watched as u32,
                start: t,
                start_pos: 0,
                end_pos: watched,
                user,
                video: v.id,
            });
            t += gap;
        }
        let (sp, ep) = Self::positions(r, v.duration);
        out.push(Play {
            stop: t + Self::wall(r, (ep - sp) as i64),
            start: t,
            start_pos: sp,
            end_pos: ep,
            user,
            video: v.id,
        });
    }

    /// An invalid row, split evenly among: a video id not in `videos`, an
    /// end position before the start, an end position past the duration.
    fn invalid(&self, r: &mut Rng, v: VideoMeta, start: u32) -> Play {
        let user = self.user(r);
        let kind = r.below(3);
        let d = v.duration as u64;
        let (video, sp, ep, watched) = match kind {
            0 => {
                let fake_duration = r.range(60, 3_600) as u32;
                let (sp, ep) = Self::positions(r, fake_duration);
                (
                    self.max_video_id + 1 + r.below(1_000),
                    sp,
                    ep,
                    (ep - sp) as i64,
                )
            }
            1 => {
                let sp = r.range(1, d.max(2) - 1) as i64;
                let ep = sp - r.range(1, sp.min(600) as u64) as i64;
                (v.id, sp as i32, ep as i32, r.below(60) as i64)
            }
            _ => {
                let sp = r.below(d) as i64;
                let ep = d as i64 + r.range(1, 600) as i64;
                (v.id, sp as i32, ep as i32, ep - sp)
            }
        };
        Play {
            stop: start + Self::wall(r, watched),
            start,
            start_pos: sp,
            end_pos: ep,
            user,
            video,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_is_exact() {
        let parts = apportion(1_000_003, &[3, 1, 1, 7]);
        assert_eq!(parts.iter().sum::<u64>(), 1_000_003);
        assert_eq!(apportion(2, &[1, 1, 1]), vec![1, 1, 0]);
    }

    #[test]
    fn rhythm_peaks_in_the_evening() {
        let peak = (0..86_400)
            .step_by(60)
            .max_by_key(|&t| rhythm_at(t))
            .unwrap();
        let trough = (0..86_400)
            .step_by(60)
            .min_by_key(|&t| rhythm_at(t))
            .unwrap();
        assert!((20 * 3600..22 * 3600).contains(&peak), "peak at {peak}");
        assert!((3 * 3600..6 * 3600).contains(&trough), "trough at {trough}");
    }

    #[test]
    fn zipf_shares_match_the_harmonic_series() {
        let videos: Vec<VideoMeta> = (1..=5_000)
            .map(|id| VideoMeta {
                id,
                uploader: 1,
                duration: 60,
            })
            .collect();
        let pop = Popularity::zipf(7, &videos);
        let mut r = Rng::new(1);
        let mut counts = vec![0u32; 5_001];
        let draws = 400_000;
        for _ in 0..draws {
            counts[pop.sample(&mut r).id as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // H(5000) = 9.094: the top video has 11.0%, the top 2048 (the head)
        // H(2048)/H(5000) = 90.2%.
        let top = counts[0] as f64 / draws as f64;
        let head = counts[..2_048].iter().sum::<u32>() as f64 / draws as f64;
        assert!((top - 0.110).abs() < 0.005, "top share {top}");
        assert!((head - 0.902).abs() < 0.01, "head share {head}");
    }

    #[test]
    fn chunks_respect_bounds_and_wall() {
        let videos: Vec<VideoMeta> = (1..=100)
            .map(|id| video_row(1, id, 1_000, 10, 0).meta)
            .collect();
        let profile = Profile::new(1, 1_000, videos, 0.01, 0.05, 0.01);
        let plan = Plan::new(50_000, vec![19_905, 19_906], 0);
        let mut out = Vec::new();
        let mut total = 0;
        for k in 0..plan.chunks() {
            profile.chunk(&plan, k, &mut out);
            let (lo, _) = plan.bounds(k);
            for p in &out {
                assert!(p.start >= lo && p.start < plan.window_secs());
                assert!(p.stop >= p.start && p.stop - p.start <= MAX_WALL_SECS);
            }
            assert!(out.windows(2).all(|w| w[0].stop <= w[1].stop));
            total += out.len();
        }
        assert_eq!(total, 50_000);
    }
}
