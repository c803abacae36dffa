//! `settle migrate` and `settle db ...`: the schema and the embedded cluster.

use anyhow::Context;
use settle::db::{self, Database};

use super::args::{ConnArgs, DbCommand};

pub async fn open(conn: &ConnArgs) -> anyhow::Result<Database> {
    Ok(Database::open(conn.database_url.as_deref(), conn.pg_dir.clone()).await?)
}

pub async fn migrate(conn: &ConnArgs, json: bool) -> anyhow::Result<i32> {
    let database = open(conn).await?;
    let mut client = database.connect().await?;
    let report = db::migrate::migrate(&mut client).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.applied.is_empty() {
        println!(
            "schema is up to date ({} migrations already applied) on {}",
            report.already.len(),
            database.display
        );
    } else {
        for m in &report.applied {
            println!("applied {m}");
        }
        println!("schema is up to date on {}", database.display);
    }
    Ok(0)
}

pub async fn db(conn: &ConnArgs, cmd: DbCommand) -> anyhow::Result<i32> {
    let dir = conn
        .pg_dir
        .clone()
        .unwrap_or_else(db::embedded::default_dir);
    match cmd {
        DbCommand::Status => {
            let cluster = db::embedded::Cluster::new(dir.clone())?;
            let state = if cluster.is_running() {
                "running"
            } else {
                "stopped"
            };
            println!("embedded cluster: {} ({state})", dir.display());
            println!("url: {}", cluster.url("settle"));
        }
        DbCommand::Stop => {
            let cluster = db::embedded::Cluster::new(dir.clone())?;
            if cluster
                .stop_now()
                .context("stopping the embedded cluster")?
            {
                println!("stopped the embedded cluster at {}", dir.display());
            } else {
                println!("the embedded cluster at {} was not running", dir.display());
            }
        }
        DbCommand::Start => {
            let cluster = db::embedded::Cluster::new(dir.clone())?;
            cluster.keep_running()?;
            let database = Database::open(None, Some(dir.clone())).await?;
            drop(database);
            println!(
                "the embedded cluster at {} is running; stop it with `settle db stop`",
                dir.display()
            );
            println!("url: {}", cluster.url("settle"));
        }
        DbCommand::Url => {
            let cluster = db::embedded::Cluster::new(dir)?;
            println!("{}", cluster.url("settle"));
        }
    }
    Ok(0)
}
