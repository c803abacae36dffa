//! `settle history`, `settle status` and `settle stop`: the job repository,
//! read and asked.

use settle::{Settle, StopAnswer};

use super::args::ConnArgs;

/// How many verifications plain `settle history` lists after the executions.
const RECENT_VERIFICATIONS: i64 = 5;

pub async fn history(
    conn: &ConnArgs,
    limit: i64,
    (all, verifications): (bool, bool),
    json: bool,
) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let c = settle.database().connect().await?;
    if verifications {
        let rows = settle::jobs::verification::recent(&c, limit).await?;
        if json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            print!("{}", super::render::render_verifications(&rows));
        }
        return Ok(0);
    }
    let rows = settle.history(limit).await?;
    let refusals = if all {
        Some(settle.refusals(limit).await?)
    } else {
        None
    };
    if json {
        // Without --all, the array of executions it always was.
        match refusals {
            None => println!("{}", serde_json::to_string(&rows)?),
            Some(r) => println!(
                "{}",
                serde_json::json!({"status": "OK", "executions": rows, "refusals": r})
            ),
        }
    } else {
        print!("{}", super::render::render_history(&rows));
        if let Some(r) = refusals {
            print!("{}", super::render::render_refusals(&r));
        }
        let recent = settle::jobs::verification::recent(&c, RECENT_VERIFICATIONS).await?;
        if !recent.is_empty() {
            println!("\nlatest verifications (all: settle history --verifications):");
            print!("{}", super::render::render_verifications(&recent));
        }
    }
    Ok(0)
}

pub async fn status(conn: &ConnArgs, execution: i64, json: bool) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
    let s = settle.status(execution).await?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", super::render::render_status(&s));
    }
    Ok(0)
}

pub async fn stop(conn: &ConnArgs, execution: i64) -> anyhow::Result<i32> {
    let database =
        settle::db::Database::open(conn.database_url.as_deref(), conn.pg_dir.clone()).await?;
    match Settle::from_database(database).stop(execution).await? {
        StopAnswer::Asked => println!("asked execution {execution} to stop; it ends STOPPED once its workers let go of their partitions"),
        StopAnswer::NotRunning(status) => {
            println!("execution {execution} is {status}; nothing to stop")
        }
    }
    Ok(0)
}
