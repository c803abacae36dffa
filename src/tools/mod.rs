//! Off the run path: the bench, the demo and the plain-SQL reference.

pub mod bench;
pub mod demo;
pub mod ingest;
pub mod guard;
pub mod reference;
pub mod retention;
