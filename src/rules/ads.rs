//! Ad-slot counting: an ad plays at every 5-minute mark the playback reaches.

pub const AD_INTERVAL_SECONDS: i32 = 300;

/// The number of integers k >= 1 with `start < 300k <= end`, for a valid play
/// (`0 <= start <= end`). Resuming exactly on a mark does not replay its ad.
#[inline]
pub fn ad_views(start: i32, end: i32) -> u32 {
    debug_assert!(0 <= start && start <= end);
    (end / AD_INTERVAL_SECONDS - start / AD_INTERVAL_SECONDS) as u32
}
