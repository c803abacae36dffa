//! The generation pipeline: `jobs` worker threads generate chunks (each
//! sorted by stop time) in parallel; one writer thread merges them into
//! global stop-time order, assigns ids and encodes binary COPY buffers,
//! which a bounded channel hands to the segment's COPY stream.
//!
//! Chunk k holds the plays *started* in time slice k, so every play of a
//! later chunk stops at or after the slice's end: when chunk k arrives, the
//! merged plays stopping by then are final. Id order is therefore exactly
//! stop-time order, as if each play were written when it stopped, and
//! `started_at` of a lower id never exceeds a higher id's by more than the
//! longest play (MAX_WALL_SECS).
//!
//! Worker w takes chunks w, w+jobs, ... of its segment and the writer reads
//! them round robin, so the output is the same for any `jobs`, without a
//! reorder buffer, and memory in flight is a few chunks per worker whatever
//! --rows is.
//!
//! The log can be cut into [`Segment`]s at chunk boundaries, each written by
//! its own pipeline into its own COPY stream, so that several server
//! backends share the load. A segment starts with the plays that earlier
//! chunks carry past its first boundary, found by generating again only the
//! chunks of the longest play before it (generation is a pure function of
//! the chunk), and with the id the single pipeline would have reached
//! there: the segments' rows, concatenated, are byte for byte the single
//! pipeline's.

use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::copy;
use crate::model::{Plan, Play, Profile, MAX_WALL_SECS};

/// Target size of one COPY buffer.
const BUFFER_BYTES: usize = 1 << 20;
/// Buffers queued per COPY stream before the writer waits (backpressure).
const STREAM_QUEUE: usize = 8;
/// Chunks a worker may have finished ahead of the writer.
const WORKER_QUEUE: usize = 2;

/// What the writer produced.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub rows: u64,
    pub first_id: i64,
    pub last_id: i64,
}

/// A run of chunks and the ids its plays get.
#[derive(Debug, Clone)]
pub struct Segment {
    pub chunks: Range<usize>,
    /// The id of the segment's first row.
    pub first_id: i64,
    /// Plays of earlier chunks that stop after the segment's first boundary,
    /// in the order the single pipeline holds them.
    carried: Vec<Play>,
}

impl Segment {
    /// The whole log as one segment.
    pub fn whole(plan: &Plan, first_id: i64) -> Segment {
        Segment {
            chunks: 0..plan.chunks(),
            first_id,
            carried: Vec::new(),
        }
    }

    /// The log cut into at most `n` segments of about equal rows, each
    /// non-empty. Fewer when the chunks are too few to cut.
    pub fn split(profile: &Profile, plan: &Plan, n: usize, first_id: i64) -> Vec<Segment> {
        let chunks = plan.chunks();
        let mut prefix = Vec::with_capacity(chunks + 1);
        prefix.push(0u64);
        for &c in &plan.counts {
            prefix.push(prefix.last().copied().unwrap_or(0) + c as u64);
        }
        let mut out = vec![Segment::whole(plan, first_id)];
        for s in 1..n.max(1) as u64 {
            let target = s * plan.total / n as u64;
            let cut = prefix.partition_point(|&p| p < target);
            let last = out.last().expect("one segment at least");
            if cut <= last.chunks.start || cut >= chunks {
                continue;
            }
            let carried = carried_into(profile, plan, cut);
            let id = first_id + (prefix[cut] - carried.len() as u64) as i64;
            if id <= last.first_id || id >= first_id + plan.total as i64 {
                continue;
            }
            out.last_mut().expect("one segment at least").chunks.end = cut;
            out.push(Segment {
                chunks: cut..chunks,
                first_id: id,
                carried,
            });
        }
        out
    }
}

/// The plays of chunks before `cut` that stop after its first boundary, as
/// the single pipeline's pending list holds them when chunk `cut` arrives:
/// the stable merge of each chunk's such plays, older chunks first on ties.
fn carried_into(profile: &Profile, plan: &Plan, cut: usize) -> Vec<Play> {
    let boundary = plan.bounds(cut - 1).1;
    // A play of chunk j starts before its end and lasts at most
    // MAX_WALL_SECS, so earlier chunks carry nothing this far.
    let from = (0..cut)
        .find(|&j| plan.bounds(j).1 + MAX_WALL_SECS > boundary)
        .unwrap_or(cut);
    let (mut pending, mut chunk, mut merged) = (Vec::new(), Vec::new(), Vec::new());
    for j in from..cut {
        profile.chunk(plan, j, &mut chunk);
        chunk.retain(|p| p.stop > boundary);
        merged.clear();
        merge(&pending, &chunk, &mut merged);
        std::mem::swap(&mut pending, &mut merged);
    }
    pending
}

pub struct Pipeline {
    /// The segment's binary COPY payload (header, rows, trailer).
    pub stream: Option<mpsc::Receiver<Bytes>>,
    workers: Vec<JoinHandle<()>>,
    writer: JoinHandle<Option<Written>>,
}

impl Pipeline {
    pub fn spawn(
        profile: Arc<Profile>,
        plan: Arc<Plan>,
        jobs: usize,
        segment: Segment,
        window_pg_secs: i64,
        progress: ProgressBar,
    ) -> Pipeline {
        let jobs = jobs.max(1);
        let mut chunk_rx = Vec::with_capacity(jobs);
        let mut workers = Vec::with_capacity(jobs);
        for w in 0..jobs {
            let (tx, rx) = bounded::<Vec<Play>>(WORKER_QUEUE);
            let (profile, plan) = (profile.clone(), plan.clone());
            let chunks = segment.chunks.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("datagen-gen-{w}"))
                    .spawn(move || generate(&profile, &plan, chunks, w, jobs, tx))
                    .expect("spawning a generator thread"),
            );
            chunk_rx.push(rx);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
        let writer = std::thread::Builder::new()
            .name("datagen-writer".into())
            .spawn(move || write(&plan, segment, chunk_rx, tx, window_pg_secs, progress))
            .expect("spawning the writer thread");
        Pipeline {
            stream: Some(rx),
            workers,
            writer,
        }
    }

    /// Waits for the threads. `None` when the writer stopped early because
    /// the COPY stream went away (the caller has that stream's error).
    pub fn join(self) -> Option<Written> {
        let written = self.writer.join().ok().flatten();
        for w in self.workers {
            let _ = w.join();
        }
        written
    }
}

fn generate(
    profile: &Profile,
    plan: &Plan,
    chunks: Range<usize>,
    w: usize,
    jobs: usize,
    tx: Sender<Vec<Play>>,
) {
    for k in (chunks.start + w..chunks.end).step_by(jobs) {
        let mut out = Vec::with_capacity(plan.counts[k] as usize + 2);
        profile.chunk(plan, k, &mut out);
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// Merges two stop-sorted runs; on equal stop times `older` comes first.
fn merge(older: &[Play], newer: &[Play], out: &mut Vec<Play>) {
    out.reserve(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        if newer[j].stop < older[i].stop {
            out.push(newer[j]);
            j += 1;
        } else {
            out.push(older[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
}

/// Sends `buf` (with the COPY header first, once); false if the stream is
/// gone.
fn send(tx: &mpsc::Sender<Bytes>, started: &mut bool, buf: Vec<u8>) -> bool {
    let body = if *started {
        buf
    } else {
        *started = true;
        let mut h = copy::header();
        h.extend_from_slice(&buf);
        h
    };
    tx.blocking_send(Bytes::from(body)).is_ok()
}

fn write(
    plan: &Plan,
    segment: Segment,
    chunk_rx: Vec<Receiver<Vec<Play>>>,
    tx: mpsc::Sender<Bytes>,
    window_pg_secs: i64,
    progress: ProgressBar,
) -> Option<Written> {
    let new_buf = || Vec::with_capacity(BUFFER_BYTES + copy::PLAY_ROW_BYTES);
    let mut buf = new_buf();
    let mut started = false;
    let Segment {
        chunks,
        first_id,
        carried,
    } = segment;
    let mut pending: Vec<Play> = carried;
    let mut merged: Vec<Play> = Vec::new();
    let mut id = first_id;
    let mut in_buf = 0u64;
    for k in chunks.clone() {
        let chunk = chunk_rx[(k - chunks.start) % chunk_rx.len()].recv().ok()?;
        // Plays of later chunks start (so stop) at or after this boundary.
        let boundary = if k + 1 == plan.chunks() {
            u32::MAX
        } else {
            plan.bounds(k).1
        };
        merged.clear();
        merge(&pending, &chunk, &mut merged);
        let cut = merged.partition_point(|p| p.stop <= boundary);
        for p in &merged[..cut] {
            copy::put_play(&mut buf, id, p, window_pg_secs);
            id += 1;
            in_buf += 1;
            if buf.len() >= BUFFER_BYTES {
                if !send(&tx, &mut started, std::mem::replace(&mut buf, new_buf())) {
                    return None;
                }
                progress.inc(in_buf);
                in_buf = 0;
            }
        }
        pending.clear();
        pending.extend_from_slice(&merged[cut..]);
    }
    // What is still pending belongs to the next segment, which carries it.
    debug_assert!(chunks.end < plan.chunks() || pending.is_empty());
    buf.extend_from_slice(&copy::trailer());
    if !send(&tx, &mut started, buf) {
        return None;
    }
    progress.inc(in_buf);
    Some(Written {
        rows: (id - first_id) as u64,
        first_id,
        last_id: id - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{video_row, VideoMeta};

    fn setup(rows: u64, days: usize) -> (Arc<Profile>, Arc<Plan>) {
        let videos: Vec<VideoMeta> = (1..=100_000)
            .map(|id| video_row(42, id, 1_000_000, 10_000, 0).meta)
            .collect();
        let profile = Profile::new(42, 1_000_000, videos, 0.005, 0.02, 0.001);
        let plan = Plan::new(rows, (19_905..19_905 + days as i64).collect(), 0);
        (Arc::new(profile), Arc::new(plan))
    }

    /// Drains the pipeline's stream; returns its bytes (if `keep`) and their
    /// count, and the writer's summary.
    fn drain(mut p: Pipeline, keep: bool) -> ((Vec<u8>, usize), Option<Written>) {
        let mut rx = p.stream.take().expect("a stream");
        let reader = std::thread::spawn(move || {
            let (mut all, mut n) = (Vec::new(), 0);
            while let Some(b) = rx.blocking_recv() {
                n += b.len();
                if keep {
                    all.extend_from_slice(&b);
                }
            }
            (all, n)
        });
        let out = reader.join().unwrap();
        (out, p.join())
    }

    fn run(
        profile: &Arc<Profile>,
        plan: &Arc<Plan>,
        jobs: usize,
        seg: Segment,
    ) -> (Vec<u8>, Written) {
        let ((bytes, _), w) = drain(
            Pipeline::spawn(
                profile.clone(),
                plan.clone(),
                jobs,
                seg,
                0,
                ProgressBar::hidden(),
            ),
            true,
        );
        (bytes, w.expect("the writer finished"))
    }

    #[test]
    fn output_is_independent_of_jobs_and_ids_follow_stop_times() {
        let (profile, plan) = setup(60_000, 2);
        let (a, wa) = run(&profile, &plan, 1, Segment::whole(&plan, 7));
        let (b, _) = run(&profile, &plan, 3, Segment::whole(&plan, 7));
        assert_eq!(a, b);
        assert_eq!((wa.rows, wa.first_id, wa.last_id), (60_000, 7, 60_006));
        assert_eq!(&a[..11], copy::SIGNATURE);
        assert_eq!(a.len(), 19 + 60_000 * copy::PLAY_ROW_BYTES + 2);
    }

    /// Segments written apart give, concatenated, the single pipeline's rows
    /// byte for byte, with contiguous ids: the carried plays and first ids
    /// are exactly the single writer's state at each cut.
    #[test]
    fn segments_concatenate_to_the_whole_log() {
        let (profile, plan) = setup(400_000, 3);
        let (whole, w) = run(&profile, &plan, 2, Segment::whole(&plan, 1));
        let rows = &whole[19..whole.len() - 2];
        assert_eq!(w.rows, 400_000);
        for n in [2, 3, 5] {
            let segs = Segment::split(&profile, &plan, n, 1);
            assert_eq!(segs.len(), n, "{n} segments");
            let mut joined = Vec::new();
            let mut next_id = 1;
            for s in segs {
                assert_eq!(s.first_id, next_id);
                let (b, w) = run(&profile, &plan, 1, s);
                assert_eq!(&b[..11], copy::SIGNATURE);
                assert!(w.rows > 0);
                next_id = w.last_id + 1;
                joined.extend_from_slice(&b[19..b.len() - 2]);
            }
            assert_eq!(next_id, 400_001);
            assert!(joined == rows, "{n} segments differ from the whole log");
        }
        // Too few rows to cut: one segment.
        let (profile, tiny) = setup(1, 1);
        assert_eq!(Segment::split(&profile, &tiny, 4, 1).len(), 1);
    }

    /// Generation + encoding speed with no database (run in release:
    /// `cargo test -p settle-datagen --release -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn throughput() {
        let rows: u64 = std::env::var("SETTLE_DATAGEN_ROWS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000_000);
        let (profile, plan) = setup(rows, 31);
        for jobs in [1, 2] {
            let t = std::time::Instant::now();
            let cpu0 = cpu_secs();
            let ((_, bytes), w) = drain(
                Pipeline::spawn(
                    profile.clone(),
                    plan.clone(),
                    jobs,
                    Segment::whole(&plan, 1),
                    0,
                    ProgressBar::hidden(),
                ),
                false,
            );
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_secs() - cpu0;
            assert_eq!(w.unwrap().rows, rows);
            println!(
                "jobs {jobs}: {rows} rows, {} MB in {secs:.2} s wall, {cpu:.2} s CPU: {:.0} rows/s, {:.0} ns CPU/row",
                bytes / 1_000_000,
                rows as f64 / secs,
                cpu * 1e9 / rows as f64
            );
        }
    }

    fn cpu_secs() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based), in clock ticks.
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }
}
