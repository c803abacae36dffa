//! The cases' building blocks: the floor's queries, the write floor, the
//! engine's reads alone, and running the `settle` binary.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::BenchArgs;
use crate::db::Database;
use crate::engine::RunSummary;
use crate::error::{DbContext, Error, Result};
use crate::pipeline::partition::{copy_statement, Partition, Scope};
use crate::pipeline::publish::copy_in;
use crate::pipeline::read::{copy_plays, open_reader, PLAY_COLUMNS};
use crate::rules::Day;

/// The tables that hold viewing_log's rows: itself, or its leaf partitions
/// (a full `settle datagen` load partitions it by id range).
pub(super) const LEAVES: &str = "SELECT relid FROM pg_partition_tree('viewing_log') WHERE isleaf \
     UNION ALL SELECT oid FROM pg_class WHERE oid = 'viewing_log'::regclass AND relkind = 'r'";

/// The floor's query for pages `lo..hi` of the leaves laid end to end: a
/// TID range scan of each leaf's share.
pub(super) fn ctid_range_query(leaves: &[(String, i64)], lo: i64, hi: i64) -> String {
    let mut parts = Vec::new();
    let mut base = 0;
    for (rel, pages) in leaves {
        let (a, b) = (lo.max(base) - base, hi.min(base + pages) - base);
        if a < b {
            parts.push(format!(
                "SELECT {PLAY_COLUMNS} FROM {rel} WHERE ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid"
            ));
        }
        base += pages;
    }
    if parts.is_empty() {
        return format!("SELECT {PLAY_COLUMNS} FROM viewing_log WHERE false");
    }
    parts.join(" UNION ALL ")
}

pub(super) fn engine_flags(args: &BenchArgs, workers: usize) -> Vec<String> {
    let mut v = vec!["--workers".to_string(), workers.to_string()];
    if let Some(p) = args.partitions {
        v.push("--partitions".into());
        v.push(p.to_string());
    }
    v
}

pub(super) async fn data_days(c: &Client) -> Result<(Day, Day)> {
    let r = c
        .query_one(
            "SELECT min(period_start), max(period_start) FROM settlement_video WHERE period_kind = 'day'",
            &[],
        )
        .await
        .db("finding the data's days")?;
    let a: Option<chrono::NaiveDate> = r.get(0);
    let b: Option<chrono::NaiveDate> = r.get(1);
    match (a, b) {
        (Some(a), Some(b)) => Ok((Day::from_date(a), Day::from_date(b))),
        _ => Err(Error::Tool(
            "the --all runs settled no day; is viewing_log all invalid?".into(),
        )),
    }
}

/// The floor's statement for the rows of `query`.
pub(super) fn copy_query_to_null(query: &str) -> String {
    format!("COPY ({query}) TO '/dev/null' (FORMAT binary)")
}

/// The floor's statements for whole leaves: each copied as a table (no
/// executor, no predicate), as the engine reads a partition that is one
/// leaf; the leaves dealt largest first to the least loaded connection.
pub(super) fn whole_leaf_batches(leaves: &[(String, i64)], workers: usize) -> Vec<String> {
    let mut batches = vec![(0i64, String::new()); workers.max(1)];
    for (rel, pages) in leaves {
        let b = batches
            .iter_mut()
            .min_by_key(|b| b.0)
            .expect("at least one batch");
        b.0 += pages;
        b.1.push_str(&format!(
            "COPY {rel} ({PLAY_COLUMNS}) TO '/dev/null' (FORMAT binary); "
        ));
    }
    batches
        .into_iter()
        .filter(|b| !b.1.is_empty())
        .map(|b| b.1)
        .collect()
}

/// One floor run: all batches at once, each on its own connection.
pub(super) async fn floor(database: &Database, batches: &[String]) -> Result<f64> {
    let mut clients = Vec::new();
    for _ in batches {
        clients.push(database.connect().await?);
    }
    let t = Instant::now();
    try_join_all(clients.iter().zip(batches).map(|(c, q)| async move {
        c.batch_execute(q)
            .await
            .db("running the floor COPY (needs superuser or pg_write_server_files)")
    }))
    .await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The sums tables a run publishes in bulk (top_videos is a few hundred rows).
pub(super) const WRITTEN_TABLES: [&str; 2] = ["settlement_video", "settlement_creator"];

pub(super) fn scratch(table: &str) -> String {
    format!("bench_write_floor_{table}")
}

/// Empty copies of the written tables, primary keys included, created in a
/// transaction of their own: one created in the writing transaction would
/// skip the WAL (`wal_level = minimal`), which the engine's writes do not.
pub(super) fn scratch_tables_sql() -> String {
    WRITTEN_TABLES
        .iter()
        .map(|t| {
            format!(
                "DROP TABLE IF EXISTS {s}; CREATE TABLE {s} (LIKE {t} INCLUDING ALL);",
                s = scratch(t)
            )
        })
        .collect()
}

pub(super) fn drop_scratch_tables_sql() -> String {
    WRITTEN_TABLES
        .iter()
        .map(|t| format!("DROP TABLE {};", scratch(t)))
        .collect()
}

/// A table's rows as binary COPY chunks, held in memory so that (w) times
/// the server's writing alone.
pub(super) async fn copy_table_out(c: &Client, table: &str) -> Result<Vec<Bytes>> {
    let ctx = format!("reading {table} for the write floor");
    let stream = c
        .copy_out(format!("COPY {table} TO STDOUT (FORMAT binary)").as_str())
        .await
        .db(ctx.clone())?;
    futures_util::pin_mut!(stream);
    let mut chunks = Vec::new();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.db(ctx.clone())?);
        if buf.len() >= 1 << 20 {
            chunks.push(buf.split().freeze());
        }
    }
    chunks.push(buf.freeze());
    Ok(chunks)
}

/// One run of (w): each payload copied into its scratch table through the
/// engine's own `copy_in`, all in one transaction and committed, as the
/// engine publishes. Returns the time and the rows written.
pub(super) async fn write_floor(c: &mut Client, payload: &[Vec<Bytes>]) -> Result<(f64, u64)> {
    let t = Instant::now();
    let tx = c.transaction().await.db("starting the write floor")?;
    let mut rows = 0;
    for (table, chunks) in WRITTEN_TABLES.iter().zip(payload) {
        let sql = format!("COPY {} FROM STDIN (FORMAT binary)", scratch(table));
        rows += copy_in(&tx, &sql, chunks.iter().cloned()).await?;
    }
    tx.commit().await.db("committing the write floor")?;
    Ok((t.elapsed().as_secs_f64(), rows))
}

/// One run of (b'): `parts` streamed and decoded by `workers` threads, each
/// with its own connection and runtime as in `settle run`, and nothing
/// aggregated. Its time is what the engine's reads cost before any of the
/// settlement work; returns it and the rows decoded.
pub(super) fn engine_reads(
    config: &tokio_postgres::Config,
    parts: &[Partition],
    workers: usize,
) -> Result<(f64, u64)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for p in parts {
        tx.send(*p).expect("the queue is open");
    }
    drop(tx);
    let t = Instant::now();
    let rows = std::thread::scope(|s| {
        let readers: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || -> Result<u64> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Error::io("starting a reader runtime", e))?;
                    rt.block_on(async {
                        let c = open_reader(config, None).await?;
                        let (mut rows, mut sum) = (0u64, 0u64);
                        while let Ok(p) = rx.try_recv() {
                            let q = copy_statement(&c, &p, &Scope::default()).await?;
                            rows += copy_plays(
                                &c,
                                &q,
                                // Touches every field, so no decoding is skipped.
                                |r| {
                                    sum = sum.wrapping_add(
                                        (r.id ^ r.user_id ^ r.video_id ^ r.started_at) as u64
                                            ^ (r.start_position ^ r.end_position) as u64,
                                    )
                                },
                                || Ok(()),
                            )
                            .await?;
                        }
                        std::hint::black_box(sum);
                        Ok(rows)
                    })
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .sum::<Result<u64>>()
    })?;
    Ok((t.elapsed().as_secs_f64(), rows))
}

/// Runs the settle binary with `args`, returning wall seconds and its summary.
pub(super) fn run_settle(exe: &Path, url: &str, args: &[String]) -> Result<(f64, RunSummary)> {
    let t = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .map_err(|e| Error::io(format!("running {}", exe.display()), e))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "`settle {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let summary = parse_summary(&out.stdout)?;
    Ok((secs, summary))
}

pub(super) fn parse_summary(stdout: &[u8]) -> Result<RunSummary> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|e| Error::Tool(format!("unreadable run summary: {e}")))?;
    let mut s = RunSummary::default();
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    s.execution_id = num("execution_id") as i64;
    s.rows_read = num("rows_read") as u64;
    s.lookback_rows = num("lookback_rows") as u64;
    s.partitions = num("partitions") as u32;
    s.peak_rss_bytes = num("peak_rss_bytes") as u64;
    s.max_disorder_s = num("max_disorder_s");
    if let Some(e) = v.get("exact_path") {
        s.exact_path.seeds = e.get("seeds").and_then(|x| x.as_u64()).unwrap_or(0);
        s.exact_path.late_rows = e.get("late_rows").and_then(|x| x.as_u64()).unwrap_or(0);
        s.exact_path.reread_rows = e.get("reread_rows").and_then(|x| x.as_u64()).unwrap_or(0);
    }
    if let Some(m) = v.get("publish_method") {
        let method = match m.get("method").and_then(|x| x.as_str()) {
            Some("swap") => "swap",
            _ => "diff",
        };
        s.publish_method = Some(crate::engine::PublishMethod {
            method,
            why: m.get("why").and_then(|x| x.as_str()).unwrap_or("").into(),
        });
    }
    if let Some(w) = v.get("written") {
        let n = |k: &str| w.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        s.written.video_rows = n("video_rows");
        s.written.creator_rows = n("creator_rows");
    }
    if let Some(p) = v.get("phases") {
        let f = |k: &str| p.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        s.phases = crate::engine::Phases {
            plan_s: f("plan_s"),
            read_aggregate_s: f("read_aggregate_s"),
            exact_path_s: f("exact_path_s"),
            settle_s: f("settle_s"),
            write_s: f("write_s"),
            publish_s: f("publish_s"),
            total_s: f("total_s"),
        };
    }
    if let Some(parts) = v.get("partition_timings").and_then(|x| x.as_array()) {
        for p in parts {
            s.partition_timings.push(crate::engine::PartitionTiming {
                no: p.get("no").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
                rows: p.get("rows").and_then(|x| x.as_u64()).unwrap_or(0),
                seconds: p.get("seconds").and_then(|x| x.as_f64()).unwrap_or(0.0),
                attempts: p.get("attempts").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
                reused: p.get("reused").and_then(|x| x.as_bool()).unwrap_or(false),
                host: p.get("host").and_then(|x| x.as_str()).map(str::to_string),
                pid: p.get("pid").and_then(|x| x.as_i64()).map(|p| p as i32),
            });
        }
    }
    Ok(s)
}
