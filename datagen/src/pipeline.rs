//! The generation pipeline: `jobs` worker threads generate chunks (each
//! sorted by stop time) in parallel; one writer thread merges them into
//! global stop-time order, assigns ids and encodes binary COPY buffers,
//! which bounded channels hand to the COPY stream(s).
//!
//! Chunk k holds the plays *started* in time slice k, so every play of a
//! later chunk stops at or after the slice's end: when chunk k arrives, the
//! merged plays stopping by then are final. Id order is therefore exactly
//! stop-time order, as if each play were written when it stopped, and
//! `started_at` of a lower id never exceeds a higher id's by more than the
//! longest play (MAX_WALL_SECS).
//!
//! Worker w takes chunks w, w+jobs, ... and the writer reads them round
//! robin, so the output is the same for any `jobs`, without a reorder buffer,
//! and memory in flight is a few chunks per worker whatever --rows is.

use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::copy;
use crate::model::{Plan, Play, Profile};

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

pub struct Pipeline {
    /// One receiver per COPY stream; each carries a complete binary COPY
    /// payload (header, rows, trailer).
    pub streams: Vec<mpsc::Receiver<Bytes>>,
    workers: Vec<JoinHandle<()>>,
    writer: JoinHandle<Option<Written>>,
}

impl Pipeline {
    pub fn spawn(
        profile: Arc<Profile>,
        plan: Arc<Plan>,
        jobs: usize,
        streams: usize,
        first_id: i64,
        window_pg_secs: i64,
        progress: ProgressBar,
    ) -> Pipeline {
        let jobs = jobs.max(1);
        let streams = streams.max(1);
        let mut chunk_rx = Vec::with_capacity(jobs);
        let mut workers = Vec::with_capacity(jobs);
        for w in 0..jobs {
            let (tx, rx) = bounded::<Vec<Play>>(WORKER_QUEUE);
            let (profile, plan) = (profile.clone(), plan.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("datagen-gen-{w}"))
                    .spawn(move || generate(&profile, &plan, w, jobs, tx))
                    .expect("spawning a generator thread"),
            );
            chunk_rx.push(rx);
        }
        let mut outs = Vec::with_capacity(streams);
        let mut rxs = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
            outs.push(tx);
            rxs.push(rx);
        }
        let writer = std::thread::Builder::new()
            .name("datagen-writer".into())
            .spawn(move || write(&plan, chunk_rx, outs, first_id, window_pg_secs, progress))
            .expect("spawning the writer thread");
        Pipeline {
            streams: rxs,
            workers,
            writer,
        }
    }

    /// Waits for the threads. `None` when the writer stopped early because a
    /// COPY stream went away (the caller has that stream's error).
    pub fn join(self) -> Option<Written> {
        let written = self.writer.join().ok().flatten();
        for w in self.workers {
            let _ = w.join();
        }
        written
    }
}

fn generate(profile: &Profile, plan: &Plan, w: usize, jobs: usize, tx: Sender<Vec<Play>>) {
    for k in (w..plan.chunks()).step_by(jobs) {
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

struct Out {
    txs: Vec<mpsc::Sender<Bytes>>,
    next: usize,
    buf: Vec<u8>,
    started: Vec<bool>,
}

impl Out {
    fn new_buf() -> Vec<u8> {
        Vec::with_capacity(BUFFER_BYTES + copy::PLAY_ROW_BYTES)
    }

    /// Sends the current buffer to the next stream (round robin); a stream's
    /// first buffer starts with the COPY header. False if a stream is gone.
    fn flush(&mut self) -> bool {
        let s = self.next;
        self.next = (self.next + 1) % self.txs.len();
        let mut body = std::mem::replace(&mut self.buf, Self::new_buf());
        if !self.started[s] {
            self.started[s] = true;
            let mut h = copy::header();
            h.append(&mut body);
            body = h;
        }
        self.txs[s].blocking_send(Bytes::from(body)).is_ok()
    }

    /// Headers for streams that got no rows, then every stream's trailer.
    fn finish(mut self) -> bool {
        for s in 0..self.txs.len() {
            let mut body = Vec::new();
            if !self.started[s] {
                body.extend_from_slice(&copy::header());
            }
            body.extend_from_slice(&copy::trailer());
            if self.txs[s].blocking_send(Bytes::from(body)).is_err() {
                return false;
            }
        }
        self.txs.clear();
        true
    }
}

fn write(
    plan: &Plan,
    chunk_rx: Vec<Receiver<Vec<Play>>>,
    txs: Vec<mpsc::Sender<Bytes>>,
    first_id: i64,
    window_pg_secs: i64,
    progress: ProgressBar,
) -> Option<Written> {
    let streams = txs.len();
    let mut out = Out {
        txs,
        next: 0,
        buf: Out::new_buf(),
        started: vec![false; streams],
    };
    let mut pending: Vec<Play> = Vec::new();
    let mut merged: Vec<Play> = Vec::new();
    let mut id = first_id;
    let mut in_buf = 0u64;
    let chunks = plan.chunks();
    for k in 0..chunks {
        let chunk = chunk_rx[k % chunk_rx.len()].recv().ok()?;
        // Plays of later chunks start (so stop) at or after this boundary.
        let boundary = if k + 1 == chunks {
            u32::MAX
        } else {
            plan.bounds(k).1
        };
        merged.clear();
        merge(&pending, &chunk, &mut merged);
        let cut = merged.partition_point(|p| p.stop <= boundary);
        for p in &merged[..cut] {
            copy::put_play(&mut out.buf, id, p, window_pg_secs);
            id += 1;
            in_buf += 1;
            if out.buf.len() >= BUFFER_BYTES {
                if !out.flush() {
                    return None;
                }
                progress.inc(in_buf);
                in_buf = 0;
            }
        }
        pending.clear();
        pending.extend_from_slice(&merged[cut..]);
    }
    debug_assert!(pending.is_empty());
    if !out.buf.is_empty() && !out.flush() {
        return None;
    }
    progress.inc(in_buf);
    if !out.finish() {
        return None;
    }
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

    /// Drains every stream; returns per stream its bytes (if `keep`) and
    /// their count, and the writer's summary.
    fn drain(p: Pipeline, keep: bool) -> (Vec<(Vec<u8>, usize)>, Option<Written>) {
        let mut p = p;
        let rxs = std::mem::take(&mut p.streams);
        let readers: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                std::thread::spawn(move || {
                    let (mut all, mut n) = (Vec::new(), 0);
                    while let Some(b) = rx.blocking_recv() {
                        n += b.len();
                        if keep {
                            all.extend_from_slice(&b);
                        }
                    }
                    (all, n)
                })
            })
            .collect();
        let out = readers.into_iter().map(|h| h.join().unwrap()).collect();
        (out, p.join())
    }

    #[test]
    fn output_is_independent_of_jobs_and_ids_follow_stop_times() {
        let (profile, plan) = setup(60_000, 2);
        let run = |jobs| {
            drain(
                Pipeline::spawn(
                    profile.clone(),
                    plan.clone(),
                    jobs,
                    1,
                    7,
                    0,
                    ProgressBar::hidden(),
                ),
                true,
            )
        };
        let (a, wa) = run(1);
        let (b, _) = run(3);
        assert_eq!(a, b);
        let w = wa.unwrap();
        assert_eq!((w.rows, w.first_id, w.last_id), (60_000, 7, 60_006));
        let body = &a[0].0;
        assert_eq!(&body[..11], copy::SIGNATURE);
        assert_eq!(body.len(), 19 + 60_000 * copy::PLAY_ROW_BYTES + 2);
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
            let (out, w) = drain(
                Pipeline::spawn(
                    profile.clone(),
                    plan.clone(),
                    jobs,
                    1,
                    1,
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
                out[0].1 / 1_000_000,
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
