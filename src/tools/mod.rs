//! Off the run path: the bench, the demo and the plain-SQL reference.

pub mod bench;
pub mod demo;
pub mod guard;
pub mod ingest;
pub mod reference;
pub mod retention;
