//! PostgreSQL's binary COPY format, written by hand: an 11-byte signature,
//! flags and header-extension words, then per row a 16-bit field count and
//! each field as a 32-bit length plus big-endian bytes; a -1 word ends it.
//! Binary skips the server's text parsing, which is most of COPY's cost.

use crate::model::{Play, VideoRow};

pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
pub const PG_EPOCH_UNIX: i64 = 946_684_800;
/// Encoded size of one viewing_log row.
pub const PLAY_ROW_BYTES: usize = 2 + 6 * 4 + 4 * 8 + 2 * 4;

pub fn header() -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    v.extend_from_slice(SIGNATURE);
    v.extend_from_slice(&0i32.to_be_bytes());
    v.extend_from_slice(&0i32.to_be_bytes());
    v
}

pub fn trailer() -> [u8; 2] {
    (-1i16).to_be_bytes()
}

/// Appends one viewing_log row: (id, user_id, video_id, started_at,
/// start_position, end_position). `window_pg_secs` is the window start in
/// seconds since the PostgreSQL epoch.
#[inline]
pub fn put_play(buf: &mut Vec<u8>, id: i64, p: &Play, window_pg_secs: i64) {
    let ts = (window_pg_secs + p.start as i64) * 1_000_000;
    let mut row = [0u8; PLAY_ROW_BYTES];
    row[0..2].copy_from_slice(&6i16.to_be_bytes());
    let mut at = 2;
    for v in [id, p.user as i64, p.video as i64, ts] {
        row[at..at + 4].copy_from_slice(&8i32.to_be_bytes());
        row[at + 4..at + 12].copy_from_slice(&v.to_be_bytes());
        at += 12;
    }
    for v in [p.start_pos, p.end_pos] {
        row[at..at + 4].copy_from_slice(&4i32.to_be_bytes());
        row[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
        at += 8;
    }
    buf.extend_from_slice(&row);
}

/// Appends one videos row: (video_id, uploader_id, duration_seconds, title,
/// created_at).
pub fn put_video(buf: &mut Vec<u8>, v: &VideoRow) {
    buf.extend_from_slice(&5i16.to_be_bytes());
    for x in [v.meta.id as i64, v.meta.uploader as i64] {
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&x.to_be_bytes());
    }
    buf.extend_from_slice(&4i32.to_be_bytes());
    buf.extend_from_slice(&(v.meta.duration as i32).to_be_bytes());
    buf.extend_from_slice(&(v.title.len() as i32).to_be_bytes());
    buf.extend_from_slice(v.title.as_bytes());
    buf.extend_from_slice(&8i32.to_be_bytes());
    buf.extend_from_slice(&((v.created_at - PG_EPOCH_UNIX) * 1_000_000).to_be_bytes());
}
