//! How failures reach the operator: one line of what went wrong, each cause
//! once, the advice the CLI can give, and the exit code. With `--json` the
//! same goes to stdout as one object.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | the job ran and failed its checks (too many rejects, stopped) |
//! | 2 | usage or environment: bad flags, no PostgreSQL, no schema, a refused range, the lock held |
//! | 3 | nothing to settle: the days asked for hold no plays |

use settle::error::Refusal;
use settle::Error;

/// The table above, for `settle --help`.
pub const TABLE: &str = "Exit codes: 0 ok; 1 the job ran and failed its checks (too many rejects, stopped); \
2 usage or environment (bad flags, no PostgreSQL, no schema: run `settle migrate`, a refused range, another run holds the lock); \
3 nothing to settle (the days asked for hold no plays; --allow-empty makes that a success).";

/// Prints the error chain and advice (stderr, and stdout as JSON when
/// asked); returns the exit code.
pub fn report(err: &anyhow::Error, json: bool) -> i32 {
    let code = code(err);
    let lines = chain(err);
    let hint = settle_error(err).and_then(hint);
    eprintln!("error: {}", lines[0]);
    for cause in &lines[1..] {
        eprintln!("  caused by: {cause}");
    }
    if let Some(h) = &hint {
        eprintln!("  hint: {h}");
    }
    if json {
        let obj = serde_json::json!({
            "status": "ERROR",
            "exit_code": code,
            "error": lines[0],
            "causes": &lines[1..],
            "hint": hint,
            "refusal": settle_error(err).and_then(|e| e.refusal()),
        });
        super::out(&obj.to_string());
    }
    code
}

/// The error and its causes, each said once: a cause whose text the lines
/// before already hold is left out.
fn chain(err: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        let t = cause.to_string();
        if !lines.iter().any(|l| l.contains(&t)) {
            lines.push(t);
        }
    }
    lines
}

fn settle_error(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|c| c.downcast_ref::<Error>())
}

pub fn code(err: &anyhow::Error) -> i32 {
    match settle_error(err) {
        Some(Error::NothingToSettle { .. }) => 3,
        Some(e) if !e.is_environment() => 1,
        _ => 2,
    }
}

/// What the operator can do next, in CLI words.
pub fn hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::Refused(r) => refusal_hint(r),
        Error::Locked { holder } => {
            format!("wait for it to finish or stop it with `settle stop {holder}`")
        }
        Error::TooManyRejects { execution, .. } => {
            format!("inspect them with `settle status {execution}`")
        }
        Error::Partition { execution, .. } => format!(
            "see which worker read it with `settle status {execution}`; fix the cause, then run again (finished partitions are kept)"
        ),
        Error::NoSchema { .. } => "run `settle migrate` (it creates or upgrades the schema)".into(),
        Error::NothingToSettle { .. } => {
            "check that the day's plays were loaded; --allow-empty settles empty days on purpose"
                .into()
        }
        Error::Connect { .. } => match e.sqlstate() {
            Some("3D000") => "create the database (`createdb NAME`), or point DATABASE_URL at one; `settle db url` prints the embedded cluster's".into(),
            Some("28000") | Some("28P01") => "check the user and password in DATABASE_URL".into(),
            _ => "check that the server is running and DATABASE_URL's host and port".into(),
        },
        _ => return None,
    })
}

fn refusal_hint(r: &Refusal) -> String {
    match r {
        Refusal::Backwards { .. } => "--from must not come after --to".into(),
        Refusal::Gap {
            first_unsettled,
            to,
            ..
        } => format!("settle them first: settle run --from {first_unsettled} --to {to}"),
        Refusal::Hole { day, to } => format!("settle from there: settle run --from {day} --to {to}"),
        Refusal::UnsettledBefore { .. } => {
            "settle from the first day of the data (settle run --all, or --from that day)".into()
        }
        Refusal::NoSeoulDay { .. } => "correct or delete that row, then run again".into(),
        Refusal::InconsistentStore { .. } => {
            "rebuild every stored row with `settle run --all --force`".into()
        }
        Refusal::UnreadableKept { .. } => "rerun with --fresh".into(),
        Refusal::OutsideData { .. } => {
            "ask for days the log holds (see the range above), or raise --horizon-days for days still to come".into()
        }
        Refusal::EmptyLog => {
            "load plays first (`settle datagen`, or your pipeline's load) and run again".into()
        }
        Refusal::UnsettleGap { from, last_settled, .. } => {
            format!("unsettle through the last settled day: settle unsettle --from {from} --to {last_settled} --yes")
        }
        Refusal::NothingSettled { .. } => "there is nothing to undo; see `settle history`".into(),
        Refusal::Retired { earliest, .. } => format!(
            "settle only days from {earliest} on (settle run --from {earliest} --to DAY); the retired days' results are kept and cannot be rebuilt"
        ),
    }
}
