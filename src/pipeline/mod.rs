//! The stages of a run, in the order data flows through them:
//!
//! `partition` (id ranges) → `read` (binary COPY) → `aggregate` (per-video
//! day cells, with `window` for the replay rule and `catalog` for videos) →
//! `totals` (merged partitions) → `exact` (replays across partition edges,
//! with `keyfilter` to clear the rows no other partition can pair with) →
//! `price` (tiers, roll-up to weeks and months, creators) → `top` (top 5) →
//! `publish` (the atomic write). `workers` runs the read stages on threads.
//!
//! Nothing here names `engine` or `jobs`: the stages are conducted, they do
//! not conduct (checked by `tests/layout.rs`).

pub mod aggregate;
pub mod catalog;
pub mod cells;
pub mod exact;
pub mod keyfilter;
pub mod partition;
pub mod price;
pub mod publish;
pub mod read;
pub mod settle;
pub mod swap;
pub mod top;
pub mod totals;
pub mod window;
pub mod workers;
