//! The rapid_replay relation between two valid plays of one (user, video).

/// 30 seconds in microseconds, the resolution of `timestamptz`.
pub const REPLAY_WINDOW_MICROS: i64 = 30_000_000;

/// True when play `q` makes play `p` a rapid replay: `q` comes first in
/// `(started_at, id)` order and `p` started less than 30 s after `q`.
/// Exactly 30 s apart does not exclude. Timestamps are microseconds.
#[inline]
pub fn precedes_within_window(q_ts: i64, q_id: i64, p_ts: i64, p_id: i64) -> bool {
    (q_ts, q_id) < (p_ts, p_id) && p_ts - q_ts < REPLAY_WINDOW_MICROS
}

/// Classifies each play of one (user, video) group, given in any order:
/// `true` = rapid replay. Reference implementation for tests and the exact
/// path; it sorts, so it is not for the hot loop.
pub fn rapid_replays(plays: &[(i64, i64)]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..plays.len()).collect();
    order.sort_by_key(|&i| plays[i]);
    let mut out = vec![false; plays.len()];
    for w in order.windows(2) {
        let (q, p) = (plays[w[0]], plays[w[1]]);
        out[w[1]] = precedes_within_window(q.0, q.1, p.0, p.1);
    }
    out
}
