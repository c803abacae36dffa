//! The library's error type. Every variant says what went wrong in one
//! sentence; the binary maps variants to exit codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PostgreSQL server binaries found (looked on PATH and in /usr/lib/postgresql/*/bin); install them (Debian: apt-get install postgresql) or set DATABASE_URL")]
    NoPostgres,

    #[error("the embedded PostgreSQL cluster at {dir} could not be {action}: {detail}")]
    Embedded {
        dir: PathBuf,
        action: &'static str,
        detail: String,
    },

    #[error("database error while {context}: {source}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("migration {name} was applied with checksum {applied} but the file now has {current}; migrations are immutable once applied: restore the file and add a new migration instead")]
    MigrationEdited {
        name: String,
        applied: String,
        current: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Refused(String),

    #[error("another run holds the settlement lock (execution {holder}); wait for it to finish or stop it with `settle stop {holder}`")]
    Locked { holder: i64 },

    #[error("the run found {found} rejected rows, more than --max-rejects {limit}; nothing was published. Inspect them with `settle status {execution}`")]
    TooManyRejects {
        found: u64,
        limit: u64,
        execution: i64,
    },

    #[error("the run was stopped before publishing; nothing was published")]
    Stopped,

    #[error("malformed COPY data from the server: {0}")]
    Protocol(String),

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches context to database errors without a closure at every call site.
pub trait DbContext<T> {
    fn db(self, context: impl Into<String>) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn db(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Db {
            context: context.into(),
            source,
        })
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for failures of the environment or the command line rather than
    /// of the job itself (exit code 2 at the binary edge).
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            Error::NoPostgres
                | Error::Embedded { .. }
                | Error::Usage(_)
                | Error::Locked { .. }
                | Error::MigrationEdited { .. }
                | Error::Io { .. }
        ) || matches!(self, Error::Db { source, .. } if source.as_db_error().is_none())
    }
}
