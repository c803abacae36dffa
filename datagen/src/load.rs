//! Talking to PostgreSQL: the full load (id-range partitions generated,
//! copied with COPY FREEZE and indexed side by side, then swapped in as
//! viewing_log in one transaction) and the append.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_postgres::{Client, Config, NoTls};

use crate::copy;
use crate::model::{self, Plan, Profile, VideoMeta};
use crate::pipeline::{Pipeline, Segment, Written};
use crate::{DatagenArgs, Error, Summary, DEFAULT_DAYS, DEFAULT_ROWS};

/// The definitions in migration 0001, rebuilt after a full load.
const CREATE_PKEY_INDEX: &str =
    "CREATE UNIQUE INDEX viewing_log_pkey ON viewing_log USING btree (id)";
const ATTACH_PKEY: &str = "ALTER TABLE viewing_log ADD CONSTRAINT viewing_log_pkey PRIMARY KEY USING INDEX viewing_log_pkey";
/// The BRIN index's method and options, shared by viewing_log and the
/// partitions a full load builds: attaching a partition reuses its index
/// only when the definitions match (else it builds another).
const BRIN_USING: &str = "USING brin (started_at) WITH (pages_per_range = 32)";

fn create_brin(table: &str, index: &str) -> String {
    format!("CREATE INDEX {index} ON {table} {BRIN_USING}")
}

const LOG_COLUMN_NAMES: &str = "id, user_id, video_id, started_at, start_position, end_position";
const COPY_VIDEOS: &str = "COPY videos (video_id, uploader_id, duration_seconds, title, created_at) FROM STDIN (FORMAT binary";

const SEOUL_OFFSET_SECS: i64 = 9 * 3_600;

async fn connect(pg: &Config) -> Result<Client, Error> {
    let (client, conn) = pg.connect(NoTls).await.map_err(Error::db(format!(
        "connecting to database '{}'",
        dbname(pg)
    )))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("datagen connection closed: {e}");
        }
    });
    Ok(client)
}

fn dbname(pg: &Config) -> &str {
    pg.get_dbname().unwrap_or("?")
}

/// Unix seconds of 00:00 KST on `day`.
fn seoul_midnight_unix(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp()
        - SEOUL_OFFSET_SECS
}

fn seoul_date(t: DateTime<Utc>) -> NaiveDate {
    DateTime::from_timestamp(t.timestamp() + SEOUL_OFFSET_SECS, 0)
        .expect("in range")
        .date_naive()
}

fn days_since_1970(day: NaiveDate) -> i64 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days()
}

fn progress(rows: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows, {rate}, ETA {eta}",
        )
        .expect("valid template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2}M rows/s", state.per_sec() / 1e6);
            },
        ),
    );
    pb.set_message(what.to_string());
    pb
}

/// A spinner for a phase without a row count (hidden when stderr is not a
/// terminal, like the progress bar).
fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}

/// Fills `videos` and `viewing_log` as `args` say; see [`DatagenArgs`].
pub async fn run(args: &DatagenArgs, pg: &Config) -> Result<Summary, Error> {
    args.validate()?;
    let started = Instant::now();
    let client = connect(pg).await?;
    let migrated: bool = client
        .query_one(
            "SELECT to_regclass('viewing_log') IS NOT NULL AND to_regclass('videos') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("checking for the input tables"))?
        .get(0);
    if !migrated {
        return Err(Error::NotMigrated(format!("database '{}'", dbname(pg))));
    }
    // Start writeback of the table's pages as they are written, so that the
    // fsync at COMMIT (which replaces WAL under wal_level=minimal) does not
    // find gigabytes of dirty page cache left to write.
    client
        .batch_execute("SET backend_flush_after = '2MB'")
        .await
        .map_err(Error::db("preparing the load session"))?;
    let mut summary = if args.append {
        append(args, pg, client).await?
    } else {
        replace(args, pg, client).await?
    };
    summary.total_secs = Summary::secs(started.elapsed());
    summary.rows_per_sec = if summary.total_secs > 0.0 {
        (summary.rows as f64 / summary.total_secs).round()
    } else {
        0.0
    };
    Ok(summary)
}

/// The generation inputs shared by both modes.
struct Job {
    plan: Arc<Plan>,
    profile: Arc<Profile>,
    first_day: NaiveDate,
    window_pg_secs: i64,
}

fn job(args: &DatagenArgs, rows: u64, first_day: NaiveDate, videos: Vec<VideoMeta>) -> Job {
    let abs_days = (0..args.days as i64)
        .map(|d| days_since_1970(first_day) + d)
        .collect();
    let plan = Plan::new(rows, abs_days, first_day.weekday().num_days_from_monday());
    let profile = Profile::new(
        args.seed,
        args.users,
        videos,
        args.self_play_rate,
        args.replay_rate,
        args.invalid_rate,
    );
    Job {
        plan: Arc::new(plan),
        profile: Arc::new(profile),
        first_day,
        window_pg_secs: seoul_midnight_unix(first_day) - copy::PG_EPOCH_UNIX,
    }
}

/// The generated catalogue's metadata (the rows themselves are a pure
/// function of the seed, made again when copied).
fn catalogue(args: &DatagenArgs, before_unix: i64) -> Vec<VideoMeta> {
    (1..=args.videos)
        .map(|id| model::video_row(args.seed, id, args.users, args.creators, before_unix).meta)
        .collect()
}

/// Generates the catalogue and COPYs it in `copy_sql`; returns its metadata.
async fn load_videos(
    client: &Client,
    args: &DatagenArgs,
    before_unix: i64,
    copy_sql: &str,
) -> Result<Vec<VideoMeta>, Error> {
    let sink = client
        .copy_in::<_, Bytes>(copy_sql)
        .await
        .map_err(Error::db("starting COPY into videos"))?;
    futures_util::pin_mut!(sink);
    let mut metas = Vec::with_capacity(args.videos as usize);
    let mut buf = copy::header();
    for id in 1..=args.videos {
        let v = model::video_row(args.seed, id, args.users, args.creators, before_unix);
        copy::put_video(&mut buf, &v);
        metas.push(v.meta);
        if buf.len() >= 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(Error::db("copying into videos"))?;
        }
    }
    buf.extend_from_slice(&copy::trailer());
    sink.send(Bytes::from(buf))
        .await
        .map_err(Error::db("copying into videos"))?;
    sink.finish()
        .await
        .map_err(Error::db("finishing COPY into videos"))?;
    Ok(metas)
}

/// Forwards one pipeline stream into a COPY; returns the rows PostgreSQL
/// reports. On an error the stream is dropped, which stops its writer.
async fn copy_stream(
    client: &Client,
    sql: &str,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<u64, Error> {
    let sink = client
        .copy_in::<_, Bytes>(sql)
        .await
        .map_err(Error::db("starting COPY into viewing_log"))?;
    futures_util::pin_mut!(sink);
    while let Some(buf) = rx.recv().await {
        sink.feed(buf)
            .await
            .map_err(Error::db("copying into viewing_log"))?;
    }
    sink.finish()
        .await
        .map_err(Error::db("finishing COPY into viewing_log"))
}

/// Generates one segment of the log into the COPY `sql` on `client`.
async fn load_segment(
    job: &Job,
    threads: usize,
    client: &Client,
    sql: &str,
    segment: Segment,
    pb: ProgressBar,
) -> Result<Written, Error> {
    let mut pipeline = Pipeline::spawn(
        job.profile.clone(),
        job.plan.clone(),
        threads,
        segment,
        job.window_pg_secs,
        pb,
    );
    let rx = pipeline
        .stream
        .take()
        .expect("a new pipeline has its stream");
    let copied = copy_stream(client, sql, rx).await;
    let written = tokio::task::spawn_blocking(move || pipeline.join())
        .await
        .map_err(|e| Error::Internal(format!("joining the generator: {e}")))?;
    let copied = copied?;
    let written = written.ok_or_else(|| Error::Internal("the writer thread stopped".into()))?;
    if copied != written.rows {
        return Err(Error::Internal(format!(
            "generated {} rows but PostgreSQL copied {copied}",
            written.rows
        )));
    }
    Ok(written)
}

/// The columns of viewing_log as migration 0001 defines them.
const LOG_COLUMNS: &str = "id bigint NOT NULL, user_id bigint NOT NULL, video_id bigint NOT NULL, \
     started_at timestamptz NOT NULL, start_position integer NOT NULL, end_position integer NOT NULL";

/// Prefix of the tables a full load fills before they become viewing_log's
/// partitions; any left by a killed load are dropped by the next one.
const STAGING: &str = "viewing_log_load_";

/// The default `--leaf-rows`: rows per leaf of a full load, at most.
/// About the engine's partition size: its id ranges then cover whole leaves,
/// which the server reads by sequential scan, where a range inside a leaf
/// is read through the primary key (at 100M rows, the engine's reads alone
/// took 0.84 x the floor over 8 leaves, 1.6 x over index ranges in 2).
pub const LEAF_ROWS: u64 = 12_500_000;

/// Key of the advisory lock that keeps two full loads from sharing their
/// staging tables.
pub const LOAD_LOCK: i64 = 0x5e77_1e00_0000_da7a;

/// One id range of a full load: `lo..hi`, unbounded where `None`.
#[derive(Clone, Copy)]
struct IdRange {
    lo: Option<i64>,
    hi: Option<i64>,
}

impl IdRange {
    fn check(self) -> String {
        match (self.lo, self.hi) {
            (None, None) => "true".into(),
            (Some(l), None) => format!("id >= {l}"),
            (None, Some(h)) => format!("id < {h}"),
            (Some(l), Some(h)) => format!("id >= {l} AND id < {h}"),
        }
    }

    fn bound(self) -> String {
        let b = |v: Option<i64>, open: &str| v.map_or(open.to_string(), |v| v.to_string());
        format!(
            "FROM ({}) TO ({})",
            b(self.lo, "MINVALUE"),
            b(self.hi, "MAXVALUE")
        )
    }
}

/// Loads one segment into its own new table, in its own transaction, and
/// builds its primary key and BRIN index there: the table is new in that
/// transaction, so with wal_level=minimal none of it is WAL-logged and COPY
/// FREEZE writes the rows frozen. The CHECK lets the table be attached as a
/// partition later without a scan.
async fn load_partition(
    pg: &Config,
    job: &Job,
    threads: usize,
    k: usize,
    range: IdRange,
    segment: Segment,
    pb: ProgressBar,
) -> Result<(Written, Instant), Error> {
    let t = format!("{STAGING}{k}");
    let c = connect(pg).await?;
    // Start writeback of the table's pages as they are written, so that the
    // fsync at COMMIT (which replaces WAL under wal_level=minimal) does not
    // find gigabytes of dirty page cache left to write.
    c.batch_execute(&format!(
        "SET backend_flush_after = '2MB'; BEGIN;
         CREATE TABLE {t} ({LOG_COLUMNS}, CONSTRAINT {t}_bounds CHECK ({}))",
        range.check()
    ))
    .await
    .map_err(Error::db(format!("creating {t}")))?;
    let sql = format!("COPY {t} ({LOG_COLUMN_NAMES}) FROM STDIN (FORMAT binary, FREEZE)");
    let written = load_segment(job, threads, &c, &sql, segment, pb).await?;
    let copied = Instant::now();
    tracing::info!(
        partition = k,
        rows = written.rows,
        "partition loaded; indexing it"
    );
    c.batch_execute(&format!(
        "ALTER TABLE {t} ADD CONSTRAINT {t}_pkey PRIMARY KEY (id);
         {};
         COMMIT",
        create_brin(&t, &format!("{t}_brin"))
    ))
    .await
    .map_err(Error::db(format!("indexing {t}")))?;
    Ok((written, copied))
}

/// Drops the staging tables a killed or failed full load left behind.
async fn drop_staging(client: &Client) -> Result<(), Error> {
    let left: Option<String> = client
        .query_one(
            "SELECT string_agg(quote_ident(relname), ', ') FROM pg_class
             WHERE relkind = 'r' AND relname LIKE 'viewing\\_log\\_load\\_%' AND pg_table_is_visible(oid)",
            &[],
        )
        .await
        .map_err(Error::db("looking for the tables of an unfinished load"))?
        .get(0);
    if let Some(list) = left {
        tracing::info!(tables = %list, "dropping the tables of an unfinished load");
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {list}"))
            .await
            .map_err(Error::db("dropping the tables of an unfinished load"))?;
    }
    Ok(())
}

/// A full load: `--jobs` segments of the log are generated and copied at
/// once, each by its own server backend into its own table, and indexed
/// there. One transaction then replaces viewing_log by a table partitioned
/// by id range over them and replaces videos, so a failed or killed load
/// leaves the old tables as they were.
async fn replace(args: &DatagenArgs, pg: &Config, client: Client) -> Result<Summary, Error> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOAD_LOCK])
        .await
        .map_err(Error::db("taking the load lock"))?
        .get(0);
    if !locked {
        return Err(Error::Busy(
            "another `settle datagen` is loading this database; wait for it to finish".into(),
        ));
    }
    drop_staging(&client).await?;
    let result = replace_locked(args, pg, &client).await;
    if result.is_err() {
        // Best effort: the next full load drops them too.
        let _ = client.batch_execute("ROLLBACK").await;
        let _ = drop_staging(&client).await;
    }
    result
}

async fn replace_locked(
    args: &DatagenArgs,
    pg: &Config,
    client: &Client,
) -> Result<Summary, Error> {
    let rows = args.rows.unwrap_or(DEFAULT_ROWS);
    let t0 = Instant::now();
    let before_unix = seoul_midnight_unix(args.start);
    let job = job(args, rows, args.start, catalogue(args, before_unix));
    let leaves = (rows.div_ceil(args.leaf_rows).min(4096) as usize).max(args.jobs);
    let segments = Segment::split(&job.profile, &job.plan, leaves, 1);
    let n = segments.len();
    let firsts: Vec<i64> = segments.iter().map(|s| s.first_id).collect();
    let ranges: Vec<IdRange> = (0..n)
        .map(|k| IdRange {
            lo: (k > 0).then(|| firsts[k]),
            hi: firsts.get(k + 1).copied(),
        })
        .collect();
    // --jobs segments at a time, each with its share of the generator threads.
    let at_once = args.jobs.min(n);
    let threads = (args.jobs / at_once).max(1);
    let pb = progress(job.plan.total, "generate+load");
    let loads = segments.into_iter().enumerate().map(|(k, seg)| {
        let pb = pb.clone();
        let job = &job;
        let range = ranges[k];
        async move { (k, load_partition(pg, job, threads, k, range, seg, pb).await) }
    });
    let mut loaded: Vec<_> = futures_util::stream::iter(loads)
        .buffer_unordered(at_once)
        .collect()
        .await;
    loaded.sort_by_key(|(k, _)| *k);
    let loaded = loaded.into_iter().map(|(_, r)| r);
    pb.finish_and_clear();
    let mut written: Option<Written> = None;
    let mut last_copy = t0;
    for r in loaded {
        let (w, copied) = r?;
        last_copy = last_copy.max(copied);
        written = Some(match written {
            None => w,
            Some(a) => Written {
                rows: a.rows + w.rows,
                first_id: a.first_id,
                last_id: w.last_id,
            },
        });
    }
    let written = written.expect("one segment at least");
    let load_secs = last_copy - t0;

    let pb = spinner("indexing the partitions and replacing viewing_log and videos");
    let mut swap = format!(
        "BEGIN;
         DROP TABLE viewing_log;
         CREATE TABLE viewing_log ({LOG_COLUMNS}, CONSTRAINT viewing_log_pkey PRIMARY KEY (id))
             PARTITION BY RANGE (id);
         {};",
        create_brin("viewing_log", "viewing_log_started_at_brin")
    );
    for (k, r) in ranges.iter().enumerate() {
        let (t, p) = (format!("{STAGING}{k}"), format!("viewing_log_p{k}"));
        swap.push_str(&format!(
            "ALTER TABLE {t} RENAME TO {p};
             ALTER INDEX {t}_pkey RENAME TO {p}_pkey;
             ALTER INDEX {t}_brin RENAME TO {p}_started_at_brin;
             ALTER TABLE viewing_log ATTACH PARTITION {p} FOR VALUES {};
             ALTER TABLE {p} DROP CONSTRAINT {t}_bounds;",
            r.bound()
        ));
    }
    // Same transaction as the TRUNCATE: no WAL, rows written frozen.
    swap.push_str("TRUNCATE videos;");
    client.batch_execute(&swap).await.map_err(Error::db(
        "replacing viewing_log by the loaded partitions (a full load replaces the table: \
         drop objects that depend on it, or use --append)",
    ))?;
    load_videos(
        client,
        args,
        before_unix,
        &format!("{COPY_VIDEOS}, FREEZE)"),
    )
    .await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db("committing the load"))?;
    pb.finish_and_clear();
    let index_secs = t0.elapsed() - load_secs;
    tracing::info!(partitions = n, "viewing_log replaced");

    let t2 = Instant::now();
    let pb = spinner("analyzing videos and viewing_log");
    client
        .batch_execute("ANALYZE videos, viewing_log")
        .await
        .map_err(Error::db("analyzing videos and viewing_log"))?;
    pb.finish_and_clear();
    let analyze_secs = t2.elapsed();

    let mut s = summary(
        "replace",
        args,
        &job,
        written,
        args.videos,
        args.videos,
        [load_secs, index_secs, analyze_secs],
    );
    s.partitions = n;
    Ok(s)
}

fn summary(
    mode: &'static str,
    args: &DatagenArgs,
    job: &Job,
    written: Written,
    videos: u64,
    videos_written: u64,
    [load, index, analyze]: [Duration; 3],
) -> Summary {
    Summary {
        mode,
        rows: written.rows,
        videos,
        videos_written,
        days: args.days,
        first_day: job.first_day.to_string(),
        last_day: (job.first_day + chrono::Days::new(args.days as u64 - 1)).to_string(),
        first_id: written.first_id,
        last_id: written.last_id,
        seed: args.seed,
        jobs: args.jobs,
        partitions: 1,
        generate_load_secs: Summary::secs(load),
        index_secs: Summary::secs(index),
        analyze_secs: Summary::secs(analyze),
        total_secs: 0.0,
        rows_per_sec: 0.0,
    }
}

/// Builds the missing indexes of viewing_log (which has `rows` rows), the
/// two at once on two connections: CREATE INDEX takes a SHARE lock, so they
/// do not block each other, and the BRIN build (one process) runs beside
/// the primary key's.
async fn build_indexes(pg: &Config, pkey: bool, brin: bool, rows: u64) -> Result<(), Error> {
    let pkey_job = async {
        if pkey {
            let c = connect(pg).await?;
            // The server's parallel workers share the sort. Measured at 100M
            // rows: 36.7 s, against 58.0 s for one process sorting in memory.
            tracing::info!(rows, "building the primary key");
            c.batch_execute(CREATE_PKEY_INDEX)
                .await
                .map_err(Error::db("building the primary key of viewing_log"))?;
            c.batch_execute(ATTACH_PKEY)
                .await
                .map_err(Error::db("attaching the primary key of viewing_log"))?;
        }
        Ok::<(), Error>(())
    };
    let brin_job = async {
        if brin {
            let c = connect(pg).await?;
            c.batch_execute(&create_brin("viewing_log", "viewing_log_started_at_brin"))
                .await
                .map_err(Error::db("building the BRIN index of viewing_log"))?;
        }
        Ok::<(), Error>(())
    };
    let (a, b) = tokio::join!(pkey_job, brin_job);
    a.and(b)
}

/// What an append builds on: where the existing log ends.
struct Existing {
    min_id: i64,
    max_id: i64,
    first_day: NaiveDate,
    newest_day: NaiveDate,
}

/// The extent of the existing log. max(started_at) is looked for only at or
/// after the started_at of the highest id, which the BRIN index makes cheap
/// when the log is appended roughly in time order (and is exact regardless).
async fn existing(client: &Client) -> Result<Option<Existing>, Error> {
    let ctx = "finding the extent of viewing_log";
    let row = client
        .query_one("SELECT min(id), max(id) FROM viewing_log", &[])
        .await
        .map_err(Error::db(ctx))?;
    let (Some(min_id), Some(max_id)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
    else {
        return Ok(None);
    };
    let newest: DateTime<Utc> = client
        .query_one(
            "SELECT max(started_at) FROM viewing_log
             WHERE started_at >= (SELECT started_at FROM viewing_log WHERE id = $1)",
            &[&max_id],
        )
        .await
        .map_err(Error::db(ctx))?
        .get(0);
    let oldest: DateTime<Utc> = client
        .query_one(
            "SELECT min(started_at) FROM viewing_log
             WHERE started_at <= (SELECT started_at FROM viewing_log WHERE id = $1)",
            &[&min_id],
        )
        .await
        .map_err(Error::db(ctx))?
        .get(0);
    Ok(Some(Existing {
        min_id,
        max_id,
        first_day: seoul_date(oldest),
        newest_day: seoul_date(newest),
    }))
}

async fn append(args: &DatagenArgs, pg: &Config, client: Client) -> Result<Summary, Error> {
    let t0 = Instant::now();
    // The lock keeps other writers (another append) out between reading
    // where the log ends and committing the new rows; readers go on.
    client
        .batch_execute("BEGIN; LOCK TABLE viewing_log IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(Error::db("locking viewing_log for the append"))?;
    let existing = existing(&client).await?;
    let (first_day, first_id, default_rows) = match &existing {
        Some(e) => {
            let spanned = ((e.newest_day - e.first_day).num_days() + 1).max(1) as u64;
            let have = (e.max_id - e.min_id + 1).max(0) as u64;
            (
                e.newest_day + chrono::Days::new(1),
                e.max_id + 1,
                have * args.days as u64 / spanned,
            )
        }
        None => (
            args.start,
            1,
            DEFAULT_ROWS * args.days as u64 / DEFAULT_DAYS as u64,
        ),
    };
    let rows = args.rows.unwrap_or(default_rows);
    // A full load interrupted after its COPY leaves indexes missing (or the
    // primary key's index built but not attached): rebuild what is missing.
    let indexes = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint
                            WHERE conrelid = 'viewing_log'::regclass AND contype = 'p'),
                    to_regclass('viewing_log_started_at_brin') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("looking up the indexes of viewing_log"))?;
    let (has_pkey, has_brin): (bool, bool) = (indexes.get(0), indexes.get(1));
    if !has_pkey {
        client
            .batch_execute("DROP INDEX IF EXISTS viewing_log_pkey")
            .await
            .map_err(Error::db("dropping a half-built primary key"))?;
    }

    let mut videos: Vec<VideoMeta> = client
        .query(
            "SELECT video_id, uploader_id, duration_seconds FROM videos ORDER BY video_id",
            &[],
        )
        .await
        .map_err(Error::db("reading videos"))?
        .iter()
        .map(|r| VideoMeta {
            id: r.get::<_, i64>(0) as u64,
            uploader: r.get::<_, i64>(1) as u64,
            duration: r.get::<_, i32>(2) as u32,
        })
        .collect();
    let mut videos_written = 0;
    if videos.is_empty() {
        videos = load_videos(
            &client,
            args,
            seoul_midnight_unix(first_day),
            &format!("{COPY_VIDEOS})"),
        )
        .await?;
        videos_written = videos.len() as u64;
    }
    let n_videos = videos.len() as u64;
    let job = job(args, rows, first_day, videos);
    let sql = format!("COPY viewing_log ({LOG_COLUMN_NAMES}) FROM STDIN (FORMAT binary)");
    let pb = progress(job.plan.total, "append");
    let segment = Segment::whole(&job.plan, first_id);
    let written = load_segment(&job, args.jobs, &client, &sql, segment, pb.clone()).await;
    pb.finish_and_clear();
    let written = written?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db("committing the append"))?;
    let load_secs = t0.elapsed();

    let t1 = Instant::now();
    if !has_pkey || !has_brin {
        let pb = spinner("rebuilding missing indexes of viewing_log");
        let total = match &existing {
            Some(e) => (e.max_id - e.min_id + 1).max(0) as u64 + written.rows,
            None => written.rows,
        };
        build_indexes(pg, !has_pkey, !has_brin, total).await?;
        pb.finish_and_clear();
    }
    let index_secs = t1.elapsed();

    // VACUUM sets hint bits and the visibility map on the new pages only
    // (older ones are all-visible and skipped) and summarizes the new BRIN
    // ranges, which plain inserts leave unsummarized.
    let t2 = Instant::now();
    let pb = spinner("vacuuming and analyzing viewing_log");
    client
        .batch_execute("VACUUM (ANALYZE) viewing_log")
        .await
        .map_err(Error::db("vacuuming viewing_log after the append"))?;
    if videos_written > 0 {
        client
            .batch_execute("ANALYZE videos")
            .await
            .map_err(Error::db("analyzing videos"))?;
    }
    pb.finish_and_clear();
    let analyze_secs = t2.elapsed();
    Ok(summary(
        "append",
        args,
        &job,
        written,
        n_videos,
        videos_written,
        [load_secs, index_secs, analyze_secs],
    ))
}
