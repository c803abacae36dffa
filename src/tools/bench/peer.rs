//! Case (p): the peer, DuckDB doing the whole SPEC through postgres_scanner
//! on the same cluster (benches/peer_duckdb.py, compiled into the binary),
//! its results stored back into schema `peer` and compared row for row
//! with (b)'s. It runs when the bench's Python can import duckdb 1.4.4 and
//! the duckdb-ext-postgres package; otherwise the bench says how to install
//! them and records the case as skipped.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{Error, Result};

/// The script, so an installed binary needs no source tree.
const SCRIPT: &str = include_str!("../../../benches/peer_duckdb.py");

/// How to get what the case needs, for the skip message and the docs.
pub const INSTALL: &str =
    "python3 -m venv .venv-peer && .venv-peer/bin/pip install duckdb==1.4.4 duckdb-ext-postgres, \
     then pass --peer-python .venv-peer/bin/python";

/// Why the peer cannot run with `python`, or `None` when it can.
pub fn unavailable(python: &Path) -> Option<String> {
    let probe = Command::new(python)
        .args([
            "-c",
            "import duckdb, importlib.util, sys\n\
             assert duckdb.__version__ == '1.4.4', 'duckdb ' + duckdb.__version__ + ', not 1.4.4'\n\
             assert importlib.util.find_spec('duckdb_ext'), 'no duckdb-ext-postgres package'",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(e) => Some(format!("{} does not run ({e})", python.display())),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("").trim().to_string();
            Some(format!("{} cannot run it: {last}", python.display()))
        }
    }
}

/// What one peer run reported.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PeerRun {
    pub seconds: f64,
    pub steps: serde_json::Value,
    pub rows: u64,
    /// Filled in by the bench, from the reaped child's rusage.
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

/// Runs the peer once against `config`'s database with `threads` threads.
pub fn run(python: &Path, config: &Config, threads: usize) -> Result<(f64, PeerRun)> {
    let t = Instant::now();
    let mut child = Command::new(python)
        .args([
            "-",
            "--dsn",
            &dsn(config),
            "--threads",
            &threads.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("running {}", python.display()), e))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(SCRIPT.as_bytes())
        .map_err(|e| Error::io("handing the peer its script", e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("waiting for the peer", e))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "the DuckDB peer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let mut r: PeerRun = serde_json::from_str(line.trim())
        .map_err(|e| Error::Tool(format!("unreadable peer report {line:?}: {e}")))?;
    r.peak_rss_bytes = children_peak_rss();
    Ok((secs, r))
}

/// The largest resident set of any child reaped so far: the peer's, as it
/// uses gigabytes where every `settle run` before it used hundreds of MB.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return 0;
    }
    u.ru_maxrss.max(0) as u64 * 1024
}

/// A libpq key=value string for `config` (the scanner speaks libpq).
fn dsn(c: &Config) -> String {
    let mut parts = Vec::new();
    match c.get_hosts().first() {
        Some(Host::Unix(p)) => parts.push(format!("host={}", quote(&p.display().to_string()))),
        Some(Host::Tcp(h)) => parts.push(format!("host={}", quote(h))),
        None => {}
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(d) = c.get_dbname() {
        parts.push(format!("dbname={}", quote(d)));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user={}", quote(u)));
    }
    if let Some(pw) = c.get_password() {
        parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
    }
    parts.join(" ")
}

/// A libpq connection-string value: single-quoted, `\` and `'` escaped.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn dsn_quotes_every_value() {
        let c = Config::from_str("postgresql://al'ice:p\\w@/settle?host=/tmp/my%20pg&port=5433")
            .unwrap();
        assert_eq!(
            dsn(&c),
            "host='/tmp/my pg' port=5433 dbname='settle' user='al\\'ice' password='p\\\\w'"
        );
    }

    #[test]
    fn a_missing_python_is_a_reason_not_a_panic() {
        let why = unavailable(Path::new("/nonexistent/python3")).expect("unavailable");
        assert!(why.contains("/nonexistent/python3"), "{why}");
    }
}
