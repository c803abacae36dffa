//! Streaming `COPY ... TO STDOUT (FORMAT binary)` and decoding its rows in
//! place: no per-row allocation, no `BinaryCopyOutRow`.
//!
//! PostgreSQL sends one CopyData message per row (the file header rides in
//! the first one), but the decoder does not rely on that: a row split across
//! messages is carried over in a small buffer.

use bytes::Bytes;
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::Client;

use crate::db;
use crate::error::{DbContext, Error, Result};

/// One play as read from `viewing_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Play {
    pub id: i64,
    pub user_id: i64,
    pub video_id: i64,
    /// Microseconds since 2000-01-01 UTC (PostgreSQL's own representation).
    pub started_at: i64,
    pub start_position: i32,
    pub end_position: i32,
}

/// The column list every reader selects, in decode order.
pub const PLAY_COLUMNS: &str = "id, user_id, video_id, started_at, start_position, end_position";

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Field count (2) + six length words (24) + 4 x int8 + 2 x int4.
pub const ROW_BYTES: usize = 2 + 6 * 4 + 4 * 8 + 2 * 4;

/// Incremental decoder of the binary COPY format for `PLAY_COLUMNS`.
#[derive(Default)]
pub struct Decoder {
    header_done: bool,
    finished: bool,
    carry: Vec<u8>,
}

#[inline(always)]
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The fixed prefix of every row: 6 fields, then length 8 for `id`.
const ROW_PREFIX: [u8; 6] = [0, 6, 0, 0, 0, 8];

/// Decodes one complete row at the start of `b` (which holds >= ROW_BYTES).
#[inline(always)]
pub fn decode_row(b: &[u8]) -> Result<Play> {
    if b[0..6] != ROW_PREFIX
        || be_i32(b, 14) != 8
        || be_i32(b, 26) != 8
        || be_i32(b, 38) != 8
        || be_i32(b, 50) != 4
        || be_i32(b, 58) != 4
    {
        return Err(Error::Protocol(
            "unexpected row layout (a NULL or a changed column type in viewing_log?)".into(),
        ));
    }
    Ok(Play {
        id: be_i64(b, 6),
        user_id: be_i64(b, 18),
        video_id: be_i64(b, 30),
        started_at: be_i64(b, 42),
        start_position: be_i32(b, 54),
        end_position: be_i32(b, 62),
    })
}

/// The length of the binary COPY header at the start of `b`, or `None` while
/// `b` does not hold all of it yet.
pub fn header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 19 {
        return Ok(None);
    }
    if &b[..11] != SIGNATURE {
        return Err(Error::Protocol("missing binary COPY signature".into()));
    }
    let len = 19 + be_i32(b, 15) as usize;
    Ok((b.len() >= len).then_some(len))
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the end-of-data marker has been seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Feeds one chunk, calling `on_row` for every complete row in it.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8], mut on_row: impl FnMut(&Play)) -> Result<()> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, &mut on_row)?;
            if used < chunk.len() {
                self.carry.extend_from_slice(&chunk[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.parse(&buf, &mut on_row)?;
            buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// Parses as much of `b` as is complete; returns the bytes consumed.
    #[inline]
    fn parse(&mut self, b: &[u8], on_row: &mut impl FnMut(&Play)) -> Result<usize> {
        let mut pos = 0;
        if !self.header_done {
            let Some(len) = header_len(b)? else {
                return Ok(0);
            };
            pos = len;
            self.header_done = true;
        }
        while pos + 2 <= b.len() {
            if b[pos] == 0xff && b[pos + 1] == 0xff {
                self.finished = true;
                return Ok(pos + 2);
            }
            if pos + ROW_BYTES > b.len() {
                break;
            }
            let play = decode_row(&b[pos..pos + ROW_BYTES])?;
            on_row(&play);
            pos += ROW_BYTES;
        }
        Ok(pos)
    }

    /// Errors unless the stream ended cleanly.
    pub fn finish(&self) -> Result<()> {
        if !self.finished || !self.carry.is_empty() {
            return Err(Error::Protocol(
                "COPY stream ended in the middle of a row".into(),
            ));
        }
        Ok(())
    }
}

/// A chunk smaller than this means the reader is ahead of the server, and
/// would otherwise wake for every 8 kB the backend sends: a context switch
/// per ~115 rows, which on these VMs cost a fifth of the reader's CPU.
/// Napping instead lets a few dozen kB gather per wake-up. At 100M rows on 2
/// cores, read+aggregate took 27.7-30.5 s with the nap and 31.3-33.0 s
/// without (alternating runs). 0.5 ms at a backend's ~100 MB/s stays well
/// below a socket's ~200 kB buffer, so the server is not made to wait.
const NAP_BELOW: usize = 32 * 1024;
const NAP: std::time::Duration = std::time::Duration::from_micros(500);

/// A connection set up to stream partitions: a read-only repeatable-read
/// transaction, in `snapshot` when given (so every reader of a run sees the
/// same rows).
///
/// No parallel workers under a partition's COPY: the run already keeps the
/// cores busy with its own readers, and a Gather interleaves the workers'
/// rows out of id order, which the replay window then sends to the exact
/// path (a --date run on a partitioned log had 1.2M late rows and a 13 s
/// exact path that way).
pub async fn open_reader(
    config: &tokio_postgres::Config,
    snapshot: Option<&str>,
) -> Result<Client> {
    let c = db::connect_copy(config).await?;
    let join = snapshot
        .map(|s| format!("SET TRANSACTION SNAPSHOT '{s}'; "))
        .unwrap_or_default();
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {join}\
         SET LOCAL synchronize_seqscans = off; SET LOCAL max_parallel_workers_per_gather = 0"
    ))
    .await
    .db(if snapshot.is_some() {
        "joining the run's snapshot"
    } else {
        "starting a read-only transaction"
    })?;
    Ok(c)
}

/// Streams a binary `COPY ... TO STDOUT` of [`PLAY_COLUMNS`] (see
/// `partition::copy_statement`) into `on_row`.
/// `check` is polled every 64k rows so a stop request can abort.
pub async fn copy_plays(
    client: &Client,
    statement: &str,
    mut on_row: impl FnMut(&Play),
    mut check: impl FnMut() -> Result<()>,
) -> Result<u64> {
    let stream = client
        .copy_out(statement)
        .await
        .db("starting COPY of viewing_log")?;
    pin_mut!(stream);
    let mut decoder = Decoder::new();
    let mut rows = 0u64;
    let mut checked = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.db("reading viewing_log")?;
        decoder.feed(&chunk, |p| {
            rows += 1;
            on_row(p)
        })?;
        if rows - checked >= 65_536 {
            checked = rows;
            check()?;
        }
        if chunk.len() < NAP_BELOW {
            // Blocking on purpose: this runtime is the worker thread's own.
            std::thread::sleep(NAP);
        }
    }
    decoder.finish()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn encode(rows: &[Play]) -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        for r in rows {
            b.extend_from_slice(&6i16.to_be_bytes());
            for v in [r.id, r.user_id, r.video_id, r.started_at] {
                b.extend_from_slice(&8i32.to_be_bytes());
                b.extend_from_slice(&v.to_be_bytes());
            }
            for v in [r.start_position, r.end_position] {
                b.extend_from_slice(&4i32.to_be_bytes());
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    fn sample() -> Vec<Play> {
        (0..50)
            .map(|i| Play {
                id: i,
                user_id: -i * 7,
                video_id: i * 1_000_000_007,
                started_at: i * 123_456_789 - 5,
                start_position: i as i32,
                end_position: (i * 3) as i32,
            })
            .collect()
    }

    #[test]
    fn decodes_whole_and_in_every_split() {
        let rows = sample();
        let bytes = encode(&rows);
        for split in [1usize, 2, 3, 7, 19, 20, 66, 67, 1000] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                d.feed(chunk, |p| out.push(*p)).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out, rows, "split {split}");
        }
    }

    #[test]
    fn rejects_truncated_stream_and_bad_layout() {
        let bytes = encode(&sample());
        let mut d = Decoder::new();
        d.feed(&bytes[..bytes.len() - 10], |_| {}).unwrap();
        assert!(d.finish().is_err());

        let mut bad = encode(&sample()[..1]);
        bad[19 + 1] = 5; // field count 5
        let mut d = Decoder::new();
        assert!(d.feed(&bad, |_| {}).is_err());
    }
}
