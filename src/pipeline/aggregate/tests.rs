//! The aggregator against brute-force counts: days closed mid-pass and
//! cells past u32.

use super::*;
use crate::rules::ad_views;
use crate::rules::replay::rapid_replays;
use std::collections::BTreeMap;

/// Rows over several days, out of order by up to an hour: the days
/// closed mid-pass (their tables recycled) and the rest give the same
/// sums as a brute-force count, each day once.
#[test]
fn days_closed_mid_pass_keep_every_play() {
    let catalog = Catalog::new((1..=50).map(|v| (v, 1000 + v % 7, 4_000)).collect());
    let allowance = 90 * 60 * 1_000_000;
    let mut agg = Aggregator::new(&catalog, Scope::default(), allowance);
    let mut x = 7u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let t0 = Day(19_000).start_pg_micros();
    let mut plays: Vec<Play> = Vec::new();
    for i in 0..200_000i64 {
        // 5 days of plays, each up to an hour behind its place in the
        // log; a quarter re-play the row before within 30 s.
        let start = (next() % 3_000) as i32;
        let mut p = Play {
            id: i,
            user_id: 1000 + (next() % 12) as i64,
            video_id: 1 + (next() % 50) as i64,
            started_at: t0 + i * 2_160_000 - (next() % 3_600) as i64 * 1_000_000,
            start_position: start,
            end_position: start + (next() % 1_000) as i32,
        };
        if let Some(prev) = plays.last().filter(|_| next() % 4 == 0) {
            p.user_id = prev.user_id;
            p.video_id = prev.video_id;
            p.started_at = prev.started_at + (next() % 40) as i64 * 1_000_000;
        }
        plays.push(p);
    }
    for chunk in plays.chunks(100) {
        agg.push_batch(chunk);
    }
    assert!(
        agg.flushed.len() >= 3,
        "days closed mid-pass: {}",
        agg.flushed.len()
    );
    let out = agg.finish(None);
    assert_eq!(out.counts.late_rows, 0);

    let days: Vec<i32> = out.days.iter().map(|d| d.0).collect();
    assert!(
        days.windows(2).all(|w| w[0] < w[1]),
        "each day once: {days:?}"
    );
    assert_eq!(cells_of(&out), brute_force(&catalog, &plays));
}

/// Cells pushed past `u32` views and ad views, and a re-play found
/// after the spill, so its un-count falls on the overflow map: the
/// spilled sums and the cell's own add up to the exact i64 count.
#[test]
fn cells_past_u32_spill_and_stay_exact() {
    let catalog = Catalog::new(vec![(1, 900, 4_000), (2, 901, 4_000)]);
    let mut agg = Aggregator::new(&catalog, Scope::default(), 3_600 * 1_000_000);
    let t0 = Day(19_000).start_pg_micros() + 3_600 * 1_000_000;
    let play = |id: i64, user: i64, video: i64, secs: i64, watch: i32| Play {
        id,
        user_id: user,
        video_id: video,
        started_at: t0 + secs * 1_000_000,
        start_position: 0,
        end_position: watch,
    };
    let mut plays = vec![play(0, 5, 1, 0, 60), play(1, 5, 2, 0, 60)];
    agg.push_batch(&plays);
    // One play each so far; lift the cells to the edge of `u32`.
    const LIFT_VIEWS: u32 = u32::MAX - 2;
    const LIFT_ADS: u32 = u32::MAX - 30;
    for acc in agg.days[0].1.iter_mut().filter(|a| !a.is_zero()) {
        acc.views += LIFT_VIEWS;
        acc.ads += LIFT_ADS;
    }
    for video in [1, 2] {
        let id = plays.len() as i64;
        // A long play fills the cell; a short one spills it; then a
        // play 10 s before the long one turns it into a re-play.
        plays.push(play(id, 10, video, 100, 3_000));
        plays.push(play(id + 1, 11, video, 101, 30));
        plays.push(play(id + 2, 10, video, 90, 40));
    }
    for i in 0..200i64 {
        let id = plays.len() as i64;
        plays.push(play(
            id,
            20 + i,
            1 + i % 2,
            200 + i,
            100 + (i % 7) as i32 * 300,
        ));
    }
    agg.push_batch(&plays[2..]);
    assert!(!agg.overflow.is_empty(), "the test must reach the spill");
    let out = agg.finish(None);
    let mut want = brute_force(&catalog, &plays);
    for cell in want.values_mut() {
        cell.views += i64::from(LIFT_VIEWS);
        cell.ad_views += i64::from(LIFT_ADS);
    }
    let got = cells_of(&out);
    assert!(got.values().all(|c| c.views > i64::from(u32::MAX)));
    assert!(got.values().all(|c| c.ad_views > i64::from(u32::MAX)));
    assert_eq!(got, want);
}

fn cells_of(out: &PartitionOutput) -> BTreeMap<(i32, i64), Cell> {
    let mut got = BTreeMap::new();
    for (day, cells) in &out.days {
        for (video, cell) in cells.iter() {
            got.insert((*day, video), cell);
        }
    }
    got
}

/// The SPEC's count, play by play: non-uploader plays that are not
/// rapid re-plays, by Seoul day and video.
fn brute_force(catalog: &Catalog, plays: &[Play]) -> BTreeMap<(i32, i64), Cell> {
    let mut want: BTreeMap<(i32, i64), Cell> = BTreeMap::new();
    let mut groups: BTreeMap<(i64, i64), Vec<&Play>> = BTreeMap::new();
    for p in plays
        .iter()
        .filter(|p| p.user_id != catalog.meta(p.video_id).uploader)
    {
        groups.entry((p.user_id, p.video_id)).or_default().push(p);
    }
    for g in groups.values() {
        let keys: Vec<(i64, i64)> = g.iter().map(|p| (p.started_at, p.id)).collect();
        for (p, replay) in g.iter().zip(rapid_replays(&keys)) {
            if !replay {
                let cell = want
                    .entry((seoul_day_pg(p.started_at).0, p.video_id))
                    .or_default();
                cell.merge(&Cell {
                    views: 1,
                    watch_seconds: i64::from(p.end_position - p.start_position),
                    ad_views: i64::from(ad_views(p.start_position, p.end_position)),
                });
            }
        }
    }
    want
}
