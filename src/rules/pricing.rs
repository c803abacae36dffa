//! Progressive tier pricing over a video's all-time counted ordinals, in
//! integer tenths of a won.

/// (last ordinal of the bracket, price per unit in tenths of a won).
type Brackets = [(u64, u64); 4];

pub const VIEW_BRACKETS: Brackets = [
    (100_000, 10),
    (500_000, 11),
    (1_000_000, 13),
    (u64::MAX, 15),
];

pub const AD_BRACKETS: Brackets = [
    (100_000, 100),
    (500_000, 120),
    (1_000_000, 150),
    (u64::MAX, 200),
];

/// Sum of prices of ordinals `before+1 ..= before+count` under `brackets`.
#[inline]
pub fn tiered_tenths(brackets: &Brackets, before: u64, count: u64) -> u64 {
    let hi = before + count;
    let mut lo = before; // ordinals already priced
    let mut total = 0;
    for &(last, price) in brackets {
        if lo >= hi {
            break;
        }
        if lo < last {
            let upto = hi.min(last);
            total += (upto - lo) * price;
            lo = upto;
        }
    }
    total
}

/// Price in tenths of the views with ordinals `before+1 ..= before+count`.
#[inline]
pub fn view_tenths(before: u64, count: u64) -> u64 {
    tiered_tenths(&VIEW_BRACKETS, before, count)
}

/// Price in tenths of the ad views with ordinals `before+1 ..= before+count`.
#[inline]
pub fn ad_tenths(before: u64, count: u64) -> u64 {
    tiered_tenths(&AD_BRACKETS, before, count)
}

/// Whole won, rounded down, as the SPEC settles each (video, day).
#[inline]
pub fn won_from_tenths(tenths: u64) -> i64 {
    (tenths / 10) as i64
}
