//! `settle history`, `settle status` and `settle stop`: the job repository,
//! read and asked.

use settle::{Settle, StopAnswer};

use super::args::ConnArgs;

pub async fn history(conn: &ConnArgs, limit: i64, all: bool, json: bool) -> anyhow::Result<i32> {
    let settle = Settle::connect(&conn.config()).await?;
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
