//! The rules core (`settle::rules`) against shared/SPEC.md, with no database.
//!
//! Expected values are worked out by hand from the SPEC (the arithmetic is in
//! the comments), never by calling the function under test a second way.
//! The property tests compare each kernel with a brute-force statement of the
//! SPEC's rule.

use chrono::{DateTime, FixedOffset, NaiveDate};
use proptest::prelude::*;
use settle::rules::calendar::{seoul_day_pg, DAY_MICROS, PG_EPOCH_DAYS, SEOUL_OFFSET_MICROS};
use settle::rules::replay::rapid_replays;
use settle::rules::{
    ad_tenths, ad_views, precedes_within_window, top5, validate, view_tenths, won_from_tenths, Day,
    Exclusion, Period, PeriodKind, Reject, REPLAY_WINDOW_MICROS,
};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const SEC: i64 = 1_000_000;

/// 2000-01-01 00:00:00 UTC as Unix microseconds (10,957 days after 1970).
const PG_EPOCH_UNIX_MICROS: i64 = 10_957 * 86_400 * SEC;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> Day {
    Day::from_date(date(y, m, d))
}

/// A Seoul wall-clock time as a PostgreSQL timestamp (µs since 2000-01-01 UTC).
/// Used only to build inputs; the calendar tests below use hand-computed µs.
fn kst_pg(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    let utc = date(y, mo, d).and_hms_opt(h, mi, s).unwrap() - chrono::Duration::hours(9);
    let pg_epoch = date(2000, 1, 1).and_hms_opt(0, 0, 0).unwrap();
    (utc - pg_epoch).num_microseconds().unwrap()
}

/// Per-ordinal price table of SPEC §3 (tenths of a won): (views, ads).
fn price_of_ordinal(n: u64) -> (u64, u64) {
    assert!(n >= 1);
    match n {
        1..=100_000 => (10, 100),
        100_001..=500_000 => (11, 120),
        500_001..=1_000_000 => (13, 150),
        _ => (15, 200),
    }
}

fn brute_view_tenths(before: u64, count: u64) -> u64 {
    (before + 1..=before + count)
        .map(|n| price_of_ordinal(n).0)
        .sum()
}

fn brute_ad_tenths(before: u64, count: u64) -> u64 {
    (before + 1..=before + count)
        .map(|n| price_of_ordinal(n).1)
        .sum()
}

/// SPEC §2 literally: integers k >= 1 with start < 300k <= end.
fn brute_ad_views(start: i32, end: i32) -> u32 {
    (1..=end / 300 + 1)
        .filter(|k| start < 300 * k && 300 * k <= end)
        .count() as u32
}

/// SPEC §4: keep values > 0, sort by (value desc, video_id asc), take 5.
fn brute_top5(items: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = items.iter().copied().filter(|&(_, x)| x > 0).collect();
    v.sort_by_key(|&(id, x)| (-x, id));
    v.truncate(5);
    v
}

/// SPEC §2 literally, O(n²): p is a rapid replay when some q comes before it in
/// (started_at, id) order and p.started_at - q.started_at < 30 s.
fn brute_rapid_replays(plays: &[(i64, i64)]) -> Vec<bool> {
    plays
        .iter()
        .map(|&p| {
            plays
                .iter()
                .any(|&q| q < p && p.0 - q.0 < REPLAY_WINDOW_MICROS)
        })
        .collect()
}

/// A small deterministic permutation source for shuffle tests (splitmix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut s = seed;
    for i in (1..out.len()).rev() {
        let j = (splitmix(&mut s) % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

// ---------------------------------------------------------------------------
// SPEC §6 worked example
// ---------------------------------------------------------------------------

/// One row of the §6 table.
struct Play {
    id: i64,
    user: i64,
    ts: i64,
    start: i32,
    end: i32,
}

const VIDEO_UPLOADER: i64 = 1;
const VIDEO_DURATION: i32 = 900;

fn worked_example() -> Vec<Play> {
    let p = |id, user, h, mi, s, start, end| Play {
        id,
        user,
        ts: kst_pg(2024, 7, 1, h, mi, s),
        start,
        end,
    };
    vec![
        p(1, 2, 10, 0, 0, 0, 610),
        p(2, 2, 10, 0, 20, 0, 10),
        p(3, 2, 10, 0, 45, 0, 10),
        p(4, 2, 10, 1, 15, 600, 900),
        p(5, 1, 11, 0, 0, 0, 900),
    ]
}

/// The SPEC's classification, assembled from the rule functions: self_play
/// first (it needs no other row), then rapid_replay within (user, video).
fn classify(plays: &[Play]) -> Vec<Option<Exclusion>> {
    let mut out = vec![None; plays.len()];
    let mut users: Vec<i64> = plays.iter().map(|p| p.user).collect();
    users.sort();
    users.dedup();
    for u in users {
        let idx: Vec<usize> = (0..plays.len()).filter(|&i| plays[i].user == u).collect();
        let group: Vec<(i64, i64)> = idx.iter().map(|&i| (plays[i].ts, plays[i].id)).collect();
        for (k, replay) in rapid_replays(&group).into_iter().enumerate() {
            if replay {
                out[idx[k]] = Some(Exclusion::RapidReplay);
            }
        }
    }
    for (i, p) in plays.iter().enumerate() {
        if p.user == VIDEO_UPLOADER {
            out[i] = Some(Exclusion::SelfPlay);
        }
    }
    out
}

#[test]
fn worked_example_every_row_is_valid() {
    for p in worked_example() {
        assert_eq!(
            validate(p.start, p.end, Some(VIDEO_DURATION)),
            Ok(()),
            "row {}",
            p.id
        );
    }
}

#[test]
fn worked_example_all_plays_fall_on_seoul_2024_07_01() {
    for p in worked_example() {
        assert_eq!(seoul_day_pg(p.ts), day(2024, 7, 1), "row {}", p.id);
    }
}

#[test]
fn worked_example_rapid_replay_over_ids_1_to_4() {
    let plays = worked_example();
    let group: Vec<(i64, i64)> = plays[..4].iter().map(|p| (p.ts, p.id)).collect();
    // id 2: 20 s after id 1; id 3: 25 s after id 2 (which did not count);
    // id 4: 30 s after id 3, exactly 30 s does not exclude.
    assert_eq!(rapid_replays(&group), vec![false, true, true, false]);
}

#[test]
fn worked_example_exclusions() {
    let plays = worked_example();
    assert_eq!(
        classify(&plays),
        vec![
            None,
            Some(Exclusion::RapidReplay),
            Some(Exclusion::RapidReplay),
            None,
            Some(Exclusion::SelfPlay),
        ]
    );
}

#[test]
fn worked_example_per_row_watch_and_ads() {
    let plays = worked_example();
    // id 1: 0..610 reaches 300 and 600 → 2 ads, 610 s.
    assert_eq!(ad_views(plays[0].start, plays[0].end), 2);
    assert_eq!(plays[0].end - plays[0].start, 610);
    // id 4: 600..900 — 600 is where it resumes (not replayed), 900 reached → 1.
    assert_eq!(ad_views(plays[3].start, plays[3].end), 1);
    assert_eq!(plays[3].end - plays[3].start, 300);
}

#[test]
fn worked_example_day_totals() {
    let plays = worked_example();
    let excl = classify(&plays);
    let (mut views, mut watch, mut ads) = (0u64, 0i64, 0u64);
    for (p, e) in plays.iter().zip(&excl) {
        if e.is_none() {
            views += 1;
            watch += (p.end - p.start) as i64;
            ads += ad_views(p.start, p.end) as u64;
        }
    }
    assert_eq!((views, watch, ads), (2, 910, 3));
}

#[test]
fn worked_example_money_variant() {
    // 99,999 prior views: ordinals 100,000 (10 tenths) and 100,001 (11 tenths).
    let vt = view_tenths(99_999, 2);
    assert_eq!(vt, 21);
    // 5 prior ad views: ordinals 6, 7, 8 at 100 tenths each.
    let at = ad_tenths(5, 3);
    assert_eq!(at, 300);
    let video_amount = won_from_tenths(vt);
    let ad_amount = won_from_tenths(at);
    assert_eq!(video_amount, 2);
    assert_eq!(ad_amount, 30);
    assert_eq!(video_amount + ad_amount, 32);
}

// ---------------------------------------------------------------------------
// pricing (SPEC §3)
// ---------------------------------------------------------------------------

#[test]
fn view_tier_boundaries_single_ordinal() {
    // view_tenths(n - 1, 1) is the price of ordinal n.
    assert_eq!(view_tenths(0, 1), 10); // ordinal 1
    assert_eq!(view_tenths(99_999, 1), 10); // 100,000
    assert_eq!(view_tenths(100_000, 1), 11); // 100,001
    assert_eq!(view_tenths(499_999, 1), 11); // 500,000
    assert_eq!(view_tenths(500_000, 1), 13); // 500,001
    assert_eq!(view_tenths(999_999, 1), 13); // 1,000,000
    assert_eq!(view_tenths(1_000_000, 1), 15); // 1,000,001
}

#[test]
fn ad_tier_boundaries_single_ordinal() {
    assert_eq!(ad_tenths(0, 1), 100);
    assert_eq!(ad_tenths(99_999, 1), 100);
    assert_eq!(ad_tenths(100_000, 1), 120);
    assert_eq!(ad_tenths(499_999, 1), 120);
    assert_eq!(ad_tenths(500_000, 1), 150);
    assert_eq!(ad_tenths(999_999, 1), 150);
    assert_eq!(ad_tenths(1_000_000, 1), 200);
}

#[test]
fn tier_boundaries_from_zero() {
    // 100,000 × 10 = 1,000,000; one more at 11.
    assert_eq!(view_tenths(0, 100_000), 1_000_000);
    assert_eq!(view_tenths(0, 100_001), 1_000_011);
    // + 400,000 × 11 = 4,400,000 → 5,400,000; one more at 13.
    assert_eq!(view_tenths(0, 500_000), 5_400_000);
    assert_eq!(view_tenths(0, 500_001), 5_400_013);
    // + 500,000 × 13 = 6,500,000 → 11,900,000; one more at 15.
    assert_eq!(view_tenths(0, 1_000_000), 11_900_000);
    assert_eq!(view_tenths(0, 1_000_001), 11_900_015);

    // Ads: 100,000 × 100 = 10,000,000; + 400,000 × 120 = 48,000,000;
    // + 500,000 × 150 = 75,000,000.
    assert_eq!(ad_tenths(0, 100_000), 10_000_000);
    assert_eq!(ad_tenths(0, 100_001), 10_000_120);
    assert_eq!(ad_tenths(0, 500_000), 58_000_000);
    assert_eq!(ad_tenths(0, 500_001), 58_000_150);
    assert_eq!(ad_tenths(0, 1_000_000), 133_000_000);
    assert_eq!(ad_tenths(0, 1_000_001), 133_000_200);
}

#[test]
fn day_straddling_one_boundary() {
    // ordinals 99,996..=100,005: 5 × 10 + 5 × 11 = 105.
    assert_eq!(view_tenths(99_995, 10), 105);
    // 5 × 100 + 5 × 120 = 1,100.
    assert_eq!(ad_tenths(99_995, 10), 1_100);
    // ordinals 499,999..=500,002: 2 × 11 + 2 × 13 = 48; ads 2 × 120 + 2 × 150 = 540.
    assert_eq!(view_tenths(499_998, 4), 48);
    assert_eq!(ad_tenths(499_998, 4), 540);
    // ordinals 999,998..=1,000,003: 3 × 13 + 3 × 15 = 84; ads 3 × 150 + 3 × 200 = 1,050.
    assert_eq!(view_tenths(999_997, 6), 84);
    assert_eq!(ad_tenths(999_997, 6), 1_050);
}

#[test]
fn day_jumping_two_brackets() {
    // before 99,990, count 400,020 → ordinals 99,991..=500,010:
    // 10 in bracket 1, 400,000 in bracket 2, 10 in bracket 3.
    // views: 10 × 10 + 400,000 × 11 + 10 × 13 = 100 + 4,400,000 + 130 = 4,400,230.
    assert_eq!(view_tenths(99_990, 400_020), 4_400_230);
    assert_eq!(won_from_tenths(4_400_230), 440_023);
    // ads: 10 × 100 + 400,000 × 120 + 10 × 150 = 1,000 + 48,000,000 + 1,500.
    assert_eq!(ad_tenths(99_990, 400_020), 48_002_500);
    assert_eq!(won_from_tenths(48_002_500), 4_800_250);
}

#[test]
fn day_jumping_three_brackets() {
    // before 99,999, count 900,003 → ordinals 100,000..=1,000,002:
    // 1 × 10 + 400,000 × 11 + 500,000 × 13 + 2 × 15 = 10 + 4,400,000 + 6,500,000 + 30.
    assert_eq!(view_tenths(99_999, 900_003), 10_900_040);
    // 1 × 100 + 400,000 × 120 + 500,000 × 150 + 2 × 200.
    assert_eq!(ad_tenths(99_999, 900_003), 123_000_500);
}

#[test]
fn all_four_brackets_from_zero() {
    // 2,000,000 ordinals: 1,000,000 + 4,400,000 + 6,500,000 + 1,000,000 × 15.
    assert_eq!(view_tenths(0, 2_000_000), 26_900_000);
    // 10,000,000 + 48,000,000 + 75,000,000 + 1,000,000 × 200.
    assert_eq!(ad_tenths(0, 2_000_000), 333_000_000);
}

#[test]
fn large_counts() {
    // Far past the last boundary everything is at the top price.
    assert_eq!(
        view_tenths(1_000_000_000_000, 1_000_000_000),
        15_000_000_000
    );
    assert_eq!(ad_tenths(1_000_000_000_000, 1_000_000_000), 200_000_000_000);
    // 10^12 views from zero: the first 10^6 cost 11,900,000, the rest 15 each.
    // 11,900,000 + (10^12 - 10^6) × 15 = 15 × 10^12 - 3,100,000.
    assert_eq!(
        view_tenths(0, 1_000_000_000_000),
        15_000_000_000_000 - 3_100_000
    );
    // ads: 133,000,000 + (10^12 - 10^6) × 200 = 200 × 10^12 - 67,000,000.
    assert_eq!(
        ad_tenths(0, 1_000_000_000_000),
        200_000_000_000_000 - 67_000_000
    );
}

#[test]
fn count_zero_costs_nothing() {
    for before in [0, 1, 99_999, 100_000, 500_000, 1_000_000, 1 << 50] {
        assert_eq!(view_tenths(before, 0), 0, "before {before}");
        assert_eq!(ad_tenths(before, 0), 0, "before {before}");
    }
}

#[test]
fn won_from_tenths_truncates() {
    assert_eq!(won_from_tenths(0), 0);
    assert_eq!(won_from_tenths(9), 0);
    assert_eq!(won_from_tenths(10), 1);
    assert_eq!(won_from_tenths(19), 1);
    assert_eq!(won_from_tenths(21), 2);
    assert_eq!(won_from_tenths(4_400_239), 440_023);
}

#[test]
fn truncation_is_per_day_not_per_view() {
    // 3 views at 1.1 won = 33 tenths → 3 won (not 3 × floor(1.1) = 3, and not
    // 3.3 rounded up): it is floor of the day's sum.
    assert_eq!(won_from_tenths(view_tenths(100_000, 3)), 3);
    // 9 views at 1.1 = 99 tenths → 9 won; 10 views = 110 tenths → 11 won.
    assert_eq!(won_from_tenths(view_tenths(100_000, 9)), 9);
    assert_eq!(won_from_tenths(view_tenths(100_000, 10)), 11);
}

// ---------------------------------------------------------------------------
// rapid replay (SPEC §2)
// ---------------------------------------------------------------------------

#[test]
fn exactly_30_seconds_is_not_a_replay() {
    assert_eq!(REPLAY_WINDOW_MICROS, 30_000_000);
    assert_eq!(
        rapid_replays(&[(0, 1), (30_000_000, 2)]),
        vec![false, false]
    );
    assert!(!precedes_within_window(0, 1, 30_000_000, 2));
}

#[test]
fn just_under_30_seconds_is_a_replay() {
    assert_eq!(rapid_replays(&[(0, 1), (29_999_999, 2)]), vec![false, true]);
    assert!(precedes_within_window(0, 1, 29_999_999, 2));
}

#[test]
fn replay_window_across_day_and_pre_2000_boundaries() {
    // q at Seoul 23:59:50 on 2024-07-01, p at 00:00:10 on 2024-07-02: 20 s apart.
    let midnight = 773_161_200 * SEC; // 2024-07-01 15:00:00Z (see calendar tests)
    let q = midnight - 10 * SEC;
    let p = midnight + 10 * SEC;
    assert_ne!(seoul_day_pg(q), seoul_day_pg(p));
    assert_eq!(rapid_replays(&[(p, 2), (q, 1)]), vec![true, false]);
    // Negative (pre-2000) timestamps behave the same.
    assert_eq!(
        rapid_replays(&[(-40 * SEC, 1), (-11 * SEC, 2), (19 * SEC, 3)]),
        vec![false, true, false]
    );
}

#[test]
fn equal_timestamps_larger_id_is_the_replay() {
    assert_eq!(rapid_replays(&[(5, 9), (5, 3)]), vec![true, false]);
    assert_eq!(rapid_replays(&[(5, 3), (5, 9)]), vec![false, true]);
    assert!(precedes_within_window(5, 3, 5, 9));
    assert!(!precedes_within_window(5, 9, 5, 3));
    // Three at one instant: all but the smallest id are replays.
    assert_eq!(
        rapid_replays(&[(7, 30), (7, 10), (7, 20)]),
        vec![true, false, true]
    );
}

#[test]
fn id_order_is_not_time_order() {
    // id 1 starts 10 s after id 2: id 1 is the replay (ordering is started_at first).
    assert_eq!(rapid_replays(&[(10 * SEC, 1), (0, 2)]), vec![true, false]);
}

#[test]
fn precedes_is_not_symmetric_and_later_q_never_excludes() {
    assert!(!precedes_within_window(10 * SEC, 1, 0, 2));
    assert!(!precedes_within_window(0, 2, 0, 2)); // a row never excludes itself
}

#[test]
fn chain_where_q_did_not_count() {
    // 0 s, 20 s, 45 s: 45 is 45 s after the first but 25 s after the second,
    // which itself did not count; SPEC: q need not itself have counted.
    assert_eq!(
        rapid_replays(&[(0, 1), (20 * SEC, 2), (45 * SEC, 3)]),
        vec![false, true, true]
    );
    // A long chain of 29 s steps: everything after the first is a replay.
    let chain: Vec<(i64, i64)> = (0..50).map(|i| (i * 29 * SEC, i + 1)).collect();
    let got = rapid_replays(&chain);
    assert!(!got[0]);
    assert!(got[1..].iter().all(|&r| r));
    // A chain broken by an exact 30 s gap: 0, 29, 59 (30 after 29) → f, t, f.
    assert_eq!(
        rapid_replays(&[(0, 1), (29 * SEC, 2), (59 * SEC, 3)]),
        vec![false, true, false]
    );
}

#[test]
fn replay_input_order_does_not_matter() {
    let plays: Vec<(i64, i64)> = vec![
        (0, 1),
        (20 * SEC, 2),
        (45 * SEC, 3),
        (75 * SEC, 4),
        (75 * SEC, 5),
        (200 * SEC, 6),
        (229 * SEC + 999_999, 7),
        (260 * SEC, 8),
    ];
    let expected = vec![false, true, true, false, true, false, true, false];
    assert_eq!(rapid_replays(&plays), expected);
    for seed in 0..20 {
        let s = shuffled(&plays, seed);
        let got = rapid_replays(&s);
        for (k, &(ts, id)) in s.iter().enumerate() {
            let i = plays.iter().position(|&x| x == (ts, id)).unwrap();
            assert_eq!(got[k], expected[i], "seed {seed}, id {id}");
        }
    }
}

#[test]
fn replay_trivial_groups() {
    assert_eq!(rapid_replays(&[]), Vec::<bool>::new());
    assert_eq!(rapid_replays(&[(123, 4)]), vec![false]);
}

// ---------------------------------------------------------------------------
// calendar (SPEC §2: Asia/Seoul, UTC+9, no DST)
// ---------------------------------------------------------------------------

#[test]
fn calendar_constants() {
    assert_eq!(SEOUL_OFFSET_MICROS, 32_400 * SEC);
    assert_eq!(DAY_MICROS, 86_400 * SEC);
    assert_eq!(PG_EPOCH_DAYS, 10_957);
    assert_eq!(day(2000, 1, 1), Day(10_957));
    assert_eq!(day(1970, 1, 1), Day(0));
}

#[test]
fn seoul_midnight() {
    // Days 2000-01-01 → 2024-07-01: 24 × 365 + 6 leap days (2000..2020) = 8,766,
    // plus Jan..Jun 2024 = 31+29+31+30+31+30 = 182 → 8,948 days.
    // 2024-07-01 15:00:00Z = 8,948 × 86,400 + 15 × 3,600 = 773,161,200 s.
    let seoul_midnight_jul2 = 773_161_200 * SEC;
    assert_eq!(kst_pg(2024, 7, 2, 0, 0, 0), seoul_midnight_jul2);
    // 2024-07-02 is 10,957 + 8,948 + 1 = 19,906 days after 1970-01-01.
    assert_eq!(seoul_day_pg(seoul_midnight_jul2), Day(19_906));
    assert_eq!(seoul_day_pg(seoul_midnight_jul2), day(2024, 7, 2));
    assert_eq!(seoul_day_pg(seoul_midnight_jul2 - 1), Day(19_905));
    assert_eq!(seoul_day_pg(seoul_midnight_jul2 - 1), day(2024, 7, 1));
    // UTC midnight of 2024-07-02 is 09:00 in Seoul, still July 2.
    assert_eq!(
        seoul_day_pg(seoul_midnight_jul2 + 9 * 3_600 * SEC),
        day(2024, 7, 2)
    );
    // Last µs of the Seoul day.
    assert_eq!(
        seoul_day_pg(seoul_midnight_jul2 + DAY_MICROS - 1),
        day(2024, 7, 2)
    );
    assert_eq!(
        seoul_day_pg(seoul_midnight_jul2 + DAY_MICROS),
        day(2024, 7, 3)
    );
}

#[test]
fn seoul_day_negative_timestamps() {
    // pg 0 = 2000-01-01 00:00Z = 09:00 Seoul on 2000-01-01.
    assert_eq!(seoul_day_pg(0), Day(10_957));
    // One µs before the PG epoch is still 08:59:59.999999 Seoul, 2000-01-01.
    assert_eq!(seoul_day_pg(-1), Day(10_957));
    // Seoul midnight of 2000-01-01 is 1999-12-31 15:00Z = -9 h.
    assert_eq!(seoul_day_pg(-32_400 * SEC), Day(10_957));
    assert_eq!(seoul_day_pg(-32_400 * SEC - 1), Day(10_956));
    assert_eq!(seoul_day_pg(-32_400 * SEC - 1), day(1999, 12, 31));
    // Seoul midnight of 1970-01-01: 10,957 days and 9 h before the PG epoch.
    let seoul_1970 = -10_957 * DAY_MICROS - 32_400 * SEC;
    assert_eq!(seoul_day_pg(seoul_1970), Day(0));
    assert_eq!(seoul_day_pg(seoul_1970 - 1), Day(-1));
    assert_eq!(seoul_day_pg(seoul_1970 - 1), day(1969, 12, 31));
}

#[test]
fn day_start_pg_micros_round_trips() {
    let d = day(2024, 7, 2);
    assert_eq!(d.start_pg_micros(), 773_161_200 * SEC);
    assert_eq!(
        Day(0).start_pg_micros(),
        -10_957 * DAY_MICROS - 32_400 * SEC
    );
    for d in [Day(-5), Day(0), Day(10_956), Day(10_957), Day(19_905)] {
        assert_eq!(seoul_day_pg(d.start_pg_micros()), d);
        assert_eq!(seoul_day_pg(d.start_pg_micros() - 1), Day(d.0 - 1));
        assert_eq!(d.next(), Day(d.0 + 1));
    }
}

#[test]
fn day_date_and_display() {
    assert_eq!(Day(19_906).date(), date(2024, 7, 2));
    assert_eq!(Day(-1).date(), date(1969, 12, 31));
    assert_eq!(day(2024, 2, 29).to_string(), "2024-02-29");
}

#[test]
fn week_start_is_monday() {
    // 2024-07-01 was a Monday.
    assert_eq!(day(2024, 7, 1).week_start(), day(2024, 7, 1));
    assert_eq!(day(2024, 7, 7).week_start(), day(2024, 7, 1)); // Sunday
    assert_eq!(day(2024, 7, 8).week_start(), day(2024, 7, 8));
    // A week spanning two months: Monday 2024-07-29 .. Sunday 2024-08-04.
    for d in 29..=31 {
        assert_eq!(day(2024, 7, d).week_start(), day(2024, 7, 29));
    }
    for d in 1..=4 {
        assert_eq!(day(2024, 8, d).week_start(), day(2024, 7, 29));
    }
    assert_eq!(day(2024, 8, 5).week_start(), day(2024, 8, 5));
    // A week spanning two years: Mon 2024-12-30 .. Sun 2025-01-05.
    assert_eq!(day(2025, 1, 5).week_start(), day(2024, 12, 30));
    // 1970-01-01 was a Thursday → Monday 1969-12-29 (negative day numbers).
    assert_eq!(Day(0).week_start(), day(1969, 12, 29));
    assert_eq!(Day(-3).week_start(), Day(-3));
    assert_eq!(Day(-4).week_start(), Day(-10));
}

#[test]
fn month_start() {
    assert_eq!(day(2024, 8, 4).month_start(), day(2024, 8, 1));
    assert_eq!(day(2024, 7, 31).month_start(), day(2024, 7, 1));
    assert_eq!(day(2024, 7, 1).month_start(), day(2024, 7, 1));
    assert_eq!(day(2024, 2, 29).month_start(), day(2024, 2, 1));
    assert_eq!(day(2024, 12, 31).month_start(), day(2024, 12, 1));
    assert_eq!(day(1969, 12, 31).month_start(), day(1969, 12, 1));
}

#[test]
fn period_start_by_kind() {
    let d = day(2024, 8, 3); // a Saturday
    assert_eq!(d.period_start(PeriodKind::Day), d);
    assert_eq!(d.period_start(PeriodKind::Week), day(2024, 7, 29));
    assert_eq!(d.period_start(PeriodKind::Month), day(2024, 8, 1));
    assert_eq!(PeriodKind::Day.as_str(), "day");
    assert_eq!(PeriodKind::Week.as_str(), "week");
    assert_eq!(PeriodKind::Month.as_str(), "month");
}

#[test]
fn period_last_day() {
    let p = |kind, start| Period { kind, start };
    assert_eq!(
        p(PeriodKind::Day, day(2024, 7, 1)).last_day(),
        day(2024, 7, 1)
    );
    assert_eq!(
        p(PeriodKind::Week, day(2024, 7, 29)).last_day(),
        day(2024, 8, 4)
    );
    assert_eq!(
        p(PeriodKind::Week, day(2024, 12, 30)).last_day(),
        day(2025, 1, 5)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2024, 7, 1)).last_day(),
        day(2024, 7, 31)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2024, 6, 1)).last_day(),
        day(2024, 6, 30)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2024, 12, 1)).last_day(),
        day(2024, 12, 31)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2024, 2, 1)).last_day(),
        day(2024, 2, 29)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2023, 2, 1)).last_day(),
        day(2023, 2, 28)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2000, 2, 1)).last_day(),
        day(2000, 2, 29)
    );
    assert_eq!(
        p(PeriodKind::Month, day(2100, 2, 1)).last_day(),
        day(2100, 2, 28)
    );
}

// ---------------------------------------------------------------------------
// validate (SPEC §2)
// ---------------------------------------------------------------------------

#[test]
fn unknown_video_is_reported_first() {
    assert_eq!(validate(0, 10, None), Err(Reject::UnknownVideo));
    // Positions that would also be bad still report unknown_video.
    assert_eq!(validate(-5, -10, None), Err(Reject::UnknownVideo));
    assert_eq!(validate(20, 10, None), Err(Reject::UnknownVideo));
}

#[test]
fn bad_positions() {
    assert_eq!(validate(-1, 10, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(-1, -1, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(20, 10, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(11, 10, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(0, 101, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(101, 101, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(0, i32::MAX, Some(100)), Err(Reject::BadPosition));
    assert_eq!(validate(i32::MIN, 0, Some(100)), Err(Reject::BadPosition));
}

#[test]
fn good_positions() {
    assert_eq!(validate(0, 100, Some(100)), Ok(())); // end == duration
    assert_eq!(validate(100, 100, Some(100)), Ok(())); // zero-length at the end
    assert_eq!(validate(50, 50, Some(100)), Ok(())); // zero-length
    assert_eq!(validate(0, 0, Some(100)), Ok(()));
    assert_eq!(validate(0, 1, Some(1)), Ok(()));
}

#[test]
fn reject_reason_strings() {
    assert_eq!(Reject::UnknownVideo.as_str(), "unknown_video");
    assert_eq!(Reject::BadPosition.as_str(), "bad_position");
    assert_eq!(
        serde_json::to_string(&Reject::UnknownVideo).unwrap(),
        "\"unknown_video\""
    );
    assert_eq!(
        serde_json::to_string(&Reject::BadPosition).unwrap(),
        "\"bad_position\""
    );
    assert_eq!(
        serde_json::to_string(&Exclusion::SelfPlay).unwrap(),
        "\"self_play\""
    );
    assert_eq!(
        serde_json::to_string(&Exclusion::RapidReplay).unwrap(),
        "\"rapid_replay\""
    );
}

// ---------------------------------------------------------------------------
// ad views (SPEC §2)
// ---------------------------------------------------------------------------

#[test]
fn ad_view_cases() {
    let cases = [
        ((0, 299), 0),
        ((0, 300), 1),
        ((300, 300), 0), // resuming on a mark does not replay it
        ((300, 600), 1), // 600 only
        ((299, 301), 1),
        ((0, 610), 2),
        ((600, 900), 1),
        ((0, 0), 0),
        ((599, 600), 1),
        ((600, 600), 0),
        ((1, 899), 2),
        ((0, 900), 3),
        ((301, 599), 0),
        ((0, 3_600), 12),
    ];
    for ((s, e), want) in cases {
        assert_eq!(ad_views(s, e), want, "{s}..{e}");
    }
}

// ---------------------------------------------------------------------------
// top 5 (SPEC §4)
// ---------------------------------------------------------------------------

#[test]
fn top5_orders_descending() {
    let items = vec![(1, 10), (2, 50), (3, 30), (4, 20), (5, 40), (6, 60), (7, 5)];
    assert_eq!(
        top5(items),
        vec![(6, 60), (2, 50), (5, 40), (3, 30), (4, 20)]
    );
}

#[test]
fn top5_ties_to_smaller_video_id() {
    let items = vec![(9, 7), (3, 7), (5, 7), (1, 8), (4, 7), (2, 7), (8, 7)];
    // 8 first; then the 7s by id: 2, 3, 4, 5 (5 and 8, 9 fall off).
    assert_eq!(top5(items), vec![(1, 8), (2, 7), (3, 7), (4, 7), (5, 7)]);
    // A tie at the cut-off: the smaller id wins the last slot regardless of order.
    let a = vec![(10, 5), (11, 5), (12, 5), (13, 5), (15, 1), (14, 1)];
    assert_eq!(top5(a), vec![(10, 5), (11, 5), (12, 5), (13, 5), (14, 1)]);
}

#[test]
fn top5_excludes_zero_and_negative() {
    let items = vec![(1, 0), (2, -5), (3, 1), (4, 0), (5, i64::MIN)];
    assert_eq!(top5(items), vec![(3, 1)]);
    assert_eq!(top5(vec![(1, 0), (2, -1)]), vec![]);
    assert_eq!(top5(Vec::new()), vec![]);
}

#[test]
fn top5_fewer_than_five() {
    assert_eq!(top5(vec![(4, 2), (7, 9)]), vec![(7, 9), (4, 2)]);
}

#[test]
fn top5_more_than_five_large_values() {
    let items: Vec<(i64, i64)> = (1..=1_000).map(|id| (id, id * 1_000_000_000)).collect();
    assert_eq!(
        top5(items),
        vec![
            (1_000, 1_000_000_000_000),
            (999, 999_000_000_000),
            (998, 998_000_000_000),
            (997, 997_000_000_000),
            (996, 996_000_000_000),
        ]
    );
    let items = vec![(1, i64::MAX), (2, i64::MAX - 1), (3, i64::MAX)];
    assert_eq!(
        top5(items),
        vec![(1, i64::MAX), (3, i64::MAX), (2, i64::MAX - 1)]
    );
}

#[test]
fn top5_input_order_independence() {
    let items: Vec<(i64, i64)> = vec![
        (11, 3),
        (12, 9),
        (13, 3),
        (14, 0),
        (15, 9),
        (16, 1),
        (17, 3),
        (18, -2),
        (19, 4),
        (20, 3),
    ];
    // 9s: 12, 15; then 4: 19; then 3s: 11, 13 (17, 20 fall off).
    let expected = vec![(12, 9), (15, 9), (19, 4), (11, 3), (13, 3)];
    assert_eq!(top5(items.clone()), expected);
    for seed in 0..50 {
        assert_eq!(top5(shuffled(&items, seed)), expected, "seed {seed}");
    }
}

// ---------------------------------------------------------------------------
// property tests
// ---------------------------------------------------------------------------

/// `before` values concentrated near the bracket boundaries, plus anywhere.
fn before_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..3).prop_flat_map(|i| {
            let b = [100_000u64, 500_000, 1_000_000][i as usize];
            (b - 1_000..=b + 1_000).boxed()
        }),
        0u64..2_000_000,
        0u64..1_000_000_000_000,
    ]
}

fn count_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..2_000, 0u64..1_200_000, 0u64..1_000_000_000]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_pricing_additive_over_split_days(
        b in before_strategy(), x in count_strategy(), y in count_strategy()
    ) {
        prop_assert_eq!(view_tenths(b, x + y), view_tenths(b, x) + view_tenths(b + x, y));
        prop_assert_eq!(ad_tenths(b, x + y), ad_tenths(b, x) + ad_tenths(b + x, y));
    }

    #[test]
    fn prop_pricing_monotone_and_bounded(b in before_strategy(), x in count_strategy()) {
        let v = view_tenths(b, x);
        let a = ad_tenths(b, x);
        // One more unit strictly costs more.
        prop_assert!(view_tenths(b, x + 1) > v);
        prop_assert!(ad_tenths(b, x + 1) > a);
        // A later start never costs less (prices only rise with the ordinal).
        prop_assert!(view_tenths(b + 1, x) >= v);
        prop_assert!(ad_tenths(b + 1, x) >= a);
        // Price per unit within the table's range.
        prop_assert!(10 * x <= v && v <= 15 * x);
        prop_assert!(100 * x <= a && a <= 200 * x);
    }

    #[test]
    fn prop_pricing_matches_per_ordinal_sum(b in before_strategy(), x in 0u64..3_000) {
        prop_assert_eq!(view_tenths(b, x), brute_view_tenths(b, x));
        prop_assert_eq!(ad_tenths(b, x), brute_ad_tenths(b, x));
    }

    #[test]
    fn prop_ad_views_additive(a in 0i32..20_000, d1 in 0i32..5_000, d2 in 0i32..5_000) {
        let (b, c) = (a + d1, a + d1 + d2);
        prop_assert_eq!(ad_views(a, c), ad_views(a, b) + ad_views(b, c));
    }

    #[test]
    fn prop_ad_views_additive_on_marks(ka in 0i32..50, kb in 0i32..50, kc in 0i32..50, j in -1i32..=1) {
        // Split points on and next to 5-minute marks.
        let mut v = [(300 * ka + j).max(0), (300 * kb + j).max(0), (300 * kc + j).max(0)];
        v.sort();
        let [a, b, c] = v;
        prop_assert_eq!(ad_views(a, c), ad_views(a, b) + ad_views(b, c));
    }

    #[test]
    fn prop_ad_views_matches_brute_force(s in 0i32..10_000, len in 0i32..10_000) {
        prop_assert_eq!(ad_views(s, s + len), brute_ad_views(s, s + len));
    }

    #[test]
    fn prop_top5_matches_sort_and_take(
        m in prop::collection::hash_map(-1_000i64..1_000, -3i64..12, 0..60)
    ) {
        let items: Vec<(i64, i64)> = m.into_iter().collect();
        prop_assert_eq!(top5(items.iter().copied()), brute_top5(&items));
    }

    #[test]
    fn prop_top5_matches_sort_and_take_wide(
        m in prop::collection::hash_map(any::<i64>(), any::<i64>(), 0..200)
    ) {
        let items: Vec<(i64, i64)> = m.into_iter().collect();
        prop_assert_eq!(top5(items.iter().copied()), brute_top5(&items));
    }

    #[test]
    fn prop_rapid_replays_matches_brute_force(
        plays in (0usize..24).prop_flat_map(|n| (
            prop::collection::vec((0i64..24, -1i64..=1), n),
            Just((1..=n as i64).collect::<Vec<i64>>()).prop_shuffle(),
            -5i64..5,
        ))
    ) {
        let (slots, ids, base) = plays;
        // Timestamps on a 5 s grid ± 1 µs: many ties, exact 30 s gaps (6 slots)
        // and 29.999999 / 30.000001 s gaps; base moves some before 2000.
        let group: Vec<(i64, i64)> = slots
            .iter()
            .zip(&ids)
            .map(|(&(k, j), &id)| (base * 60 * SEC + k * 5 * SEC + j, id))
            .collect();
        prop_assert_eq!(rapid_replays(&group), brute_rapid_replays(&group));
    }

    #[test]
    fn prop_seoul_day_matches_chrono(t in -4_000_000_000_000_000_000i64..4_000_000_000_000_000_000) {
        let kst = FixedOffset::east_opt(9 * 3_600).unwrap();
        let utc = DateTime::from_timestamp_micros(t + PG_EPOCH_UNIX_MICROS).unwrap();
        let want = utc.with_timezone(&kst).date_naive();
        let got = seoul_day_pg(t);
        prop_assert_eq!(got.date(), want);
        prop_assert_eq!(got, Day::from_date(want));
    }

    #[test]
    fn prop_seoul_day_matches_chrono_near_midnight(
        d in -40_000i64..40_000, off in -2_000_000i64..2_000_000
    ) {
        // Around Seoul midnight of pg-day d (= d days after 2000-01-01, minus 9 h).
        let t = d * DAY_MICROS - SEOUL_OFFSET_MICROS + off;
        let kst = FixedOffset::east_opt(9 * 3_600).unwrap();
        let utc = DateTime::from_timestamp_micros(t + PG_EPOCH_UNIX_MICROS).unwrap();
        prop_assert_eq!(seoul_day_pg(t).date(), utc.with_timezone(&kst).date_naive());
        let got = seoul_day_pg(t);
        prop_assert!(got.start_pg_micros() <= t && t < got.next().start_pg_micros());
    }

    #[test]
    fn prop_week_and_month_start(d in -100_000i32..100_000) {
        use chrono::Datelike;
        let day = Day(d);
        let w = day.week_start();
        prop_assert_eq!(w.date().weekday(), chrono::Weekday::Mon);
        prop_assert!(w <= day && day.0 - w.0 < 7);
        let m = day.month_start();
        prop_assert_eq!(m.date().day(), 1);
        prop_assert_eq!((m.date().year(), m.date().month()), (day.date().year(), day.date().month()));
        let last = Period { kind: PeriodKind::Month, start: m }.last_day();
        prop_assert!(last >= day);
        prop_assert_eq!(last.next().date().day(), 1);
        prop_assert_eq!(Period { kind: PeriodKind::Week, start: w }.last_day().date().weekday(), chrono::Weekday::Sun);
    }
}
