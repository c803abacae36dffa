//! Top-5 selection: descending value, ties to the smaller video_id, and only
//! values above zero rank.

pub const TOP_N: usize = 5;

/// The top five `(video_id, value)` pairs, best first, in one pass with a
/// five-slot buffer (periods have up to millions of candidates).
pub fn top5(items: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut best: Vec<(i64, i64)> = Vec::with_capacity(TOP_N + 1);
    for (video, value) in items {
        if value <= 0 {
            continue;
        }
        if best.len() == TOP_N && !better((video, value), best[TOP_N - 1]) {
            continue;
        }
        let pos = best
            .iter()
            .position(|&b| better((video, value), b))
            .unwrap_or(best.len());
        best.insert(pos, (video, value));
        best.truncate(TOP_N);
    }
    best
}

#[inline]
fn better(a: (i64, i64), b: (i64, i64)) -> bool {
    a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
}
