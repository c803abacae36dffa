//! The front door: everything a caller (the CLI, the server, a worker)
//! does with settle goes through [`Settle`]. It returns values and emits
//! events; it never prints.
//!
//! ```no_run
//! use settle::{Settle, RunRequest, RunOutcome};
//! use settle::engine::Quiet;
//! use settle::rules::Day;
//!
//! # async fn example() -> settle::Result<()> {
//! // The embedded cluster (no DATABASE_URL): started on first use.
//! let settle = Settle::connect(&settle::Config::default()).await?;
//! let day = Day::from_date(chrono::NaiveDate::from_ymd_opt(2024, 7, 1).unwrap());
//! match settle.run(&RunRequest::days(day, day), &Quiet).await? {
//!     RunOutcome::Completed(s) => println!("counted {} plays", s.counted),
//!     RunOutcome::AlreadyCompleted { execution_id } => {
//!         println!("already settled by execution {execution_id}")
//!     }
//! }
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::db::Database;
use crate::engine::{self, Outcome, RunOptions};
use crate::error::Result;
use crate::jobs::{self, history, Requested};
use crate::rules::Day;

pub use crate::engine::{Event, Note, Observer, Phase, RunSummary};

/// Where the database is: a URL, or the embedded cluster's directory.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// A PostgreSQL URL; `None` starts (or reuses) the embedded cluster.
    pub database_url: Option<String>,
    /// The embedded cluster's directory [default: see `db::embedded`].
    pub pg_dir: Option<PathBuf>,
}

/// A run as asked for: which days and how. Build it with [`RunRequest::days`]
/// or [`RunRequest::all`], then adjust the public options.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub options: RunOptions,
    stop: StopSignal,
}

impl RunRequest {
    pub fn days(first: Day, last: Day) -> RunRequest {
        RunRequest::new(Requested::Days(first, last))
    }

    pub fn all() -> RunRequest {
        RunRequest::new(Requested::All)
    }

    pub fn new(requested: Requested) -> RunRequest {
        RunRequest {
            options: RunOptions::new(requested),
            stop: StopSignal::default(),
        }
    }

    /// A handle that stops this run when raised (from a signal handler or
    /// another task); the run then ends STOPPED, publishing nothing.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }
}

/// Raised once to stop a run in this process.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub use crate::engine::Outcome as RunOutcome;

/// What `stop` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StopAnswer {
    /// The execution was running and has been asked to stop.
    Asked,
    /// The execution was not running; its status.
    NotRunning(String),
}

/// A connection to settle's database: runs, history, status, stop.
pub struct Settle {
    database: Database,
}

impl Settle {
    /// Opens the database (starting the embedded cluster when no URL is
    /// given) and checks that it holds settle's current schema. Only
    /// [`Settle::migrate`] creates or upgrades it, so that a mistyped URL
    /// never gets tables written into someone else's database.
    pub async fn connect(config: &Config) -> Result<Settle> {
        let database =
            Database::open(config.database_url.as_deref(), config.pg_dir.clone()).await?;
        let settle = Settle { database };
        settle.check_schema().await?;
        Ok(settle)
    }

    /// Refuses a database without settle's schema, or with an older one.
    pub async fn check_schema(&self) -> Result<()> {
        let c = self.database.connect().await?;
        let pending = crate::db::migrate::pending(&c).await?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::NoSchema {
                database: self.database.display.clone(),
                pending,
                total: crate::db::migrate::MIGRATIONS.len(),
            })
        }
    }

    /// Starts a worker's claimers against this job repository (see
    /// [`crate::remote`]); raise `stop` to make them give their partitions
    /// back and end.
    pub fn start_worker(
        &self,
        opts: &crate::remote::WorkerOptions,
        stop: &StopSignal,
    ) -> crate::remote::Worker {
        crate::remote::start(self.database.config(), opts, stop.0.clone())
    }

    /// Wraps an open database without touching its schema.
    pub fn from_database(database: Database) -> Settle {
        Settle { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<crate::db::migrate::Report> {
        let mut c = self.database.connect().await?;
        crate::db::migrate::migrate(&mut c).await
    }

    /// Runs the settlement job, reporting to `obs`.
    pub async fn run(&self, req: &RunRequest, obs: &dyn Observer) -> Result<Outcome> {
        engine::run(&self.database, &req.options, req.stop.0.clone(), obs).await
    }

    /// The most recent refused runs, newest first.
    pub async fn refusals(&self, limit: i64) -> Result<Vec<jobs::refusals::RefusalRow>> {
        let c = self.database.connect().await?;
        jobs::refusals::recent(&c, limit).await
    }

    /// Takes back the newest settled days, `from` through `to` (default:
    /// the last settled day).
    pub async fn unsettle(&self, from: Day, to: Option<Day>) -> Result<jobs::unsettle::Unsettled> {
        let mut c = self.database.connect().await?;
        jobs::unsettle::unsettle(&mut c, from, to).await
    }

    /// The most recent executions, newest first.
    pub async fn history(&self, limit: i64) -> Result<Vec<history::ExecutionRow>> {
        let c = self.database.connect().await?;
        history::recent(&c, limit).await
    }

    /// One execution in detail.
    pub async fn status(&self, execution: i64) -> Result<history::Status> {
        let c = self.database.connect().await?;
        history::status(&c, execution).await
    }

    /// Asks a running execution (in any process) to stop.
    pub async fn stop(&self, execution: i64) -> Result<StopAnswer> {
        let c = self.database.connect().await?;
        let status = jobs::request_stop(&c, execution).await?;
        Ok(if status == "RUNNING" || status == "STARTING" {
            StopAnswer::Asked
        } else {
            StopAnswer::NotRunning(status)
        })
    }
}
