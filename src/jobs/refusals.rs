//! Runs refused before they read anything. They are kept apart from
//! executions, so that a refused gap or a held lock is not counted as a
//! failed run.

use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};

/// One refused run, as `settle history --all` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RefusalRow {
    pub refusal_id: i64,
    pub refused_at: String,
    pub params: String,
    pub kind: String,
    pub reason: String,
}

/// The refusal kinds `record` keeps, by error.
fn kind(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::Locked { .. } => "locked",
        Error::NothingToSettle { .. } => "nothing_to_settle",
        Error::Refused(r) => match r {
            crate::error::Refusal::Backwards { .. } => "backwards",
            crate::error::Refusal::Gap { .. } => "gap",
            crate::error::Refusal::Hole { .. } => "hole",
            crate::error::Refusal::UnsettledBefore { .. } => "unsettled_before",
            crate::error::Refusal::NoSeoulDay { .. } => "no_seoul_day",
            crate::error::Refusal::InconsistentStore { .. } => "inconsistent_store",
            crate::error::Refusal::UnreadableKept { .. } => "unreadable_kept",
            crate::error::Refusal::OutsideData { .. } => "outside_data",
            crate::error::Refusal::EmptyLog => "empty_log",
            crate::error::Refusal::UnsettleGap { .. } => "unsettle_gap",
            crate::error::Refusal::NothingSettled { .. } => "nothing_settled",
            crate::error::Refusal::Retired { .. } => "retired",
        },
        _ => return None,
    })
}

/// Records `e` as a refusal of the run asked as `params_key`, if it is one.
/// Best effort: a refusal that cannot be recorded is still a refusal.
pub async fn record(c: &Client, params_key: &str, e: &Error) {
    let Some(kind) = kind(e) else {
        return;
    };
    let detail = e.refusal().and_then(|r| serde_json::to_value(r).ok());
    let host = super::hostname();
    let pid = std::process::id() as i32;
    let r = c
        .execute(
            "INSERT INTO run_refusal (params_key, kind, reason, detail, host, pid) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&params_key, &kind, &e.to_string(), &detail, &host, &pid],
        )
        .await;
    if let Err(err) = r {
        tracing::warn!("could not record the refusal ({e}): {err}");
    }
}

/// The most recent refusals, newest first.
pub async fn recent(c: &Client, limit: i64) -> Result<Vec<RefusalRow>> {
    Ok(c.query(
        "SELECT refusal_id, to_char(refused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
                    params_key, kind, reason \
             FROM run_refusal ORDER BY refusal_id DESC LIMIT $1",
        &[&limit],
    )
    .await
    .db("reading the refused runs")?
    .iter()
    .map(|r| RefusalRow {
        refusal_id: r.get(0),
        refused_at: r.get(1),
        params: r.get(2),
        kind: r.get(3),
        reason: r.get(4),
    })
    .collect())
}
