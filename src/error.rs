//! The library's error type. Every variant says what went wrong in one
//! sentence; the binary maps variants to exit codes.

use std::path::PathBuf;

use crate::rules::calendar::Day;

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

    /// The server answered with an error, or the connection broke.
    #[error("database error while {context}: {}", pg_message(pg))]
    Db {
        context: String,
        pg: tokio_postgres::Error,
    },

    /// No session could be opened: wrong URL, no such database or role,
    /// server down. Always an environment error.
    #[error("could not connect to {target}: {}", pg_message(pg))]
    Connect {
        target: String,
        pg: tokio_postgres::Error,
    },

    /// The database has no settle schema, or an older one.
    #[error("{database} {}", if pending.len() == *total { "has no settle schema".to_string() } else { format!("has an older settle schema ({} migration(s) not applied: {})", pending.len(), pending.join(", ")) })]
    NoSchema {
        database: String,
        pending: Vec<String>,
        /// How many migrations there are in all.
        total: usize,
    },

    /// The days asked for hold no plays at all.
    #[error("{first} .. {last} holds no plays: nothing to settle")]
    NothingToSettle { first: Day, last: Day },

    #[error("migration {name} was applied with checksum {applied} but the file now has {current}; migrations are immutable once applied: restore the file and add a new migration instead")]
    MigrationEdited {
        name: String,
        applied: String,
        current: String,
    },

    #[error("{0}")]
    Usage(String),

    /// The run cannot go ahead as asked; the variant carries the facts.
    #[error("{0}")]
    Refused(Refusal),

    /// A tool off the run path (bench, demo) could not do its work.
    #[error("{0}")]
    Tool(String),

    #[error("another run holds the settlement lock (execution {holder})")]
    Locked { holder: i64 },

    #[error("the run found {found} rejected rows, more than --max-rejects {limit}; nothing was published")]
    TooManyRejects {
        found: u64,
        limit: u64,
        execution: i64,
    },

    #[error("the run was stopped before publishing; nothing was published")]
    Stopped,

    /// A partition read by claims (`--remote`) failed for good: a worker
    /// hit an error no retry cures, or every attempt was used up.
    #[error(
        "partition {no} of execution {execution} failed after {attempts} attempt(s): {detail}"
    )]
    Partition {
        execution: i64,
        no: u32,
        attempts: u32,
        detail: String,
    },

    #[error("malformed COPY data from the server: {0}")]
    Protocol(String),

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a run was refused, with the facts a caller needs to word advice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// The first day asked for comes after the last.
    Backwards { from: Day, to: Day },
    /// Days between the settled history and the request are not settled,
    /// and tiers count every earlier day.
    Gap {
        first_unsettled: Day,
        last_unsettled: Day,
        to: Day,
    },
    /// A day inside the settled history is not settled.
    Hole { day: Day, to: Day },
    /// The log has plays before `day` that are not settled.
    UnsettledBefore { day: Day },
    /// A play's `started_at` is infinite, so it falls on no Seoul day.
    NoSeoulDay { id: i64, started_at: String },
    /// Stored month rows hold fewer views than the day rows before `before`.
    InconsistentStore { video: i64, before: Day },
    /// A kept partition result could not be decoded.
    UnreadableKept { detail: String },
    /// The days asked for lie outside the log's days and the horizon after
    /// them (today in Seoul plus `--horizon-days`).
    OutsideData {
        from: Day,
        to: Day,
        data: Option<(Day, Day)>,
        settled: Option<(Day, Day)>,
        horizon: Day,
    },
    /// viewing_log has no rows at all.
    EmptyLog,
    /// The run would read plays that `settle retention` retired (`first`
    /// is None for `--all`); runs from `earliest` on can go.
    Retired {
        first: Option<Day>,
        retired_through: Day,
        earliest: Day,
    },
    /// Unsettling `from..=to` would leave days after `to` settled on top
    /// of removed ones.
    UnsettleGap {
        from: Day,
        to: Day,
        last_settled: Day,
    },
    /// None of the days asked to unsettle is settled.
    NothingSettled {
        from: Day,
        to: Day,
        settled: Option<(Day, Day)>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Backwards { from, to } => {
                write!(f, "the first day {from} is after the last day {to}")
            }
            Refusal::Gap {
                first_unsettled,
                last_unsettled,
                ..
            } => write!(
                f,
                "days {first_unsettled} to {last_unsettled} are not settled yet, and tiers count every earlier day"
            ),
            Refusal::Hole { day, .. } => write!(
                f,
                "day {day} is not settled, and tiers count every earlier day"
            ),
            Refusal::UnsettledBefore { day } => write!(
                f,
                "viewing_log has plays before {day} that are not settled, and tiers count a video's whole history"
            ),
            Refusal::NoSeoulDay { id, started_at } => write!(
                f,
                "viewing_log row {id} has started_at = {started_at}, which falls on no Seoul day"
            ),
            Refusal::InconsistentStore { video, before } => write!(
                f,
                "stored results are inconsistent: video {video}'s month rows hold fewer views than its day rows before {before}"
            ),
            Refusal::UnreadableKept { detail } => {
                write!(f, "a kept partition result is unreadable ({detail})")
            }
            Refusal::OutsideData {
                from,
                to,
                data,
                settled,
                horizon,
            } => {
                write!(f, "{from} .. {to} is not a range settle can settle: ")?;
                match data {
                    Some((a, b)) => write!(f, "viewing_log holds plays of {a} .. {b}")?,
                    None => write!(f, "viewing_log holds no plays")?,
                }
                if let Some((a, b)) = settled {
                    write!(f, ", days {a} .. {b} are settled")?;
                }
                write!(f, ", and nothing after {horizon} can have plays yet")
            }
            Refusal::EmptyLog => write!(f, "viewing_log is empty: there is nothing to settle"),
            Refusal::Retired {
                first,
                retired_through,
                ..
            } => {
                let what = match first {
                    Some(d) => format!("settling from {d}"),
                    None => "settling every day (--all)".to_string(),
                };
                write!(
                    f,
                    "{what} would need plays that settle retention retired (through {retired_through}); their stored results stay as they are"
                )
            }
            Refusal::UnsettleGap {
                from,
                to,
                last_settled,
            } => write!(
                f,
                "unsettling {from} .. {to} would leave {} .. {last_settled} settled after a gap, priced on tiers that counted the removed days",
                to.next()
            ),
            Refusal::NothingSettled { from, to, settled } => {
                write!(f, "none of {from} .. {to} is settled")?;
                match settled {
                    Some((a, b)) => write!(f, " (settled days: {a} .. {b})"),
                    None => write!(f, " (no day is settled)"),
                }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches context to database errors without a closure at every call site.
pub trait DbContext<T> {
    fn db(self, context: impl Into<String>) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn db(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|pg| Error::Db {
            context: context.into(),
            pg,
        })
    }
}

/// The server's own words (severity, message, detail, hint) once, or the
/// client's error with its causes: tokio-postgres's Display alone says only
/// "db error".
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            m.push_str(&format!(" ({d})"));
        }
        return m;
    }
    let mut m = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let t = c.to_string();
        if !m.contains(&t) {
            m.push_str(": ");
            m.push_str(&t);
        }
        cause = c.source();
    }
    m
}

impl Error {
    /// Errors worth another attempt: the connection or server went away for
    /// a while, or the server asked us to retry.
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let Error::Db { pg, .. } = self else {
            return false;
        };
        match pg.code() {
            None => true, // I/O: connection reset or closed
            Some(code) => [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                // A standby cancels a read that conflicts with replay
                // (40001); an operator's pg_cancel_backend says 57014.
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::QUERY_CANCELED,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::CONNECTION_EXCEPTION,
                SqlState::CONNECTION_FAILURE,
                SqlState::CONNECTION_DOES_NOT_EXIST,
            ]
            .contains(code),
        }
    }

    /// The refusal's facts, when the run was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Error::Refused(r) => Some(r),
            _ => None,
        }
    }

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
                | Error::Refused(_)
                | Error::Locked { .. }
                | Error::MigrationEdited { .. }
                | Error::Io { .. }
                | Error::Connect { .. }
                | Error::NoSchema { .. }
        ) || matches!(self, Error::Db { pg, .. } if pg.as_db_error().is_none())
    }

    /// The SQLSTATE the server answered with, if it did.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Db { pg, .. } | Error::Connect { pg, .. } => pg.code().map(|c| c.code()),
            _ => None,
        }
    }
}
