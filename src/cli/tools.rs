//! `settle demo`, `settle datagen` and `settle bench`: off the run path.

use anyhow::Context;
use settle::db::{self, Database};

use super::admin::open;
use super::args::{BenchWhat, ConnArgs};
use super::run::Progress;

pub async fn demo(
    conn: &ConnArgs,
    rows: u64,
    days: u32,
    videos: u64,
    json: bool,
) -> anyhow::Result<i32> {
    let database = match &conn.database_url {
        Some(url) => Database::open(Some(url), None).await?,
        None => Database::open_named(None, conn.pg_dir.clone(), "settle_demo").await?,
    };
    let flags: Vec<String> = vec![
        "--rows".into(),
        rows.to_string(),
        "--days".into(),
        days.to_string(),
        "--videos".into(),
        videos.to_string(),
        "--users".into(),
        (rows / 4).max(1000).to_string(),
        "--creators".into(),
        (videos / 10).max(1).to_string(),
    ];
    let progress = Progress::new(!json);
    let report = settle::tools::demo::demo(&database, &flags, &progress).await;
    progress.finish();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", settle::tools::demo::render(&report));
    }
    Ok(0)
}

pub async fn datagen(
    conn: &ConnArgs,
    args: &settle_datagen::DatagenArgs,
    json: bool,
) -> anyhow::Result<i32> {
    let database = open(conn).await?;
    {
        let mut c = database.connect().await?;
        db::migrate::migrate(&mut c).await?;
    }
    let summary = settle_datagen::run(args, database.config()).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(0)
}

pub async fn bench(
    conn: &ConnArgs,
    what: Option<BenchWhat>,
    args: &settle::tools::bench::BenchArgs,
) -> anyhow::Result<i32> {
    let database = open(conn).await?;
    {
        let mut c = database.connect().await?;
        db::migrate::migrate(&mut c).await?;
    }
    match what {
        Some(BenchWhat::Datagen { args, results_dir }) => {
            let rec =
                settle_datagen::bench_vs_pgbench(&args, database.config(), &results_dir).await?;
            println!("{}", serde_json::to_string_pretty(&rec)?);
        }
        None => {
            let url = settle::tools::bench::url_for(&database, conn.database_url.as_deref());
            let exe = std::env::current_exe().context("locating the settle binary")?;
            let rec = settle::tools::bench::bench(&database, &url, &exe, args).await?;
            print!("{}", settle::tools::bench::markdown(&rec));
        }
    }
    Ok(0)
}
