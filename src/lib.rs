//! settle: the nightly settlement engine.
//!
//! The crate reads as the pipeline: [`engine`] conducts one run through the
//! stages in [`pipeline`], recording it in the job repository ([`jobs`]).
//! [`rules`] holds the SPEC's rules as plain functions; [`db`] finds or
//! starts the database; [`tools`] holds what is off the run path. Callers
//! use the front door, [`Settle`].

pub mod api;
pub mod db;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod pipeline;
pub mod remote;
pub mod report;
pub mod rules;
pub mod serve;
pub mod statements;
pub mod sys;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tools;

pub use api::{
    Config, Event, Note, Observer, Phase, RunOutcome, RunRequest, Settle, StopAnswer, StopSignal,
};
pub use error::{Error, Result};

/// The README's Rust example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
