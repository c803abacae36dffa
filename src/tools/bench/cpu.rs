//! CPU seconds per case: the server's, from the postmaster's reaped
//! children, and the engine's, from getrusage.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::db;
use crate::error::{DbContext, Result};
use crate::pipeline::publish::PUBLISHED_TABLES;

/// Counts the CPU seconds of a case: the server's from the postmaster's
/// `cutime + cstime` (the user and system time of its exited children), the
/// engine's from this process's reaped children (`getrusage`).
pub(super) struct CpuMeter {
    /// `/proc/<postmaster pid>/stat`, or why the server cannot be measured.
    pub(super) server: std::result::Result<PathBuf, String>,
}

#[derive(Clone, Copy)]
pub(super) struct CpuMark {
    server: Option<f64>,
    /// This process's reaped children's (a `settle run`).
    children: f64,
    /// This process's own (the bench's reader threads in (b')).
    own: f64,
}

impl CpuMeter {
    /// Finds the postmaster through the server's data directory; only a
    /// server on this machine (the embedded one, say) can be measured.
    pub(super) async fn new(c: &Client) -> CpuMeter {
        CpuMeter {
            server: Self::find(c).await,
        }
    }

    pub(super) async fn find(c: &Client) -> std::result::Result<PathBuf, String> {
        let r = c
            .query_one(
                "SELECT current_setting('data_directory'), current_setting('port')",
                &[],
            )
            .await
            .map_err(|e| {
                format!("cannot read data_directory ({e}); needs superuser or pg_read_all_settings")
            })?;
        let (dir, port): (String, String) = (r.get(0), r.get(1));
        let (pid, on_port) = db::embedded::postmaster_pid(Path::new(&dir)).map_err(|e| {
            format!("cannot read {dir}/postmaster.pid ({e}); is the server on another machine?")
        })?;
        // A same-named directory of another server on this machine must not
        // be mistaken for this one.
        if on_port != port.parse().ok() {
            return Err(format!(
                "{dir}/postmaster.pid is not this server's (port {port})"
            ));
        }
        let stat = PathBuf::from(format!("/proc/{pid}/stat"));
        let text = std::fs::read_to_string(&stat)
            .map_err(|e| format!("cannot read {} ({e})", stat.display()))?;
        reaped_children_seconds(&text, clock_ticks())
            .ok_or_else(|| format!("cannot parse {}", stat.display()))?;
        Ok(stat)
    }

    /// Marks the start of a case, after vacuuming the result tables: the
    /// cases before wrote them, and autovacuum would otherwise wake inside
    /// this case's window, on its two cores and in its server CPU (the
    /// `--date` runs right after their setup's 1.7M inserted rows once
    /// showed 37.9 server core-seconds for one day, against 11).
    pub(super) async fn start(&self, c: &Client) -> Result<CpuMark> {
        c.batch_execute(&format!("VACUUM (ANALYZE) {PUBLISHED_TABLES}"))
            .await
            .db("vacuuming the result tables between cases")?;
        Ok(self.mark())
    }

    pub(super) fn mark(&self) -> CpuMark {
        CpuMark {
            server: self.server_seconds(),
            children: cpu_seconds(libc::RUSAGE_CHILDREN),
            own: cpu_seconds(libc::RUSAGE_SELF),
        }
    }

    pub(super) fn server_seconds(&self) -> Option<f64> {
        let stat = self.server.as_ref().ok()?;
        let text = std::fs::read_to_string(stat).ok()?;
        reaped_children_seconds(&text, clock_ticks())
    }

    /// Server and client CPU seconds since `m`, the client being the
    /// subprocesses the case ran.
    pub(super) async fn since(&self, c: &Client, m: CpuMark) -> Result<(Option<f64>, f64)> {
        let (server, now) = self.settled(c, m).await?;
        Ok((server, now.children - m.children))
    }

    /// As `since`, the client being this process (a case run in-process).
    pub(super) async fn since_in_process(
        &self,
        c: &Client,
        m: CpuMark,
    ) -> Result<(Option<f64>, f64)> {
        let (server, now) = self.settled(c, m).await?;
        Ok((server, now.own - m.own))
    }

    /// The server's CPU seconds since `m` and a fresh mark, once the case's
    /// backends have exited (their time reaches `cutime` only when the
    /// postmaster reaps them).
    pub(super) async fn settled(&self, c: &Client, m: CpuMark) -> Result<(Option<f64>, CpuMark)> {
        if self.server.is_ok() {
            for _ in 0..200 {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                         AND datname = current_database() \
                         AND backend_type IN ('client backend', 'parallel worker')",
                        &[],
                    )
                    .await
                    .db("waiting for the case's connections to close")?
                    .get(0);
                if n == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // A backend leaves pg_stat_activity just before it exits.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let now = self.mark();
        let server = match (now.server, m.server) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        Ok((server, now))
    }
}

pub(super) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system seconds of this process (`RUSAGE_SELF`) or of its
/// waited-for children (`RUSAGE_CHILDREN`).
pub(super) fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// `cutime + cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line, in
/// seconds. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from its closing parenthesis.
pub(super) fn reaped_children_seconds(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let cutime: u64 = f.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = f.get(17 - 3)?.parse().ok()?;
    Some((cutime + cstime) as f64 / ticks)
}
