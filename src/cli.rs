//! Command-line surface. Exit codes: 0 ok, 1 the job ran but failed its
//! checks, 2 usage or environment error.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use settle::db::{self, Database};
use settle::engine::{Outcome, RunOptions};
use settle::jobs::Requested;

/// settle: exact, fast nightly settlement of a video platform's viewing log.
///
/// With no DATABASE_URL, settle starts a private PostgreSQL cluster from the
/// machine's server binaries (the embedded default), reuses it across runs,
/// and stops it when the last settle process using it exits.
#[derive(Parser, Debug)]
#[command(name = "settle", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// PostgreSQL URL to use instead of the embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Directory of the embedded cluster [default: /var/lib/settle/pg for
    /// root, else ~/.local/share/settle/pg].
    #[arg(long, env = "SETTLE_PG_DIR", global = true)]
    pub pg_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update the schema (input, result and job tables). Safe to
    /// run twice; refuses if an applied migration file was edited.
    Migrate {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show settle end to end: migrate, generate a realistic dataset (1.2M plays
    /// over 4 weeks by default), settle it and print a report. Uses the database
    /// `settle_demo` of the embedded cluster, or DATABASE_URL's database, whose
    /// videos and viewing_log it replaces.
    Demo {
        /// Plays to generate.
        #[arg(long, default_value_t = 1_200_000)]
        rows: u64,
        /// Days to spread them over.
        #[arg(long, default_value_t = 28)]
        days: u32,
        /// Videos in the catalogue.
        #[arg(long, default_value_t = 20_000)]
        videos: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fill videos and viewing_log with a realistic, deterministic load.
    // clap drops a flattened struct's doc comment, so the long help is named here.
    #[command(about = settle_datagen::ABOUT, long_about = settle_datagen::LONG_ABOUT)]
    Datagen {
        #[command(flatten)]
        args: settle_datagen::DatagenArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Settle days: count, price and rank plays, and publish the results.
    Run(RunArgs),
    /// Ask a running execution to stop; it ends STOPPED and publishes nothing.
    Stop {
        /// The execution id (see `settle history`).
        execution: i64,
    },
    /// Measure the engine on the current data against the floor (server-side
    /// COPY to /dev/null), its own reads alone, the write alone (its result
    /// rows copied into empty tables), sql/reference/, and the nightly --date
    /// case, with each case's CPU seconds (server and engine) and a check
    /// that the engine's rows equal the reference's; writes a JSON record
    /// and a markdown table to results/. It clears and rewrites the
    /// settlement results, so run it on a bench database, never on the one
    /// operators publish to. `settle bench datagen` measures the generator
    /// against pgbench -i instead.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<BenchWhat>,
        #[command(flatten)]
        args: settle::bench::BenchArgs,
    },
    /// List recent executions: id, parameters, status, duration, counts.
    History {
        /// How many executions to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one execution: its partitions, attempts, errors and rejected rows.
    Status {
        /// The execution id (see `settle history`).
        execution: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage the embedded PostgreSQL cluster.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Settle every day that has plays (and every day already settled).
    #[arg(long, conflicts_with_all = ["date", "from", "to"], required_unless_present_any = ["date", "from"])]
    pub all: bool,
    /// Settle one Seoul day (YYYY-MM-DD).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<chrono::NaiveDate>,
    /// First Seoul day to settle (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<chrono::NaiveDate>,
    /// Last Seoul day to settle, inclusive (with --from).
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,
    /// Number of id-range partitions [default: about one per 16M rows, more when a partition would hold over 64 MiB of per-video day cells, a multiple of workers x streams]. When viewing_log is partitioned by id, each split point moves to the nearest partition bound within half a range, so ranges cover whole partitions where they can (read by sequential scan).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub partitions: Option<u32>,
    /// Reader threads [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// COPY streams (connections) each reader thread interleaves, so the
    /// thread aggregates one stream's rows while the server produces
    /// another's. Each stream holds its own replay window (~80 MB at 3M
    /// plays a day): 2 reads ~5% faster for ~180 MB more.
    #[arg(long, default_value_t = settle::engine::DEFAULT_STREAMS as u32, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub streams: u32,
    /// Fail the run, publishing nothing, when more rows than this are rejected.
    #[arg(long)]
    pub max_rejects: Option<u64>,
    /// Run again even though this date range already COMPLETED (a new execution).
    #[arg(long)]
    pub force: bool,
    /// Continue the last failed, stopped or abandoned execution of this range,
    /// re-reading only its unfinished partitions (the default for a failed range).
    #[arg(long, conflicts_with = "fresh")]
    pub restart: bool,
    /// Start over instead of continuing a failed execution.
    #[arg(long)]
    pub fresh: bool,
    /// Attempts per partition on transient errors (connection loss, server restart,
    /// serialization failure, too many connections), with exponential backoff.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// How far (minutes) a play's started_at may trail the log order before the
    /// reader treats it as late and settles it through the exact path. Also the
    /// span of a settled day's last hours that the next `--from` run recounts:
    /// plays written there since the day was settled make the run settle that
    /// day again.
    #[arg(long, default_value_t = settle::engine::DEFAULT_DISORDER_MINUTES)]
    pub disorder_minutes: u32,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test hook: pause this many milliseconds after each partition.
    #[arg(long, hide = true, default_value_t = 0)]
    pub pause_after_partition_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Time `settle datagen` against `pgbench -i` on the same cluster, one
    /// after the other, and record both in results/.
    Datagen {
        #[command(flatten)]
        args: settle_datagen::BenchArgs,
        /// Where to write the record.
        #[arg(long, default_value = "results")]
        results_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Say where the embedded cluster is and whether it is running.
    Status,
    /// Stop the embedded server now, even if another settle process uses it.
    Stop,
    /// Start the embedded server and keep it running until `settle db stop`
    /// (otherwise the last settle process using it stops it).
    Start,
    /// Print a connection URL for the embedded cluster, e.g. for
    /// `psql "$(settle db url)"` while the server runs (see `settle db start`).
    Url,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return 2;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            exit_code(&err)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<settle::Error>() {
            return if e.is_environment() { 2 } else { 1 };
        }
    }
    2
}

async fn open(conn: &ConnArgs) -> anyhow::Result<Database> {
    Ok(Database::open(conn.database_url.as_deref(), conn.pg_dir.clone()).await?)
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Migrate { json } => {
            let database = open(&cli.conn).await?;
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
        Command::Run(args) => run(&cli.conn, args).await,
        Command::Demo {
            rows,
            days,
            videos,
            json,
        } => {
            let database = match &cli.conn.database_url {
                Some(url) => Database::open(Some(url), None).await?,
                None => Database::open_named(None, cli.conn.pg_dir.clone(), "settle_demo").await?,
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
            let report = settle::demo::demo(&database, &flags, !json).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", settle::demo::render(&report));
            }
            Ok(0)
        }
        Command::Datagen { args, json } => {
            let database = open(&cli.conn).await?;
            {
                let mut c = database.connect().await?;
                db::migrate::migrate(&mut c).await?;
            }
            let summary = settle_datagen::run(&args, database.config()).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
            Ok(0)
        }
        Command::Bench { what, args } => {
            let database = open(&cli.conn).await?;
            {
                let mut c = database.connect().await?;
                db::migrate::migrate(&mut c).await?;
            }
            match what {
                Some(BenchWhat::Datagen { args, results_dir }) => {
                    let rec =
                        settle_datagen::bench_vs_pgbench(&args, database.config(), &results_dir)
                            .await?;
                    println!("{}", serde_json::to_string_pretty(&rec)?);
                }
                None => {
                    let url = settle::bench::url_for(&database, cli.conn.database_url.as_deref());
                    let exe = std::env::current_exe().context("locating the settle binary")?;
                    let rec = settle::bench::bench(&database, &url, &exe, &args).await?;
                    print!("{}", settle::bench::markdown(&rec));
                }
            }
            Ok(0)
        }
        Command::History { limit, json } => {
            let database = open(&cli.conn).await?;
            let mut c = database.connect().await?;
            db::migrate::migrate(&mut c).await?;
            let rows = settle::history::recent(&c, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", settle::history::render_history(&rows));
            }
            Ok(0)
        }
        Command::Status { execution, json } => {
            let database = open(&cli.conn).await?;
            let mut c = database.connect().await?;
            db::migrate::migrate(&mut c).await?;
            let s = settle::history::status(&c, execution).await?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print!("{}", settle::history::render_status(&s));
            }
            Ok(0)
        }
        Command::Stop { execution } => {
            let database = open(&cli.conn).await?;
            let client = database.connect().await?;
            let status = settle::jobs::request_stop(&client, execution).await?;
            if status == "RUNNING" || status == "STARTING" {
                println!("asked execution {execution} to stop; it ends STOPPED once its workers let go of their partitions");
            } else {
                println!("execution {execution} is {status}; nothing to stop");
            }
            Ok(0)
        }
        Command::Db(cmd) => {
            let dir = cli
                .conn
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
    }
}

fn requested(args: &RunArgs) -> anyhow::Result<Requested> {
    use settle::rules::Day;
    Ok(match (args.all, args.date, args.from, args.to) {
        (true, _, _, _) => Requested::All,
        (_, Some(d), _, _) => Requested::Days(Day::from_date(d), Day::from_date(d)),
        (_, _, Some(a), Some(b)) => Requested::Days(Day::from_date(a), Day::from_date(b)),
        _ => {
            return Err(settle::Error::Usage(
                "say which days: --all, --date D, or --from D --to D".into(),
            )
            .into())
        }
    })
}

async fn run(conn: &ConnArgs, args: RunArgs) -> anyhow::Result<i32> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let req = requested(&args)?;
    let database = open(conn).await?;
    {
        let mut c = database.connect().await?;
        db::migrate::migrate(&mut c).await?;
    }
    let mut opts = RunOptions::new(req);
    opts.partitions = args.partitions;
    if let Some(w) = args.workers {
        opts.workers = w as usize;
    }
    opts.streams = args.streams as usize;
    opts.max_rejects = args.max_rejects;
    opts.force = args.force;
    opts.fresh = args.fresh;
    opts.attempts = args.attempts;
    opts.disorder_minutes = args.disorder_minutes;
    opts.progress = !args.json;
    opts.pause_after_partition = std::time::Duration::from_millis(args.pause_after_partition_ms);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            eprintln!("stopping: finishing or abandoning the current partitions; nothing will be published");
            stop.store(true, Ordering::SeqCst);
        });
    }
    match settle::engine::run(&database, &opts, stop).await? {
        Outcome::AlreadyCompleted { execution_id } => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"status": "ALREADY_COMPLETED", "execution_id": execution_id})
                );
            } else {
                println!("this date range already COMPLETED in execution {execution_id}; nothing to do (use --force to run it again)");
            }
            Ok(0)
        }
        Outcome::Completed(summary) => {
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print!("{}", settle::report::run_summary(&summary));
            }
            Ok(0)
        }
    }
}
