//! The real `settle` binary as a subprocess, and what tests read from its
//! output.

use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::process::Command;

pub const SETTLE: &str = env!("CARGO_BIN_EXE_settle");

/// `settle ARGS` against `url`, output captured, killed if dropped.
pub fn settle_cmd(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(SETTLE);
    cmd.args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `settle ARGS` to the end.
pub async fn settle_output(url: &str, args: &[&str]) -> Output {
    settle_cmd(url, args)
        .output()
        .await
        .expect("the settle binary runs")
}

/// Everything the process said, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", text(o)))
}

/// `settle ARGS` run to the end from synchronous code, with extra
/// environment variables.
pub fn settle_blocking(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(SETTLE);
    cmd.args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the settle binary runs")
}
