//! Per-element cost of the engine's hot kernels, with no database.
//!
//! Every benchmark sets `Throughput::Elements`, so criterion prints
//! elements/s; nanoseconds per element = 1e9 / that figure.
//!
//! Run: `cargo bench --bench kernels` (about a minute). To add a kernel, write
//! a `fn bench_x(c: &mut Criterion)` and list it in `targets` of the single
//! `criterion_group!` at the bottom.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use settle::rules::calendar::{seoul_day_pg, Day};
use settle::rules::{ad_tenths, ad_views, top5, validate, view_tenths};

/// Small deterministic generator (splitmix64), so the inputs are the same on
/// every run and the bench needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Roughly log-uniform in `0..=max`: many small values, a long tail.
    fn log_uniform(&mut self, max: u64) -> u64 {
        let bits = 64 - max.leading_zeros() as u64;
        let b = self.below(bits + 1);
        let v = if b == 0 {
            0
        } else {
            self.next_u64() >> (64 - b)
        };
        v.min(max)
    }
}

const N: usize = 100_000;

/// (before, count) per (video, day): prior totals from 0 to ~5M (so every
/// bracket and every boundary crossing occurs), daily counts mostly small.
fn pricing_inputs() -> Vec<(u64, u64)> {
    let mut r = Rng::new(1);
    (0..N)
        .map(|_| (r.log_uniform(5_000_000), 1 + r.log_uniform(200_000)))
        .collect()
}

fn bench_pricing(c: &mut Criterion) {
    let inputs = pricing_inputs();
    let mut g = c.benchmark_group("pricing");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("view_tenths", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &(before, count) in black_box(&inputs) {
                sum = sum.wrapping_add(view_tenths(before, count));
            }
            sum
        })
    });
    g.bench_function("view_and_ad_tenths", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &(before, count) in black_box(&inputs) {
                sum = sum
                    .wrapping_add(view_tenths(before, count))
                    .wrapping_add(ad_tenths(before / 2, count / 2));
            }
            sum
        })
    });
    g.finish();
}

/// (start, end) of valid plays on videos up to 2 h: mostly from 0, some resumed.
fn play_positions() -> Vec<(i32, i32)> {
    let mut r = Rng::new(2);
    (0..N)
        .map(|_| {
            let start = if r.below(4) == 0 {
                r.below(3_600) as i32
            } else {
                0
            };
            let end = start + r.log_uniform(3_600) as i32;
            (start, end)
        })
        .collect()
}

fn bench_ad_views(c: &mut Criterion) {
    let inputs = play_positions();
    let mut g = c.benchmark_group("ads");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("ad_views", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &(s, e) in black_box(&inputs) {
                sum += ad_views(s, e) as u64;
            }
            sum
        })
    });
    g.finish();
}

fn bench_top5(c: &mut Criterion) {
    const CANDIDATES: usize = 100_000;
    let mut r = Rng::new(3);
    // Heavy-tailed view counts with many ties and some zeros, random id order.
    let random: Vec<(i64, i64)> = (0..CANDIDATES)
        .map(|i| (i as i64 + 1, r.log_uniform(1_000_000) as i64))
        .collect();
    // Worst case: every candidate beats the current fifth place.
    let ascending: Vec<(i64, i64)> = (0..CANDIDATES)
        .map(|i| (i as i64 + 1, i as i64 + 1))
        .collect();
    let mut g = c.benchmark_group("top5");
    g.throughput(Throughput::Elements(CANDIDATES as u64));
    for (name, items) in [("random", &random), ("ascending", &ascending)] {
        g.bench_with_input(BenchmarkId::new("top5", name), items, |b, items| {
            b.iter(|| top5(black_box(items).iter().copied()))
        });
    }
    g.finish();
}

fn bench_calendar(c: &mut Criterion) {
    // started_at over 2024 (µs since 2000-01-01 UTC), unsorted.
    let jan_2024 = Day::from_date(chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
    let base = jan_2024.start_pg_micros();
    let year = 366 * 86_400 * 1_000_000u64;
    let mut r = Rng::new(4);
    let ts: Vec<i64> = (0..N).map(|_| base + r.below(year) as i64).collect();
    let mut g = c.benchmark_group("calendar");
    g.throughput(Throughput::Elements(ts.len() as u64));
    g.bench_function("seoul_day_pg", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for &t in black_box(&ts) {
                sum += seoul_day_pg(t).0 as i64;
            }
            sum
        })
    });
    g.bench_function("seoul_day_pg+week+month", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for &t in black_box(&ts) {
                let d = seoul_day_pg(t);
                sum += (d.week_start().0 + d.month_start().0) as i64;
            }
            sum
        })
    });
    g.finish();
}

/// Rows as the reader sees them: ~1% unknown video, ~1% bad positions.
fn validate_inputs() -> Vec<(i32, i32, Option<i32>)> {
    let mut r = Rng::new(5);
    (0..N)
        .map(|_| {
            let duration = 30 + r.below(7_200) as i32;
            let start = r.below(duration as u64 / 2 + 1) as i32;
            let end = start + r.below((duration - start) as u64 + 1) as i32;
            match r.below(100) {
                0 => (start, end, None),
                1 => (start, duration + 1, Some(duration)),
                _ => (start, end, Some(duration)),
            }
        })
        .collect()
}

fn bench_validate(c: &mut Criterion) {
    let rows = validate_inputs();
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("validate", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for &(s, e, d) in black_box(&rows) {
                ok += validate(s, e, d).is_ok() as u64;
            }
            ok
        })
    });
    g.finish();
}

/// Realistic plays: time-ordered with a few hours of disorder, popular
/// videos hot (a crude power law), some rapid replays.
fn realistic_plays(
    n: usize,
) -> (
    settle::pipeline::catalog::Catalog,
    Vec<settle::pipeline::read::Play>,
) {
    let mut r = Rng::new(7);
    let videos: Vec<(i64, i64, i32)> = (1..=100_000)
        .map(|v| (v, 1_000_000 + (v % 10_000), 300 + (v % 7000) as i32))
        .collect();
    let catalog = settle::pipeline::catalog::Catalog::new(videos.clone());
    let base = 773_161_200_000_000i64; // 2024-07-02 00:00 KST in PG microseconds
    let mut plays = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let video = 1 + (r.log_uniform(99_999) as i64);
        let dur = videos[(video - 1) as usize].2;
        let start = if r.below(4) == 0 {
            300 * r.below(dur as u64 / 300 + 1) as i32
        } else {
            0
        };
        let start = start.min(dur);
        let end = start + r.below((dur - start) as u64 + 1) as i32;
        let lag = (r.log_uniform(7_200) as i64) * 1_000_000;
        let user = 1 + r.below(1_000_000) as i64;
        let ts = base + i * 27_000 - lag; // ~3.2M plays a day
        plays.push(settle::pipeline::read::Play {
            id: i + 1,
            user_id: user,
            video_id: video,
            started_at: ts,
            start_position: start,
            end_position: end,
        });
        if r.below(50) == 0 {
            let mut again = *plays.last().expect("pushed");
            again.id = i + 1_000_000_000;
            again.started_at += r.below(40) as i64 * 1_000_000;
            plays.push(again);
        }
    }
    (catalog, plays)
}

fn encode_copy(rows: &[settle::pipeline::read::Play]) -> Vec<u8> {
    let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
    b.extend_from_slice(&[0u8; 8]);
    for p in rows {
        b.extend_from_slice(&6i16.to_be_bytes());
        for v in [p.id, p.user_id, p.video_id, p.started_at] {
            b.extend_from_slice(&8i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        for v in [p.start_position, p.end_position] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

fn bench_decode(c: &mut Criterion) {
    let (_, plays) = realistic_plays(N);
    let bytes = encode_copy(&plays);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(plays.len() as u64));
    // As the server sends it: one CopyData message per row.
    g.bench_function("binary_copy_row_per_message", |b| {
        let header = 19;
        b.iter(|| {
            let mut d = settle::pipeline::read::Decoder::new();
            let mut sum = 0i64;
            d.feed(&bytes[..header], |_| {}).expect("header");
            for chunk in bytes[header..].chunks(settle::pipeline::read::ROW_BYTES) {
                d.feed(chunk, |p| sum = sum.wrapping_add(p.video_id))
                    .expect("row");
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn bench_aggregate(c: &mut Criterion) {
    let (catalog, plays) = realistic_plays(1_000_000);
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(plays.len() as u64));
    g.sample_size(10);
    // Validation, exclusions, the rapid_replay window and the per-day sums.
    g.bench_function("push_realistic_3h_window", |b| {
        b.iter(|| {
            let mut a = settle::pipeline::aggregate::Aggregator::new(
                &catalog,
                Default::default(),
                3 * 3_600_000_000,
            );
            for batch in plays.chunks(settle::pipeline::aggregate::BATCH) {
                a.push_batch(batch);
            }
            black_box(a.finish(None).counts)
        })
    });
    // As a worker runs after its first partition: the window's ring and
    // index and the day tables reused, so no page is faulted in.
    g.bench_function("push_steady_3h_window", |b| {
        let mut scratch = Some(settle::pipeline::aggregate::Scratch::default());
        b.iter(|| {
            let mut a = settle::pipeline::aggregate::Aggregator::with_scratch(
                &catalog,
                Default::default(),
                3 * 3_600_000_000,
                scratch.take().expect("kept"),
            );
            for batch in plays.chunks(settle::pipeline::aggregate::BATCH) {
                a.push_batch(batch);
            }
            let (out, kept) = a.finish_keep(None);
            scratch = Some(kept);
            black_box(out.counts)
        })
    });
    g.bench_function("push_realistic_10min_window", |b| {
        b.iter(|| {
            let mut a = settle::pipeline::aggregate::Aggregator::new(
                &catalog,
                Default::default(),
                600_000_000,
            );
            for p in &plays {
                a.push(p);
            }
            black_box(a.finish(None).counts)
        })
    });
    // The rapid_replay bookkeeping alone: every play late, so only the
    // validation and the hand-off to the exact path run.
    g.bench_function("push_all_late_no_window", |b| {
        b.iter(|| {
            let mut a =
                settle::pipeline::aggregate::Aggregator::new(&catalog, Default::default(), -1);
            for p in &plays {
                a.push(p);
            }
            black_box(a.finish(None).counts)
        })
    });
    g.finish();
}

/// Short runs: the whole file finishes well under two minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = kernels;
    config = config();
    targets = bench_pricing, bench_ad_views, bench_top5, bench_calendar, bench_validate, bench_decode, bench_aggregate
}
criterion_main!(kernels);
