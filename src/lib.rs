//! settle: the nightly settlement engine.
//!
//! The module tree follows the pipeline: `partition` → `read` → `aggregate`
//! → `settle` / `rank` → `write`, with the job repository (`jobs`) beside it.
//! `rules` holds the SPEC's rules as plain functions; `db` finds or starts
//! the database.

pub mod db;
pub mod error;
pub mod reference;
pub mod rules;
pub mod testkit;

pub use error::{Error, Result};
