//! settle: the nightly settlement engine.
//!
//! The module tree follows the pipeline: `partition` → `read` → `aggregate`
//! → `settle` / `rank` → `write`, with the job repository (`jobs`) beside it.
//! `rules` holds the SPEC's rules as plain functions; `db` finds or starts
//! the database.

pub mod aggregate;
pub mod bench;
pub mod catalog;
pub mod db;
pub mod demo;
pub mod engine;
pub mod error;
pub mod history;
pub mod jobs;
pub mod ledger;
pub mod partition;
pub mod rank;
pub mod read;
pub mod reference;
pub mod replay;
pub mod report;
pub mod rules;
pub mod settle;
pub mod testkit;
pub mod totals;
pub mod window;
pub mod write;

pub use error::{Error, Result};
