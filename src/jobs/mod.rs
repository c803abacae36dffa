//! The job repository: executions, their partitions and kept results
//! (`repository`), the settled-day ledger (`ledger`) and the history queries
//! the CLI and the console read (`history`), and the verifications
//! `settle verify` made (`verification`). It stores what the pipeline
//! produces, so it may import `pipeline`, never `engine`.

pub mod changes;
pub mod claims;
pub mod history;
pub mod ledger;
pub mod refusals;
mod repository;
pub mod unsettle;
pub mod verification;

pub use repository::*;
