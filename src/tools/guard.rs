//! Before a command replaces `videos` and `viewing_log` wholesale (`demo`,
//! a full `datagen` load): whether that would destroy something of value.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// What `viewing_log`'s comment says after a load by settle itself.
pub const MARK: &str = "filled by settle datagen";

/// Why replacing the log needs `--yes`, or `None` when it is safe: the log
/// is empty, or settle filled it and nothing of it is settled.
pub async fn replace_refusal(c: &Client) -> Result<Option<String>> {
    let r = c
        .query_one(
            "SELECT to_regclass('viewing_log') IS NOT NULL AND EXISTS (SELECT 1 FROM viewing_log), \
                    coalesce(obj_description(to_regclass('viewing_log'), 'pg_class'), ''), \
                    (SELECT count(*) FROM settled_day)",
            &[],
        )
        .await
        .db("looking at what a load would replace")?;
    let (has_rows, comment, settled): (bool, String, i64) = (r.get(0), r.get(1), r.get(2));
    Ok(if !has_rows {
        None
    } else if settled > 0 {
        Some(format!(
            "viewing_log has {settled} settled day(s): replacing it would leave published results without their plays"
        ))
    } else if comment != MARK {
        Some("viewing_log holds plays that settle did not generate".to_string())
    } else {
        None
    })
}

/// Marks the log as settle's own, after a full load.
pub async fn mark(c: &Client) -> Result<()> {
    c.batch_execute(&format!("COMMENT ON TABLE viewing_log IS '{MARK}'"))
        .await
        .db("marking viewing_log as generated")
}
