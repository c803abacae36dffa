//! `settle demo`, `settle datagen` and `settle bench`: off the run path.

use anyhow::Context;
use settle::db::Database;

use super::args::{BenchWhat, ConnArgs};
use super::run::Progress;

pub async fn demo(
    conn: &ConnArgs,
    (rows, days, videos): (u64, u32, u64),
    yes: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let database = match &conn.database_url {
        Some(url) => {
            let database = Database::open(Some(url), None).await?;
            // settle_demo is the demo's own; anyone else's log is guarded.
            let settle = settle::Settle::from_database(database);
            if !yes && settle.check_schema().await.is_ok() {
                refuse_replacing(&settle.database().connect().await?, "demo").await?;
            }
            Database::open(Some(url), None).await?
        }
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
    yes: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let settle = settle::Settle::connect(&conn.config()).await?;
    let database = settle.database();
    let c = database.connect().await?;
    if !args.append && !yes {
        refuse_replacing(&c, "datagen").await?;
    }
    let summary = settle_datagen::run(args, database.config()).await?;
    if !args.append {
        settle::tools::guard::mark(&c).await?;
    }
    settle::jobs::changes::watch(&c).await?;
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
    let settle = settle::Settle::connect(&conn.config()).await?;
    let database = settle.database();
    match what {
        Some(BenchWhat::Datagen { args, results_dir }) => {
            let rec =
                settle_datagen::bench_vs_pgbench(&args, database.config(), &results_dir).await?;
            println!("{}", serde_json::to_string_pretty(&rec)?);
        }
        None if args.scale => {
            let url = settle::tools::bench::url_for(database, conn.database_url.as_deref());
            let exe = std::env::current_exe().context("locating the settle binary")?;
            let rec = settle::tools::bench::scale::scale(database, &url, &exe, args, &|m| {
                eprintln!("bench: {m}")
            })
            .await?;
            print!("{}", settle::tools::bench::scale::markdown(&rec));
            eprintln!("bench: plot in {}", rec.plot);
        }
        None => {
            let url = settle::tools::bench::url_for(database, conn.database_url.as_deref());
            let exe = std::env::current_exe().context("locating the settle binary")?;
            let rec = settle::tools::bench::bench(database, &url, &exe, args, &|m| {
                eprintln!("bench: {m}")
            })
            .await?;
            eprintln!("bench: wrote {} (and .json)", rec.written_to);
            print!("{}", settle::tools::bench::markdown(&rec));
        }
    }
    Ok(0)
}

/// Refuses (exit 2) to replace a log worth keeping, saying how to go on.
async fn refuse_replacing(c: &tokio_postgres::Client, command: &str) -> anyhow::Result<()> {
    if let Some(why) = settle::tools::guard::replace_refusal(c).await? {
        return Err(settle::Error::Usage(format!(
            "settle {command} would replace videos and viewing_log, but {why}; pass --yes to replace them anyway, or use another database (--database-url)"
        ))
        .into());
    }
    Ok(())
}
