//! Command-line surface. Exit codes: 0 ok, 1 the job ran but failed its
//! checks, 2 usage or environment error.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use settle::db::{self, Database};

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
    /// Manage the embedded PostgreSQL cluster.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Say where the embedded cluster is and whether it is running.
    Status,
    /// Stop the embedded server now, even if another settle process uses it.
    Stop,
    /// Print a connection URL for the embedded cluster (for psql: use
    /// `psql "$(settle db url)"`). Starts the server and keeps it running
    /// until `settle db stop`.
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
                DbCommand::Url => {
                    std::env::set_var("SETTLE_KEEP_PG", "1");
                    let database = Database::open(None, Some(dir.clone())).await?;
                    let cluster = db::embedded::Cluster::new(dir)?;
                    println!("{}", cluster.url("settle"));
                    drop(database);
                }
            }
            Ok(0)
        }
    }
}
