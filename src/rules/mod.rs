//! The settlement rules of shared/SPEC.md as plain functions, with no
//! database: everything that counts or prices goes through here.

pub mod ads;
pub mod calendar;
pub mod pricing;
pub mod rank;
pub mod replay;
pub mod validate;

pub use ads::ad_views;
pub use calendar::{Day, Period, PeriodKind};
pub use pricing::{ad_tenths, view_tenths, won_from_tenths};
pub use rank::top5;
pub use replay::{precedes_within_window, REPLAY_WINDOW_MICROS};
pub use validate::{validate, Reject};

/// Why a valid play did not count. When both hold, self_play is reported:
/// it does not depend on any other row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    SelfPlay,
    RapidReplay,
}
