//! The exact path for rapid_replay: settles what the per-partition windows
//! could not decide, so the result does not depend on partition boundaries,
//! worker count or physical row order.
//!
//! After the pass, every play whose provisional decision can be wrong lies
//! within 30 s after a *seed* of the same (user, video):
//! - a late row (never aggregated), or
//! - a row of partition P that started no later than 30 s after the newest
//!   play of any lower-id partition (only such rows can pair with a play in
//!   another partition, and of a cross-partition pair the higher-id side is
//!   always such a row).
//!
//! For each cluster of seeds the plays of the seeds' keys around them are
//! re-read from the same snapshot; the provisional decision (same partition,
//! non-late predecessors only, exactly what the window computed) and the
//! true one are both recomputed and the difference is applied.

use rustc_hash::{FxHashMap, FxHashSet};
use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::pipeline::aggregate::{head_reach, Cell, Seed};
use crate::pipeline::catalog::{Catalog, NO_VIDEO};
use crate::pipeline::keyfilter::KeyFilter;
use crate::pipeline::partition::{Partition, Scope};
use crate::pipeline::read::{Play, PLAY_COLUMNS};
use crate::pipeline::totals::Totals;
use crate::rules::calendar::{pg_micros_to_utc, seoul_day_pg, utc_to_pg_micros};
use crate::rules::{ad_views, REPLAY_WINDOW_MICROS};

/// What a partition leaves for the exact path.
#[derive(Clone, Debug)]
pub struct Edges {
    pub partition: Partition,
    pub ts_lo: Option<i64>,
    pub ts_hi: Option<i64>,
    pub head: Vec<Seed>,
    pub late: Vec<Seed>,
    pub allowance: i64,
    /// The partition's final window keys (`None`: unknown).
    pub keys: Option<KeyFilter>,
    /// Head rows already cleared by `prune_heads` through lower partitions'
    /// key filters.
    pub cleared: u64,
}

/// Seeds closer than this are re-read in one query.
const CLUSTER_GAP_MICROS: i64 = 10 * 60 * 1_000_000;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExactPathStats {
    /// Plays the windows could not decide (seeds: late and edge rows).
    pub seeds: u64,
    pub late_rows: u64,
    /// Plays re-read from the snapshot to decide them.
    pub reread_rows: u64,
    pub queries: u64,
    /// Partitions whose retained edge was too short and had it re-read.
    pub refetched_edges: u64,
    /// Head rows that needed no re-read: no lower partition held a play of
    /// their (user, video) within 30 s, by its time span or key filter.
    pub cleared_heads: u64,
    /// Plays whose provisional decision was corrected.
    pub corrections: u64,
}

/// Plays of the seeds' keys re-read from the database. Separated from the
/// decision logic so that the logic can be tested without a server.
pub trait PlaySource {
    #[allow(async_fn_in_trait)]
    async fn plays_near(
        &self,
        keys: &[(i64, i64)],
        lo: i64,
        hi: i64,
        scope: &Scope,
    ) -> Result<Vec<Play>>;
    #[allow(async_fn_in_trait)]
    async fn partition_edge(&self, p: &Partition, upto: i64, scope: &Scope) -> Result<Vec<Play>>;
}

impl PlaySource for Client {
    async fn plays_near(
        &self,
        keys: &[(i64, i64)],
        lo: i64,
        hi: i64,
        scope: &Scope,
    ) -> Result<Vec<Play>> {
        let users: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let videos: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let lo = scope.read_lo.map_or(lo, |r| r.max(lo));
        let hi_excl = scope
            .read_hi
            .map_or(hi.saturating_add(1), |r| r.min(hi.saturating_add(1)));
        let sql = format!(
            "SELECT {cols} FROM viewing_log v \
             JOIN (SELECT DISTINCT u, vid FROM unnest($1::int8[], $2::int8[]) AS k(u, vid)) k \
               ON v.user_id = k.u AND v.video_id = k.vid \
             WHERE v.started_at >= $3 AND v.started_at < $4",
            cols = PLAY_COLUMNS
                .split(", ")
                .map(|c| format!("v.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = self
            .query(
                &sql,
                &[
                    &users,
                    &videos,
                    &pg_micros_to_utc(lo),
                    &pg_micros_to_utc(hi_excl),
                ],
            )
            .await
            .db("re-reading plays for the rapid_replay exact path")?;
        Ok(rows.iter().map(play_from_row).collect())
    }

    async fn partition_edge(&self, p: &Partition, upto: i64, scope: &Scope) -> Result<Vec<Play>> {
        let mut sql = format!(
            "SELECT {PLAY_COLUMNS} FROM viewing_log WHERE id >= $1 AND id <= $2 AND started_at <= $3"
        );
        let cond = scope.sql_condition();
        if !cond.is_empty() {
            sql.push_str(" AND ");
            sql.push_str(&cond);
        }
        let rows = self
            .query(&sql, &[&p.id_lo, &p.id_hi, &pg_micros_to_utc(upto)])
            .await
            .db("re-reading a partition edge for the rapid_replay exact path")?;
        Ok(rows.iter().map(play_from_row).collect())
    }
}

fn play_from_row(r: &tokio_postgres::Row) -> Play {
    Play {
        id: r.get(0),
        user_id: r.get(1),
        video_id: r.get(2),
        started_at: utc_to_pg_micros(r.get(3)),
        start_position: r.get(4),
        end_position: r.get(5),
    }
}

/// Valid, not self_play: the plays rapid_replay is about.
fn is_candidate(catalog: &Catalog, p: &Play) -> Option<u32> {
    let m = catalog.meta(p.video_id);
    if m.vidx == NO_VIDEO {
        return None;
    }
    let ok =
        0 <= p.start_position && p.start_position <= p.end_position && p.end_position <= m.duration;
    (ok && m.uploader != p.user_id).then_some(m.vidx)
}

/// Which of a partition's head rows are seeds, once the newest play of
/// every partition below it is known.
enum HeadUse {
    /// None: nothing lies below (the first partition) or it has no plays.
    None,
    /// Disorder beyond the allowance: the retained head is too short, so
    /// the edge up to this time is taken from the database instead.
    Refetch(i64),
    /// The head rows that started no later than this.
    Upto(i64),
}

fn head_use(e: &Edges, newest_below: Option<i64>) -> HeadUse {
    match (newest_below, e.ts_lo) {
        (Some(h), Some(lo)) => {
            let reach = h.saturating_add(REPLAY_WINDOW_MICROS);
            if reach > lo.saturating_add(head_reach(e.allowance)) {
                HeadUse::Refetch(reach)
            } else {
                HeadUse::Upto(reach)
            }
        }
        _ => HeadUse::None,
    }
}

/// Whether a head row can have a play of a lower partition (`lower`)
/// within 30 s, before or after it. No, when every lower partition's time
/// span is further away or its window's key filter, complete from before
/// the row's 30 s look-back, has never seen the row's key. Late rows are
/// not in the filters, but they are seeds themselves: their own re-read
/// covers the 30 s after them, so the head row is decided there.
fn may_pair(s: &Seed, lower: &[Edges]) -> bool {
    lower.iter().any(|q| {
        let (Some(lo), Some(hi)) = (q.ts_lo, q.ts_hi) else {
            return false;
        };
        if s.started_at < lo.saturating_sub(REPLAY_WINDOW_MICROS)
            || s.started_at > hi.saturating_add(REPLAY_WINDOW_MICROS)
        {
            return false;
        }
        match &q.keys {
            Some(f) if s.started_at.saturating_sub(REPLAY_WINDOW_MICROS) >= f.complete_from => {
                f.may_contain(s.user_id, s.video_id)
            }
            _ => true,
        }
    })
}

/// Keeps the head rows of `e` that are seeds: up to `reach`, and able to
/// pair with a lower partition. Returns how many the key filters cleared.
fn keep_seeds(e: &mut Edges, lower: &[Edges], reach: i64) -> u64 {
    e.head.retain(|s| s.started_at <= reach);
    let before = e.head.len();
    e.head.retain(|s| may_pair(s, lower));
    e.head.shrink_to_fit();
    (before - e.head.len()) as u64
}

/// Drops the head rows that cannot become seeds, for every finished
/// partition whose lower partitions (by `id`, per `plan_lo`, the sorted
/// `id_lo`s of the whole plan) have all finished. Heads hold a partition's
/// first hours of plays, most of which cannot pair across partitions;
/// keeping them all until the exact path grew the read's memory by a
/// partition's head per partition. `resolve` then selects the same seeds.
pub fn prune_heads(edges: &mut [Edges], plan_lo: &[i64]) {
    edges.sort_by_key(|e| e.partition.id_lo);
    let mut newest_below: Option<i64> = None;
    for (next, &lo) in plan_lo.iter().enumerate() {
        // Edges are unique per partition, so the prefix is complete while
        // the next edge is the next partition of the plan.
        if edges.get(next).is_none_or(|e| e.partition.id_lo != lo) {
            return;
        }
        let (lower, rest) = edges.split_at_mut(next);
        let e = &mut rest[0];
        match head_use(e, newest_below) {
            HeadUse::Upto(reach) => e.cleared += keep_seeds(e, lower, reach),
            HeadUse::None | HeadUse::Refetch(_) => e.head = Vec::new(),
        }
        if let Some(hi) = e.ts_hi {
            newest_below = Some(newest_below.map_or(hi, |h| h.max(hi)));
        }
    }
}

/// Resolves all seeds and applies the corrections to `totals`. The
/// clusters' plays are re-read a round at a time, one cluster on each
/// source (each its own backend in the run's snapshot, so the server's
/// share of the path runs on as many cores), and applied in cluster order.
pub async fn resolve<S: PlaySource>(
    sources: &[&S],
    edges: &mut [Edges],
    catalog: &Catalog,
    scope: &Scope,
    totals: &mut Totals,
) -> Result<ExactPathStats> {
    let mut stats = ExactPathStats::default();
    let first = *sources.first().expect("at least one source of plays");
    let (seeds, late_ids) = collect_seeds(first, edges, catalog, scope, &mut stats).await?;
    stats.seeds = seeds.len() as u64;
    if seeds.is_empty() {
        return Ok(stats);
    }
    let parts: Vec<(i64, i64)> = edges
        .iter()
        .map(|e| (e.partition.id_lo, e.partition.id_hi))
        .collect();
    let fix = Fixer {
        catalog,
        scope,
        late_ids: &late_ids,
        parts: &parts,
    };
    let clusters = clusters_of(seeds);
    for round in clusters.chunks(sources.len()) {
        let mut asked = Vec::with_capacity(round.len());
        for (c, source) in round.iter().zip(sources) {
            asked.push(source.plays_near(&c.keys, c.lo, c.hi, scope));
        }
        let answers = futures_util::future::try_join_all(asked).await?;
        for (c, plays) in round.iter().zip(answers) {
            stats.queries += 1;
            stats.reread_rows += plays.len() as u64;
            stats.corrections += fix.apply(c.lo, plays, totals);
        }
    }
    Ok(stats)
}

/// Seeds: late rows everywhere, and each partition's head up to 30 s past
/// the newest play of the partitions below it; and the late rows' ids.
async fn collect_seeds(
    source: &impl PlaySource,
    edges: &mut [Edges],
    catalog: &Catalog,
    scope: &Scope,
    stats: &mut ExactPathStats,
) -> Result<(Vec<Seed>, FxHashSet<i64>)> {
    edges.sort_by_key(|e| e.partition.id_lo);
    let mut seeds: Vec<Seed> = Vec::new();
    let mut late_ids: FxHashSet<i64> = FxHashSet::default();
    let mut newest_below: Option<i64> = None;
    for i in 0..edges.len() {
        let (lower, rest) = edges.split_at_mut(i);
        let e = &mut rest[0];
        stats.late_rows += e.late.len() as u64;
        for s in &e.late {
            late_ids.insert(s.id);
        }
        seeds.extend_from_slice(&e.late);
        match head_use(e, newest_below) {
            HeadUse::None => {}
            HeadUse::Refetch(reach) => {
                stats.refetched_edges += 1;
                for p in source.partition_edge(&e.partition, reach, scope).await? {
                    if is_candidate(catalog, &p).is_some() && !late_ids.contains(&p.id) {
                        seeds.push(Seed {
                            user_id: p.user_id,
                            video_id: p.video_id,
                            started_at: p.started_at,
                            id: p.id,
                        });
                    }
                }
            }
            HeadUse::Upto(reach) => {
                e.cleared += keep_seeds(e, lower, reach);
                stats.cleared_heads += e.cleared;
                seeds.extend_from_slice(&e.head);
            }
        }
        if let Some(hi) = e.ts_hi {
            newest_below = Some(newest_below.map_or(hi, |h| h.max(hi)));
        }
    }
    Ok((seeds, late_ids))
}

/// Seeds no further apart than the gap, re-read in one query: their keys
/// and the time span around them.
struct Cluster {
    keys: Vec<(i64, i64)>,
    lo: i64,
    hi: i64,
}

fn clusters_of(mut seeds: Vec<Seed>) -> Vec<Cluster> {
    seeds.sort_by_key(|s| (s.started_at, s.id));
    let mut out = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i + 1;
        while j < seeds.len() && seeds[j].started_at - seeds[j - 1].started_at <= CLUSTER_GAP_MICROS
        {
            j += 1;
        }
        let mut keys: Vec<(i64, i64)> = seeds[i..j]
            .iter()
            .map(|s| (s.user_id, s.video_id))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        out.push(Cluster {
            keys,
            lo: seeds[i].started_at - REPLAY_WINDOW_MICROS,
            hi: seeds[j - 1].started_at + REPLAY_WINDOW_MICROS,
        });
        i = j;
    }
    out
}

/// Recomputes the provisional and the true decision of a cluster's plays
/// and applies the difference.
struct Fixer<'a> {
    catalog: &'a Catalog,
    scope: &'a Scope,
    late_ids: &'a FxHashSet<i64>,
    /// Every partition's id range, sorted.
    parts: &'a [(i64, i64)],
}

impl Fixer<'_> {
    fn part_of(&self, id: i64) -> usize {
        match self.parts.binary_search_by(|&(lo, _)| lo.cmp(&id)) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Applies one cluster's corrections (re-read from `lo`); returns how many.
    fn apply(&self, lo: i64, plays: Vec<Play>, totals: &mut Totals) -> u64 {
        let mut corrections = 0;
        let mut groups: FxHashMap<(i64, i64), Vec<(Play, u32)>> = FxHashMap::default();
        for p in plays {
            if let Some(v) = is_candidate(self.catalog, &p) {
                groups
                    .entry((p.user_id, p.video_id))
                    .or_default()
                    .push((p, v));
            }
        }
        for (_, mut g) in groups {
            g.sort_by_key(|(p, _)| (p.started_at, p.id));
            for n in 0..g.len() {
                let (p, v) = g[n];
                // Only plays whose whole 30 s look-back was re-read, and that count.
                if p.started_at < lo + REPLAY_WINDOW_MICROS || !self.scope.in_count(p.started_at) {
                    continue;
                }
                let sign = self.sign(&g, n);
                if sign != 0 {
                    corrections += 1;
                    let watch = (p.end_position - p.start_position) as i64;
                    let ads = ad_views(p.start_position, p.end_position) as i64;
                    totals.apply(
                        seoul_day_pg(p.started_at).0,
                        v,
                        Cell {
                            views: sign,
                            watch_seconds: sign * watch,
                            ad_views: sign * ads,
                        },
                    );
                }
            }
        }
        corrections
    }

    /// +1 when play `n` of its key's group counts but was provisionally a
    /// replay (or late, never aggregated), -1 the other way, 0 when the
    /// provisional decision stands.
    fn sign(&self, g: &[(Play, u32)], n: usize) -> i64 {
        let p = g[n].0;
        let true_replay = n > 0 && p.started_at - g[n - 1].0.started_at < REPLAY_WINDOW_MICROS;
        if self.late_ids.contains(&p.id) {
            return if true_replay { 0 } else { 1 };
        }
        let my_part = self.part_of(p.id);
        let prov_replay = g[..n]
            .iter()
            .rev()
            .take_while(|(q, _)| p.started_at - q.started_at < REPLAY_WINDOW_MICROS)
            .any(|(q, _)| !self.late_ids.contains(&q.id) && self.part_of(q.id) == my_part);
        match (prov_replay, true_replay) {
            (true, false) => 1,
            (false, true) => -1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// One `plays_near` call: keys, from, to.
    type Asked = (Vec<(i64, i64)>, i64, i64);

    /// Records what the exact path asks for and returns no plays.
    #[derive(Default)]
    struct Recorder {
        asked: RefCell<Vec<Asked>>,
        edges: RefCell<Vec<(u32, i64)>>,
    }

    impl PlaySource for Recorder {
        async fn plays_near(
            &self,
            keys: &[(i64, i64)],
            lo: i64,
            hi: i64,
            _scope: &Scope,
        ) -> Result<Vec<Play>> {
            self.asked.borrow_mut().push((keys.to_vec(), lo, hi));
            Ok(Vec::new())
        }

        async fn partition_edge(
            &self,
            p: &Partition,
            upto: i64,
            _scope: &Scope,
        ) -> Result<Vec<Play>> {
            self.edges.borrow_mut().push((p.no, upto));
            Ok(Vec::new())
        }
    }

    fn lcg(x: &mut u64) -> u64 {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *x >> 33
    }

    /// Partitions with random heads, time spans and disorder, some beyond
    /// the allowance (refetched) and some empty.
    fn random_edges(seed: u64) -> Vec<Edges> {
        let mut x = seed;
        let minute = 60 * 1_000_000i64;
        let n = 1 + lcg(&mut x) as usize % 9;
        let mut t = 0i64;
        (0..n)
            .map(|i| {
                let allowance = (1 + lcg(&mut x) as i64 % 20) * minute;
                let empty = lcg(&mut x).is_multiple_of(7);
                // Whole half-minutes, so that plays fall exactly on the
                // 30 s boundaries too.
                let half = minute / 2;
                let lo = t - (lcg(&mut x) as i64 % 60) * half;
                let hi = lo + (lcg(&mut x) as i64 % 120) * half;
                t = hi;
                let reach = lo + head_reach(allowance);
                let head = if empty {
                    Vec::new()
                } else {
                    (0..lcg(&mut x) % 200)
                        .map(|k| Seed {
                            user_id: (lcg(&mut x) % 5) as i64,
                            video_id: (lcg(&mut x) % 3) as i64,
                            started_at: lo
                                + (lcg(&mut x) as i64 % ((reach - lo) / half + 1)) * half,
                            id: i as i64 * 1000 + k as i64,
                        })
                        .collect()
                };
                // Some partitions know their window's keys, from some time on.
                let keys = (!lcg(&mut x).is_multiple_of(3)).then(|| {
                    let from = lo + (lcg(&mut x) as i64 % 120) * half;
                    let mut f = KeyFilter::with_capacity(8, from);
                    for _ in 0..lcg(&mut x) % 8 {
                        f.insert((lcg(&mut x) % 5) as i64, (lcg(&mut x) % 3) as i64);
                    }
                    f
                });
                Edges {
                    partition: Partition {
                        no: i as u32,
                        id_lo: i as i64 * 1000,
                        id_hi: i as i64 * 1000 + 999,
                    },
                    ts_lo: (!empty).then_some(lo),
                    ts_hi: (!empty).then_some(hi),
                    head,
                    late: Vec::new(),
                    allowance,
                    keys,
                    cleared: 0,
                }
            })
            .collect()
    }

    /// Over several connections the exact path asks for the same clusters
    /// as over one, dealt to them in turn; edges are refetched on the first.
    #[test]
    fn clusters_are_dealt_to_the_sources_in_turn() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let catalog = Catalog::new(vec![(0, -1, 100), (1, -1, 100), (2, -1, 100)]);
        let scope = Scope::default();
        let mut several = 0;
        for seed in 1..200u64 {
            let one = Recorder::default();
            let (a, b) = (Recorder::default(), Recorder::default());
            for sources in [vec![&one], vec![&a, &b]] {
                let mut totals = Totals::new(&catalog);
                let mut edges = random_edges(seed);
                rt.block_on(resolve(&sources, &mut edges, &catalog, &scope, &mut totals))
                    .expect("resolve");
            }
            let (alone, even, odd) = (one.asked.take(), a.asked.take(), b.asked.take());
            several += u32::from(!odd.is_empty());
            let mut dealt = Vec::new();
            let mut odd = odd.into_iter();
            for e in even {
                dealt.push(e);
                dealt.extend(odd.next());
            }
            assert_eq!(dealt, alone, "seed {seed}");
            assert_eq!(a.edges.take(), one.edges.take(), "seed {seed}");
            assert!(b.edges.take().is_empty(), "seed {seed}");
        }
        assert!(several > 20, "{several} cases used both sources");
    }

    /// Pruning heads as partitions finish, in any order, leaves the exact
    /// path with the same seeds, queries and refetches as keeping them all.
    #[test]
    fn pruning_heads_keeps_the_same_seeds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let catalog = Catalog::new(vec![(0, -1, 100), (1, -1, 100), (2, -1, 100)]);
        let scope = Scope::default();
        let mut pruned_some = 0;
        for seed in 1..300u64 {
            let all = random_edges(seed);
            let plan_lo: Vec<i64> = all.iter().map(|e| e.partition.id_lo).collect();
            // Finish partitions in a shuffled order, pruning after each.
            let mut order: Vec<usize> = (0..all.len()).collect();
            let mut x = seed ^ 0x5eed;
            for i in (1..order.len()).rev() {
                order.swap(i, lcg(&mut x) as usize % (i + 1));
            }
            let mut pruned: Vec<Edges> = Vec::new();
            for i in order {
                pruned.push(all[i].clone());
                prune_heads(&mut pruned, &plan_lo);
            }
            let before: usize = all.iter().map(|e| e.head.len()).sum();
            let after: usize = pruned.iter().map(|e| e.head.len()).sum();
            assert!(after <= before);
            pruned_some += (after < before) as u32;

            let run = |mut edges: Vec<Edges>| {
                let src = Recorder::default();
                let mut totals = Totals::new(&catalog);
                let stats = rt
                    .block_on(resolve(&[&src], &mut edges, &catalog, &scope, &mut totals))
                    .expect("resolve");
                (
                    stats.seeds,
                    stats.cleared_heads,
                    stats.refetched_edges,
                    src.asked.take(),
                    src.edges.take(),
                )
            };
            assert_eq!(run(all), run(pruned), "seed {seed}");
        }
        assert!(
            pruned_some > 100,
            "pruning removed rows in {pruned_some} cases"
        );
    }
}
