//! Flags, and the settings they become: every command's arguments are
//! declared here, and turned into library values in one place.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use settle::jobs::Requested;
use settle::rules::Day;
use settle::{Config, RunRequest};

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

impl ConnArgs {
    pub fn config(&self) -> Config {
        Config {
            database_url: self.database_url.clone(),
            pg_dir: self.pg_dir.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Settle every day that has plays (and every day already settled).
    #[arg(long, conflicts_with_all = ["date", "from", "to"])]
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
    /// Reader threads [default: number of cores]. With --remote, 0 leaves
    /// every partition to `settle worker` processes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub workers: Option<u32>,
    /// Open the partitions to `settle worker` processes on any host: they
    /// claim them through the job repository, read them in this run's
    /// snapshot and store their results; this process reads some too
    /// (unless --workers 0), then resolves, prices and publishes as usual.
    #[arg(long)]
    pub remote: bool,
    /// With --remote: seconds a claimed partition may take before it is
    /// taken back and given to another worker.
    #[arg(long, value_name = "SECS", default_value_t = settle::engine::DEFAULT_PARTITION_TIMEOUT.as_secs(), requires = "remote", value_parser = clap::value_parser!(u64).range(1..))]
    pub partition_timeout: u64,
    /// Read the log from this server instead, e.g. a hot standby of the
    /// primary: every reader imports one snapshot exported there, while the
    /// job repository and the publish stay on the primary (DATABASE_URL).
    /// `settle worker`s of a --remote run must read from the same server.
    #[arg(
        long,
        value_name = "URL",
        env = "SETTLE_READ_URL",
        hide_env_values = true
    )]
    pub read_url: Option<String>,
    /// How to publish: `swap` builds the result tables anew on two
    /// connections and swaps them in (fast when the run rewrites most of
    /// them, e.g. a first --all); `diff` writes only the rows that changed
    /// (fast for a nightly day); `auto` picks by size.
    #[arg(long, value_enum, default_value_t = settle::engine::PublishMode::Auto)]
    pub publish: settle::engine::PublishMode,
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
    /// Settle days that hold no plays, instead of refusing them with exit
    /// code 3 (a night whose upstream load failed must not look green).
    #[arg(long)]
    pub allow_empty: bool,
    /// How many days after today (Seoul) a run may reach; later days are
    /// refused as a typing slip.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=366))]
    pub horizon_days: u32,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test hook: pause this many milliseconds after each partition.
    #[arg(long, hide = true, default_value_t = 0)]
    pub pause_after_partition_ms: u64,
    /// Test hook: with a swap publish, pause this many milliseconds with
    /// the new tables staged, before swapping them in.
    #[arg(long, hide = true, default_value_t = 0)]
    pub pause_before_swap_ms: u64,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Read the log from this server (e.g. a hot standby); the default is
    /// the primary (DATABASE_URL). It must be the server the coordinator
    /// (`settle run --remote --read-url`) exported its snapshot on.
    #[arg(
        long,
        value_name = "URL",
        env = "SETTLE_READ_URL",
        hide_env_values = true
    )]
    pub read_url: Option<String>,
    /// Claiming reader threads [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Exit once no running execution has an unfinished partition (after
    /// waiting up to --wait for one to start), for tests and batch
    /// schedulers. Without it the worker runs until SIGTERM or Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// With --once: seconds to wait for a run to open partitions.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "once")]
    pub wait: u64,
    /// Milliseconds between looks for work when no notification comes.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// Print one JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test hook: pause this many milliseconds mid-partition.
    #[arg(long, hide = true, default_value_t = 0)]
    pub pause_mid_partition_ms: u64,
}

impl WorkerArgs {
    pub fn options(&self) -> Result<settle::remote::WorkerOptions, settle::Error> {
        use std::time::Duration;
        let read = match &self.read_url {
            None => None,
            Some(u) => Some(u.parse().map_err(|e| {
                settle::Error::Usage(format!("--read-url is not a valid PostgreSQL URL: {e}"))
            })?),
        };
        Ok(settle::remote::WorkerOptions {
            read,
            threads: self.threads.map(|t| t as usize).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            until: if self.once {
                settle::remote::Until::NoWork {
                    wait_first: Duration::from_secs(self.wait),
                }
            } else {
                settle::remote::Until::Stopped
            },
            poll: Duration::from_millis(self.poll_ms),
            pause_mid: Duration::from_millis(self.pause_mid_partition_ms),
        })
    }
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

impl RunArgs {
    /// The days asked for.
    pub fn requested(&self) -> Result<Requested, settle::Error> {
        Ok(match (self.all, self.date, self.from, self.to) {
            (true, _, _, _) => Requested::All,
            (_, Some(d), _, _) => Requested::Days(Day::from_date(d), Day::from_date(d)),
            (_, _, Some(a), Some(b)) => Requested::Days(Day::from_date(a), Day::from_date(b)),
            _ => {
                return Err(settle::Error::Usage(
                    "say which days: --date D, --from D --to D, or --all".into(),
                ))
            }
        })
    }

    /// The run these flags ask for.
    pub fn request(&self) -> Result<RunRequest, settle::Error> {
        let mut req = RunRequest::new(self.requested()?);
        let opts = &mut req.options;
        opts.partitions = self.partitions;
        if let Some(w) = self.workers {
            if w == 0 && !self.remote {
                return Err(settle::Error::Usage(
                    "--workers 0 reads nothing: it needs --remote, so that `settle worker` processes read the partitions".into(),
                ));
            }
            opts.workers = w as usize;
        }
        opts.remote = self.remote;
        opts.partition_timeout = std::time::Duration::from_secs(self.partition_timeout);
        opts.read_url = self.read_url.clone();
        opts.streams = self.streams as usize;
        opts.max_rejects = self.max_rejects;
        opts.force = self.force;
        opts.fresh = self.fresh;
        opts.attempts = self.attempts;
        opts.disorder_minutes = self.disorder_minutes;
        opts.allow_empty = self.allow_empty;
        opts.horizon_days = self.horizon_days;
        opts.pause_after_partition =
            std::time::Duration::from_millis(self.pause_after_partition_ms);
        opts.publish = self.publish;
        opts.pause_before_swap = std::time::Duration::from_millis(self.pause_before_swap_ms);
        Ok(req)
    }
}
