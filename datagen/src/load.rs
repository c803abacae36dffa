//! Talking to PostgreSQL: the full load (TRUNCATE + COPY FREEZE with the
//! indexes dropped, then rebuilt side by side) and the append.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::SinkExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_postgres::{Client, Config, NoTls};

use crate::copy;
use crate::model::{self, Plan, Profile, VideoMeta};
use crate::pipeline::{Pipeline, Written};
use crate::{DatagenArgs, Error, Summary, DEFAULT_DAYS, DEFAULT_ROWS};

/// The definitions in migration 0001, rebuilt after a full load.
const CREATE_PKEY_INDEX: &str =
    "CREATE UNIQUE INDEX viewing_log_pkey ON viewing_log USING btree (id)";
const ATTACH_PKEY: &str = "ALTER TABLE viewing_log ADD CONSTRAINT viewing_log_pkey PRIMARY KEY USING INDEX viewing_log_pkey";
const CREATE_BRIN: &str = "CREATE INDEX viewing_log_started_at_brin ON viewing_log USING brin (started_at) WITH (pages_per_range = 32)";

const COPY_LOG: &str = "COPY viewing_log (id, user_id, video_id, started_at, start_position, end_position) FROM STDIN (FORMAT binary";
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
/// reports.
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

/// The catalogue COPY to run on the first connection while the log's
/// first chunks are being generated.
struct VideosCopy<'a> {
    before_unix: i64,
    sql: &'a str,
}

/// How the log is loaded.
struct Target<'a> {
    /// The COPY on the caller's connection (inside its transaction).
    first_sql: &'a str,
    /// The COPY of every further stream, each on its own connection.
    other_sql: &'a str,
    streams: usize,
    first_id: i64,
    label: &'a str,
    videos: Option<VideosCopy<'a>>,
}

/// Runs the pipeline into the target's COPY statements. Returns what the
/// writer produced.
async fn load_log(
    job: &Job,
    args: &DatagenArgs,
    first: &Client,
    pg: &Config,
    target: Target<'_>,
) -> Result<Written, Error> {
    let Target {
        first_sql,
        other_sql,
        streams,
        first_id,
        label,
        videos,
    } = target;
    let pb = progress(job.plan.total, label);
    let mut pipeline = Pipeline::spawn(
        job.profile.clone(),
        job.plan.clone(),
        args.jobs,
        streams,
        first_id,
        job.window_pg_secs,
        pb.clone(),
    );
    let mut rxs = std::mem::take(&mut pipeline.streams).into_iter();
    let rx0 = rxs.next().expect("at least one stream");
    // Further streams copy inside their own transactions, committed below
    // only if every stream and the writer finished: a writer that stops
    // early ends its streams without the trailer, which COPY accepts.
    let mut others = Vec::new();
    for rx in rxs {
        let pg = pg.clone();
        let sql = other_sql.to_string();
        others.push(tokio::spawn(async move {
            let c = connect(&pg).await?;
            c.batch_execute("BEGIN")
                .await
                .map_err(Error::db("starting a COPY stream"))?;
            let n = copy_stream(&c, &sql, rx).await?;
            Ok::<_, Error>((c, n))
        }));
    }
    let copied0 = match videos {
        Some(v) => match load_videos(first, args, v.before_unix, v.sql).await {
            Ok(_) => copy_stream(first, first_sql, rx0).await,
            Err(e) => {
                // Unblocks the writer so that the join below returns.
                drop(rx0);
                Err(e)
            }
        },
        None => copy_stream(first, first_sql, rx0).await,
    };
    let mut copied = Vec::new();
    for h in others {
        copied.push(
            h.await
                .map_err(|e| Error::Internal(format!("COPY task: {e}")))?,
        );
    }
    let written = tokio::task::spawn_blocking(move || pipeline.join())
        .await
        .map_err(|e| Error::Internal(format!("joining the generator: {e}")))?;
    pb.finish_and_clear();
    let mut total = copied0?;
    let mut clients = Vec::new();
    for c in copied {
        let (client, n) = c?;
        total += n;
        clients.push(client);
    }
    let written = written.ok_or_else(|| Error::Internal("the writer thread stopped".into()))?;
    if total != written.rows {
        return Err(Error::Internal(format!(
            "generated {} rows but PostgreSQL copied {total}",
            written.rows
        )));
    }
    for c in clients {
        c.batch_execute("COMMIT")
            .await
            .map_err(Error::db("committing a COPY stream"))?;
    }
    Ok(written)
}

async fn replace(args: &DatagenArgs, pg: &Config, client: Client) -> Result<Summary, Error> {
    let rows = args.rows.unwrap_or(DEFAULT_ROWS);
    let t0 = Instant::now();
    let before_unix = seoul_midnight_unix(args.start);
    let streams = args.copy_streams;
    // One transaction: TRUNCATE gives both tables new files, so with
    // wal_level=minimal the COPYs below skip WAL and FREEZE may be used.
    client
        .batch_execute(
            "BEGIN;
             TRUNCATE viewing_log, videos;
             ALTER TABLE viewing_log DROP CONSTRAINT IF EXISTS viewing_log_pkey;
             DROP INDEX IF EXISTS viewing_log_pkey, viewing_log_started_at_brin;",
        )
        .await
        .map_err(Error::db("emptying videos and viewing_log"))?;
    let videos_sql = format!("{COPY_VIDEOS}, FREEZE)");
    let job = job(args, rows, args.start, catalogue(args, before_unix));
    let (first_sql, videos) = if streams == 1 {
        // Same transaction as the TRUNCATE: no WAL, rows written frozen.
        // The catalogue is copied while the first chunks are generated.
        let videos = VideosCopy {
            before_unix,
            sql: &videos_sql,
        };
        (format!("{COPY_LOG}, FREEZE)"), Some(videos))
    } else {
        // The other streams wait for the TRUNCATE's lock: commit it first.
        load_videos(&client, args, before_unix, &videos_sql).await?;
        client
            .batch_execute("COMMIT; BEGIN")
            .await
            .map_err(Error::db("committing the emptied tables"))?;
        (format!("{COPY_LOG})"), None)
    };
    let other_sql = format!("{COPY_LOG})");
    let target = Target {
        first_sql: &first_sql,
        other_sql: &other_sql,
        streams,
        first_id: 1,
        label: "generate+load",
        videos,
    };
    let written = load_log(&job, args, &client, pg, target).await?;
    let copied = t0.elapsed();
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db("committing the load"))?;
    tracing::info!(
        copy_secs = copied.as_secs_f64(),
        commit_secs = (t0.elapsed() - copied).as_secs_f64(),
        "viewing_log loaded"
    );
    let load_secs = t0.elapsed();

    let t1 = Instant::now();
    let pb = spinner("building the primary key and BRIN index of viewing_log");
    build_indexes(pg, true, true, written.rows).await?;
    pb.finish_and_clear();
    let index_secs = t1.elapsed();

    let t2 = Instant::now();
    let pb = spinner("analyzing videos and viewing_log");
    client
        .batch_execute("ANALYZE videos, viewing_log")
        .await
        .map_err(Error::db("analyzing videos and viewing_log"))?;
    pb.finish_and_clear();
    let analyze_secs = t2.elapsed();

    Ok(summary(
        "replace",
        args,
        &job,
        written,
        args.videos,
        args.videos,
        [load_secs, index_secs, analyze_secs],
    ))
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
        copy_streams: if mode == "append" {
            1
        } else {
            args.copy_streams
        },
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
            c.batch_execute(CREATE_BRIN)
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
    let sql = format!("{COPY_LOG})");
    let target = Target {
        first_sql: &sql,
        other_sql: &sql,
        streams: 1,
        first_id,
        label: "append",
        videos: None,
    };
    let written = load_log(&job, args, &client, pg, target).await?;
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
