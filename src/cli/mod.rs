//! The command line: clap types, one-match dispatch, and the exit-code
//! contract. Each command group lives in its own module; the library does
//! the work and this layer prints.
//!
//! Exit codes: 0 ok; 1 the job ran and failed its checks; 2 usage or
//! environment error.

mod admin;
mod args;
mod exit;
mod inspect;
mod lifecycle;
mod render;
mod run;
mod tools;

use clap::{Parser, Subcommand};

pub use args::{BenchWhat, ConnArgs, DbCommand, RunArgs};

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
        args: settle::tools::bench::BenchArgs,
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
    /// Append play files (CSV, TSV, NDJSON, Parquet) to viewing_log, each
    /// exactly once: unparseable rows are rejects (file, line, column,
    /// reason), more than --max-rejects loads nothing of the file, and the
    /// same content again is refused. See docs/retention.md.
    Ingest(lifecycle::IngestArgs),
    /// Drop (or detach) viewing_log partitions whose plays are all older than
    /// --keep-days and settled; runs that would need them are refused after.
    Retention(lifecycle::RetentionArgs),
    /// Manage the embedded PostgreSQL cluster.
    #[command(subcommand)]
    Db(DbCommand),
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
        Err(err) => exit::report(&err),
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

/// One arm per command; each hands its flags to its module.
async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let conn = &cli.conn;
    match cli.command {
        Command::Migrate { json } => admin::migrate(conn, json).await,
        Command::Run(args) => run::run(conn, args).await,
        Command::Demo {
            rows,
            days,
            videos,
            json,
        } => tools::demo(conn, rows, days, videos, json).await,
        Command::Datagen { args, json } => tools::datagen(conn, &args, json).await,
        Command::Bench { what, args } => tools::bench(conn, what, &args).await,
        Command::History { limit, json } => inspect::history(conn, limit, json).await,
        Command::Status { execution, json } => inspect::status(conn, execution, json).await,
        Command::Stop { execution } => inspect::stop(conn, execution).await,
        Command::Ingest(args) => lifecycle::ingest(conn, args).await,
        Command::Retention(args) => lifecycle::retention(conn, args).await,
        Command::Db(cmd) => admin::db(conn, cmd).await,
    }
}
