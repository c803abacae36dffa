//! How failures reach the operator: one line of what went wrong, its
//! causes, the advice the CLI can give, and the exit code.

use settle::error::Refusal;
use settle::Error;

/// Prints the error chain and advice on stderr; returns the exit code.
pub fn report(err: &anyhow::Error) -> i32 {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = settle_error(err).and_then(hint) {
        eprintln!("  hint: {hint}");
    }
    code(err)
}

fn settle_error(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|c| c.downcast_ref::<Error>())
}

/// 0 ok; 1 the job ran and failed its checks; 2 usage or environment.
pub fn code(err: &anyhow::Error) -> i32 {
    match settle_error(err) {
        Some(e) if !e.is_environment() => 1,
        _ => 2,
    }
}

/// What the operator can do next, in CLI words.
pub fn hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::Refused(r) => match r {
            Refusal::Backwards { .. } => "--from must not come after --to".into(),
            Refusal::Gap {
                first_unsettled,
                to,
                ..
            } => format!("settle them first: settle run --from {first_unsettled} --to {to}"),
            Refusal::Hole { day, to } => {
                format!("settle from there: settle run --from {day} --to {to}")
            }
            Refusal::UnsettledBefore { .. } => {
                "settle from the first day of the data (settle run --all, or --from that day)"
                    .into()
            }
            Refusal::NoSeoulDay { .. } => "correct or delete that row, then run again".into(),
            Refusal::InconsistentStore { .. } => {
                "rebuild every stored row with `settle run --all --force`".into()
            }
            Refusal::UnreadableKept { .. } => "rerun with --fresh".into(),
            Refusal::Retired { earliest, .. } => format!(
                "settle only days from {earliest} on (settle run --from {earliest} --to DAY); the retired days' results are kept and cannot be rebuilt"
            ),
        },
        Error::Locked { holder } => {
            format!("wait for it to finish or stop it with `settle stop {holder}`")
        }
        Error::TooManyRejects { execution, .. } => {
            format!("inspect them with `settle status {execution}`")
        }
        _ => return None,
    })
}
