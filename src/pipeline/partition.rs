//! The range partitioner: splits the rows to read into `id` ranges that the
//! workers stream independently.

use crate::error::{DbContext, Result};
use crate::pipeline::read::PLAY_COLUMNS;

/// An inclusive `id` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    pub no: u32,
    pub id_lo: i64,
    pub id_hi: i64,
}

/// Which rows a run reads: plays started in `[lo, hi)` (PostgreSQL µs), or
/// every row when unbounded. `lo` already includes the rapid_replay look-back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub read_lo: Option<i64>,
    pub read_hi: Option<i64>,
    /// First instant that counts (rows before it are look-back context only).
    pub count_lo: Option<i64>,
}

impl Scope {
    pub fn in_count(&self, ts: i64) -> bool {
        self.count_lo.is_none_or(|lo| ts >= lo)
    }

    /// SQL condition on `started_at` (timestamps are inlined: COPY takes no
    /// parameters). Empty when unbounded.
    pub fn sql_condition(&self) -> String {
        let mut conds = Vec::new();
        if let Some(lo) = self.read_lo {
            conds.push(format!("started_at >= {}", pg_timestamp_literal(lo)));
        }
        if let Some(hi) = self.read_hi {
            conds.push(format!("started_at < {}", pg_timestamp_literal(hi)));
        }
        conds.join(" AND ")
    }
}

/// A `timestamptz` literal for PostgreSQL microseconds since 2000-01-01 UTC.
pub fn pg_timestamp_literal(pg_micros: i64) -> String {
    let secs = pg_micros.div_euclid(1_000_000);
    let micros = pg_micros.rem_euclid(1_000_000);
    format!("(timestamptz '2000-01-01 00:00:00+00' + interval '{secs} seconds' + interval '{micros} microseconds')")
}

/// The COPY query for one partition.
pub fn partition_query(p: &Partition, scope: &Scope) -> String {
    let mut q = format!(
        "SELECT {PLAY_COLUMNS} FROM viewing_log WHERE id >= {} AND id <= {}",
        p.id_lo, p.id_hi
    );
    let cond = scope.sql_condition();
    if !cond.is_empty() {
        q.push_str(" AND ");
        q.push_str(&cond);
    }
    q
}

/// The leaf of a log partitioned by range on `id` that holds exactly the
/// rows of ids `$1 ..= $2`: its bounds (`b.lo ..= b.hi`, MINVALUE and
/// MAXVALUE as the ends of int8) contain the range and it has no row
/// outside it (two primary-key probes). Its name comes quoted by the server.
const WHOLE_LEAF: &str = "\
    SELECT format('%I.%I', n.nspname, c.relname) \
      FROM pg_inherits i \
      JOIN pg_class c ON c.oid = i.inhrelid \
      JOIN pg_namespace n ON n.oid = c.relnamespace \
     CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), \
           '^FOR VALUES FROM \\((?:MINVALUE|''?(-?[0-9]+)''?)\\) TO \\((?:MAXVALUE|''?(-?[0-9]+)''?)\\)$') m \
     CROSS JOIN LATERAL (SELECT coalesce(m[1]::int8, -9223372036854775808) AS lo, \
                                coalesce(m[2]::int8 - 1, 9223372036854775807) AS hi) b \
     WHERE i.inhparent = 'viewing_log'::regclass \
       AND c.relkind = 'r' \
       AND pg_get_partkeydef(i.inhparent) = 'RANGE (id)' \
       AND b.lo <= $1 AND $2 <= b.hi \
       AND NOT EXISTS (SELECT 1 FROM viewing_log v WHERE v.id >= b.lo AND v.id < $1) \
       AND NOT EXISTS (SELECT 1 FROM viewing_log v WHERE v.id > $2 AND v.id <= b.hi)";

/// The binary COPY statement that streams partition `p` over `c`, which is
/// in the run's snapshot. A partition that is exactly one leaf of a log
/// partitioned by id, read with no bound on `started_at` (`--all`), is
/// copied as that table: no executor and no range test a row, which cost
/// the server 13-19 % more CPU a row (a 12.5M-row leaf: 2.81-2.86 s as a
/// table, 3.25-3.50 s as the SELECT). Anything else is the SELECT of
/// [`partition_query`]. Asked in the snapshot that reads, so the leaf holds
/// no row outside `p` in what the COPY sees.
pub async fn copy_statement(
    c: &tokio_postgres::Client,
    p: &Partition,
    scope: &Scope,
) -> Result<String> {
    if scope.read_lo.is_none() && scope.read_hi.is_none() {
        let leaves = c
            .query(WHOLE_LEAF, &[&p.id_lo, &p.id_hi])
            .await
            .db("looking for the leaf of viewing_log a partition covers")?;
        if let [leaf] = leaves.as_slice() {
            let leaf: String = leaf.get(0);
            return Ok(format!(
                "COPY {leaf} ({PLAY_COLUMNS}) TO STDOUT (FORMAT binary)"
            ));
        }
    }
    Ok(format!(
        "COPY ({}) TO STDOUT (FORMAT binary)",
        partition_query(p, scope)
    ))
}

/// Rows per partition the default aims at: big enough that the per-partition
/// edges (look-back seeds, checkpoint writes) stay a small share of the work,
/// small enough that a restart re-reads little and workers stay balanced.
/// Each edge between partitions costs the exact path about 0.25 s at 100M
/// rows; `settle run --all` with 8 partitions took 1.7-2.4 s there against
/// 3.2 s with 14 (8M rows each), and peaked at 428-437 MiB against 431-447.
/// With 4 the exact path took 0.7 s but the peak rose to 477 MiB: a
/// finishing partition's cells and its kept copy grow with its size.
pub const TARGET_ROWS_PER_PARTITION: u64 = 16_000_000;

/// Day cells one partition should hold at most, in bytes. A partition keeps
/// a dense cell per video for every day its rows touch, so sized by rows
/// alone, a catalogue of millions of videos or a log of many days blew up:
/// 2M rows over 60 days of 2M videos peaked at 3.2 GB in 2 partitions.
pub const DAY_CELLS_BUDGET: u64 = 64 << 20;

/// The default partition count for about `rows` rows over `days` Seoul days,
/// read by `streams` concurrent streams, with `day_bytes` of cells per day
/// (videos x cell size): enough partitions for [`TARGET_ROWS_PER_PARTITION`]
/// and for [`DAY_CELLS_BUDGET`] (never more than one a day, as a partition
/// holds at least one day), rounded up to a multiple of the streams so the
/// last round of partitions keeps every stream busy.
pub fn default_count(rows: u64, streams: usize, days: u64, day_bytes: u64) -> u32 {
    let streams = streams.max(1) as u64;
    let by_size = rows.div_ceil(TARGET_ROWS_PER_PARTITION).max(1);
    let by_memory = days
        .saturating_mul(day_bytes)
        .div_ceil(DAY_CELLS_BUDGET)
        .min(days)
        .max(1);
    (by_size.max(by_memory).div_ceil(streams) * streams).clamp(1, 4096) as u32
}

/// Splits `[lo, hi]` into `n` contiguous, non-empty, covering ranges.
pub fn split(lo: i64, hi: i64, n: u32) -> Vec<Partition> {
    assert!(lo <= hi, "empty id range");
    let span = hi as i128 - lo as i128 + 1;
    let n = (n.max(1) as i128).min(span);
    (0..n)
        .map(|i| {
            let a = lo as i128 + span * i / n;
            let b = lo as i128 + span * (i + 1) / n - 1;
            Partition {
                no: i as u32,
                id_lo: a as i64,
                id_hi: b as i64,
            }
        })
        .collect()
}

/// Splits `[lo, hi]` as [`split`] does, then moves each cut to the nearest
/// leaf bound (`bounds`: the first id of each leaf of a log partitioned by
/// id) within half a range's width. Ranges that cover whole leaves are read
/// by sequential scan; one inside a leaf goes through the primary key, which
/// cost the server a third more CPU per row at 100M rows.
pub fn split_aligned(lo: i64, hi: i64, n: u32, bounds: &[i64]) -> Vec<Partition> {
    let even = split(lo, hi, n);
    let inner = bounds_inside(lo, hi, bounds);
    if inner.is_empty() {
        return even;
    }
    let half = ((hi as i128 - lo as i128 + 1) / (2 * even.len() as i128)) as i64;
    let mut cuts: Vec<i64> = even
        .iter()
        .skip(1)
        .map(|p| {
            let c = p.id_lo;
            let i = inner.partition_point(|&b| b < c);
            let nearest = [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|k| inner.get(k).copied())
                .min_by_key(|&b| (b as i128 - c as i128).abs());
            match nearest {
                Some(b) if (b as i128 - c as i128).abs() <= half as i128 => b,
                _ => c,
            }
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    ranges_between(lo, hi, &cuts)
}

/// The leaf bounds that fall inside `(lo, hi]`, sorted and distinct.
fn bounds_inside(lo: i64, hi: i64, bounds: &[i64]) -> Vec<i64> {
    let mut inner: Vec<i64> = bounds
        .iter()
        .copied()
        .filter(|&b| b > lo && b <= hi)
        .collect();
    inner.sort_unstable();
    inner.dedup();
    inner
}

/// The ranges of `[lo, hi]` that start at `lo` and at each of `cuts`
/// (sorted, distinct, inside `(lo, hi]`).
fn ranges_between(lo: i64, hi: i64, cuts: &[i64]) -> Vec<Partition> {
    let starts = std::iter::once(lo).chain(cuts.iter().copied());
    let ends = cuts.iter().map(|&c| c - 1).chain(std::iter::once(hi));
    starts
        .zip(ends)
        .enumerate()
        .map(|(i, (a, b))| Partition {
            no: i as u32,
            id_lo: a,
            id_hi: b,
        })
        .collect()
}

/// Read cost of a row, relative to a range the server copies as one whole
/// leaf: a whole leaf inside a wider range goes through the SELECT form
/// (13-19 % more server CPU a row, measured on a 12.5M-row leaf), part of a
/// leaf through the primary key (about a third more). Only used to compare
/// plans.
const WHOLE_LEAF_COST: f64 = 1.0;
const LEAF_IN_RANGE_COST: f64 = 1.15;
const PART_OF_LEAF_COST: f64 = 1.33;

/// The ranges for `[lo, hi]` in about `n` partitions read by `streams`
/// streams, given the leaf bounds of a log partitioned by id: whichever of
/// these finishes first when the ranges are dealt in order to the first
/// free stream (rows taken as dense in ids):
/// - the even split ([`split`]);
/// - the even split with cuts moved to near leaf bounds ([`split_aligned`]);
/// - the leaves themselves, when there are at least `n` of them and two per
///   stream, and none is much wider than an even range (so no partition
///   holds more days' cells than the count was chosen for).
///
/// A range costs its rows at the cost of the form that reads each leaf it
/// touches (see [`WHOLE_LEAF_COST`]).
///
/// At 30M rows in leaves of 12.5M, 12.5M and 5M, two streams finished the
/// aligned 12.5M / 17.5M plan at 3.3 s and 6.3 s; at 300M, twenty even
/// ranges snapped to 24 leaves left some two leaves wide.
pub fn plan_ranges(lo: i64, hi: i64, n: u32, streams: usize, bounds: &[i64]) -> Vec<Partition> {
    let leaves = leaf_ranges(lo, hi, bounds);
    let mut candidates = vec![split_aligned(lo, hi, n, bounds), split(lo, hi, n)];
    if leaves.len() >= (n as usize).max(2 * streams.max(1)) {
        let even = (hi as f64 - lo as f64 + 1.0) / n.max(1) as f64;
        if leaves.iter().all(|p| width(p) <= 1.5 * even) {
            candidates.insert(0, leaves.clone());
        }
    }
    candidates
        .into_iter()
        .map(|c| (makespan(&c, streams, &leaves), c))
        // The first of equals: leaves, then the aligned split.
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
        .expect("at least one candidate")
}

/// The leaves inside `[lo, hi]` as ranges (the whole of it when the log is
/// not partitioned by id).
fn leaf_ranges(lo: i64, hi: i64, bounds: &[i64]) -> Vec<Partition> {
    ranges_between(lo, hi, &bounds_inside(lo, hi, bounds))
}

fn width(p: &Partition) -> f64 {
    p.id_hi as f64 - p.id_lo as f64 + 1.0
}

/// What reading `p` costs: each leaf it touches, at the cost of the form
/// that reads it.
fn read_cost(p: &Partition, leaves: &[Partition]) -> f64 {
    leaves
        .iter()
        .map(|l| {
            let (a, b) = (p.id_lo.max(l.id_lo), p.id_hi.min(l.id_hi));
            if a > b {
                return 0.0;
            }
            let rows = b as f64 - a as f64 + 1.0;
            let cost = if (a, b) != (l.id_lo, l.id_hi) {
                PART_OF_LEAF_COST
            } else if (a, b) == (p.id_lo, p.id_hi) {
                WHOLE_LEAF_COST
            } else {
                LEAF_IN_RANGE_COST
            };
            rows * cost
        })
        .sum()
}

/// When the last stream finishes if the ranges are dealt in order, each to
/// the stream free first.
fn makespan(parts: &[Partition], streams: usize, leaves: &[Partition]) -> f64 {
    let mut free = vec![0.0f64; streams.max(1)];
    for p in parts {
        let first = free
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one stream");
        *first += read_cost(p, leaves);
    }
    free.into_iter().fold(0.0, f64::max)
}

/// Splits `[a, b]` into `n` ranges as [`split`] does and stretches the
/// first down to `lo` and the last up to `hi`: a narrow run's ranges cut
/// where its rows lie and still cover the whole log. When `[a, b]` is not a
/// usable part of `[lo, hi]`, this is `split(lo, hi, n)`.
pub fn split_within(lo: i64, hi: i64, (a, b): (i64, i64), n: u32) -> Vec<Partition> {
    let (a, b) = (a.max(lo), b.min(hi));
    if a >= b || ((b as i128 - a as i128 + 1) < n as i128) {
        return split(lo, hi, n);
    }
    let mut parts = split(a, b, n);
    parts[0].id_lo = lo;
    let last = parts.len() - 1;
    parts[last].id_hi = hi;
    parts
}

/// Probes whether plays have reached a time from an id on: the median
/// `started_at` of the 16 rows from `$1`, against `$2` (true past the last
/// row). A median, so that one row logged hours late does not send the
/// bisection the wrong way; compared by the server, so that an infinite
/// `started_at`, which no client timestamp holds, is only a large one.
const STARTED_FROM_ID: &str = "\
    SELECT coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY started_at) >= $2, true) \
      FROM (SELECT started_at FROM viewing_log WHERE id >= $1 ORDER BY id LIMIT 16) s";

/// About the first id in `[lo, hi]` whose plays start at or after `t`
/// (PostgreSQL µs), by bisection on ids: ~27 primary-key probes at 100M
/// rows, where the range's own `min(id)` is a pass over its rows. The log
/// is appended in about `started_at` order; where it is not, the answer is
/// only a worse place to cut, never a lost row (see [`split_within`]).
pub async fn id_near_time(c: &tokio_postgres::Client, t: i64, lo: i64, hi: i64) -> Result<i64> {
    let probe = c
        .prepare(STARTED_FROM_ID)
        .await
        .db("preparing the probe for where the run's rows lie")?;
    let at = crate::rules::calendar::pg_micros_to_utc(t);
    let (mut a, mut b) = (lo, hi);
    while a < b {
        let m = (a as i128 + (b as i128 - a as i128) / 2) as i64;
        let reached: bool = c
            .query_one(&probe, &[&m, &at])
            .await
            .db("probing where the run's rows lie")?
            .get(0);
        if reached {
            b = m;
        } else {
            a = m + 1;
        }
    }
    Ok(a)
}

/// The first id of each leaf of `viewing_log` when it is partitioned by
/// range on `id` (as `settle datagen` loads it); empty otherwise.
pub async fn leaf_bounds(c: &tokio_postgres::Client) -> Result<Vec<i64>> {
    let rows = c
        .query(
            "SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''?(-?[0-9]+)''?\\)'))[1]::int8 \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'viewing_log'::regclass \
               AND pg_get_partkeydef(i.inhparent) = 'RANGE (id)'",
            &[],
        )
        .await
        .db("reading the partition bounds of viewing_log")?;
    Ok(rows.iter().filter_map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_aligned_snaps_cuts_to_near_leaf_bounds() {
        // Leaves as datagen cuts them (uneven, at chunk boundaries): the
        // ranges are the leaves.
        let bounds = [12_480_001, 25_010_002, 37_499_990, 50_020_000];
        let p = split_aligned(1, 62_500_000, 5, &bounds);
        let starts: Vec<i64> = p.iter().map(|p| p.id_lo).collect();
        assert_eq!(starts, [1, 12_480_001, 25_010_002, 37_499_990, 50_020_000]);
        // Two leaves, eight ranges: only the middle cut moves.
        let p = split_aligned(1, 100, 4, &[49]);
        let starts: Vec<i64> = p.iter().map(|p| p.id_lo).collect();
        assert_eq!(starts, [1, 26, 49, 76]);
        // Bounds outside the range or far from every cut change nothing.
        assert_eq!(split_aligned(1, 100, 4, &[-5, 13, 500]), split(1, 100, 4));
        // Two cuts near one bound become one.
        assert_eq!(split_aligned(1, 100, 10, &[16]).len(), 9);
        // Whatever the bounds, the ranges cover [lo, hi] exactly, in order.
        for (lo, hi, n, b) in [
            (1i64, 1000i64, 7u32, vec![3, 140, 141, 999, 1000]),
            (i64::MIN, i64::MAX, 64, vec![0, i64::MAX, i64::MIN + 1]),
            (5, 5, 3, vec![5]),
        ] {
            let p = split_aligned(lo, hi, n, &b);
            assert_eq!((p[0].id_lo, p[p.len() - 1].id_hi), (lo, hi));
            for w in p.windows(2) {
                assert_eq!(w[0].id_hi + 1, w[1].id_lo);
                assert!(w[0].id_lo <= w[0].id_hi);
            }
            assert!(p.iter().enumerate().all(|(i, p)| p.no == i as u32));
        }
    }

    #[test]
    fn split_within_cuts_inside_and_covers_the_whole_range() {
        let p = split_within(1, 1000, (401, 600), 2);
        let r: Vec<(i64, i64)> = p.iter().map(|p| (p.id_lo, p.id_hi)).collect();
        assert_eq!(r, [(1, 500), (501, 1000)]);
        let p = split_within(1, 1000, (401, 700), 3);
        let r: Vec<(i64, i64)> = p.iter().map(|p| (p.id_lo, p.id_hi)).collect();
        assert_eq!(r, [(1, 500), (501, 600), (601, 1000)]);
        // Nothing usable inside: the plain split.
        assert_eq!(split_within(1, 1000, (700, 400), 2), split(1, 1000, 2));
        assert_eq!(split_within(1, 1000, (5, 6), 4), split(1, 1000, 4));
        assert_eq!(split_within(1, 1000, (-50, 2000), 4), split(1, 1000, 4));
        assert_eq!(split_within(7, 7, (7, 7), 2), split(7, 7, 2));
    }

    #[test]
    fn plan_ranges_balances_the_streams_and_prefers_whole_leaves() {
        let ranges = |p: Vec<Partition>| -> Vec<(i64, i64)> {
            p.iter().map(|p| (p.id_lo, p.id_hi)).collect()
        };
        // 30M rows in leaves of 12.5M, 12.5M and 5M, two streams: the
        // aligned plan (12.5M / 17.5M) finishes later than an even split.
        let b30 = [1, 12_500_001, 25_000_001];
        assert_eq!(
            ranges(plan_ranges(1, 30_000_000, 2, 2, &b30)),
            [(1, 15_000_000), (15_000_001, 30_000_000)]
        );
        // 100M in 8 leaves, 8 partitions: the leaves.
        let b100: Vec<i64> = (0..8).map(|i| i * 12_500_000 + 1).collect();
        let leaves100 = leaf_ranges(1, 100_000_000, &b100);
        assert_eq!(plan_ranges(1, 100_000_000, 8, 2, &b100), leaves100);
        // 300M in 24 leaves, 20 partitions' worth: the 24 leaves, where the
        // aligned split leaves some ranges two leaves wide.
        let b300: Vec<i64> = (0..24).map(|i| i * 12_500_000 + 1).collect();
        let leaves300 = leaf_ranges(1, 300_000_000, &b300);
        assert_ne!(split_aligned(1, 300_000_000, 20, &b300), leaves300);
        assert_eq!(plan_ranges(1, 300_000_000, 20, 2, &b300), leaves300);
        // Fewer leaves than partitions (1M videos: the memory bound wants
        // 12): the aligned split, whose whole leaves are cheaper to read than
        // twelve ranges all inside leaves.
        assert_eq!(
            plan_ranges(1, 100_000_000, 12, 2, &b100),
            split_aligned(1, 100_000_000, 12, &b100)
        );
        // With no log partitioned by id: the even split.
        assert_eq!(plan_ranges(1, 1000, 4, 2, &[]), split(1, 1000, 4));
        // Whatever is chosen covers [lo, hi] exactly, in order.
        for (lo, hi, n, b) in [
            (1i64, 30_000_000i64, 2u32, b30.to_vec()),
            (1, 300_000_000, 20, b300.clone()),
            (1, 100_000_000, 12, b100.clone()),
            (5, 5, 3, vec![5]),
        ] {
            let p = plan_ranges(lo, hi, n, 2, &b);
            assert_eq!((p[0].id_lo, p[p.len() - 1].id_hi), (lo, hi));
            for w in p.windows(2) {
                assert_eq!(w[0].id_hi + 1, w[1].id_lo);
            }
            assert!(p.iter().enumerate().all(|(i, p)| p.no == i as u32));
        }
    }

    #[test]
    fn split_covers_exactly() {
        for (lo, hi, n) in [
            (1i64, 100i64, 7u32),
            (1, 3, 64),
            (-5, 5, 2),
            (i64::MIN, i64::MAX, 64),
            (42, 42, 4),
        ] {
            let parts = split(lo, hi, n);
            assert_eq!(parts.first().unwrap().id_lo, lo);
            assert_eq!(parts.last().unwrap().id_hi, hi);
            for w in parts.windows(2) {
                assert_eq!(w[0].id_hi.checked_add(1), Some(w[1].id_lo));
                assert!(w[0].id_lo <= w[0].id_hi);
            }
            assert!(parts.len() as u32 <= n);
        }
    }

    #[test]
    fn default_count_scales_with_rows() {
        // The 100M default: 31 days of 100k videos (2.4 MB of cells a day).
        let day = 100_000 * 24;
        assert_eq!(default_count(1_000, 2, 31, day), 2);
        assert_eq!(default_count(100_000_000, 1, 31, day), 7);
        assert_eq!(default_count(100_000_000, 2, 31, day), 8);
        assert_eq!(default_count(100_000_000, 4, 31, day), 8);
        assert_eq!(default_count(3_000_000, 2, 31, day), 2);
        assert_eq!(default_count(0, 4, 0, day), 4);
    }

    #[test]
    fn default_count_bounds_a_partitions_day_cells() {
        // 60 days of 2M videos (48 MB a day): 43 partitions' worth of cells,
        // rounded up to the streams, whatever the row count.
        let day = 2_000_000 * 24;
        assert_eq!(default_count(2_000_000, 2, 60, day), 44);
        assert_eq!(default_count(200_000_000, 2, 60, day), 44);
        let n = default_count(2_000_000, 2, 60, day) as u64;
        assert!(n * DAY_CELLS_BUDGET >= 60 * day);
        // A day bigger than the budget: one partition a day, no more.
        assert_eq!(default_count(1_000, 1, 10, 10 * DAY_CELLS_BUDGET), 10);
        // A year of 100k videos: 14 partitions of about 26 days.
        assert_eq!(default_count(1_000, 2, 365, 100_000 * 24), 14);
    }

    #[test]
    fn timestamp_literal_round_trips_in_text() {
        assert!(pg_timestamp_literal(-1).contains("-1 seconds"));
        assert!(pg_timestamp_literal(-1).contains("999999 microseconds"));
    }
}
