//! `settle ingest` end to end with the real binary on a real PostgreSQL:
//! rejects with their lines and --max-rejects, the same file twice, a
//! kill -9 mid-file, CSV / TSV / NDJSON / Parquet giving the same rows,
//! zone-less timestamps, and ids landing in partitions.

mod common;

use common::cli::{settle_blocking, text, SETTLE};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde_json::Value;
use settle::testkit::TestDb;
use tokio_postgres::Client;

fn settle(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    settle_blocking(url, args, env)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", text(o)))
}

/// A scratch directory under target/ for this test.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("ingest-test")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic plays: (user, video, started_at µs since 1970, start, end).
fn plays(n: usize) -> Vec<(i64, i64, i64, i32, i32)> {
    let t0 = 1_719_792_000_000_000i64; // 2024-07-01 00:00 UTC
    (0..n)
        .map(|i| {
            let i = i as i64;
            (
                1 + i * 7 % 97,
                1 + i * 13 % 41,
                t0 + i * 1_234_567 + (i % 3) * 250_000,
                (i % 50) as i32,
                (i % 50 + i % 700) as i32,
            )
        })
        .collect()
}

/// `2024-07-01 09:00:00.25+09` style, in the zone given by `offset_h`.
fn ts(us: i64, offset_h: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us + offset_h * 3_600_000_000)
        .unwrap()
        .naive_utc();
    let zone = if offset_h >= 0 {
        format!("+{offset_h:02}")
    } else {
        format!("-{:02}", -offset_h)
    };
    format!("{}{zone}", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

fn write_csv(path: &Path, rows: &[(i64, i64, i64, i32, i32)], sep: char) {
    let mut f = std::fs::File::create(path).unwrap();
    let h = [
        "video_id",
        "user_id",
        "started_at",
        "start_position",
        "end_position",
    ];
    writeln!(f, "{}", h.join(&sep.to_string())).unwrap();
    for (k, r) in rows.iter().enumerate() {
        let zone = [0, 9, -5][k % 3];
        writeln!(
            f,
            "{}{sep}{}{sep}{}{sep}{}{sep}{}",
            r.1,
            r.0,
            ts(r.2, zone),
            r.3,
            r.4
        )
        .unwrap();
    }
}

fn write_ndjson(path: &Path, rows: &[(i64, i64, i64, i32, i32)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (k, r) in rows.iter().enumerate() {
        let t = chrono::DateTime::from_timestamp_micros(r.2).unwrap();
        let v = serde_json::json!({
            "user_id": r.0, "video_id": r.1,
            "started_at": if k % 2 == 0 { t.to_rfc3339() } else { ts(r.2, 9) },
            "start_position": r.3, "end_position": r.4, "extra": [1, 2]
        });
        writeln!(f, "{v}").unwrap();
    }
}

fn write_parquet(path: &Path, rows: &[(i64, i64, i64, i32, i32)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("video_id", DataType::Int64, false),
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("start_position", DataType::Int32, false),
        Field::new("end_position", DataType::Int32, false),
    ]));
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
    for chunk in rows.chunks(1000) {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int32Array::from_iter_values(chunk.iter().map(|r| r.3))),
                Arc::new(Int32Array::from_iter_values(chunk.iter().map(|r| r.4))),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
    }
    w.close().unwrap();
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// The log's rows in id order, as text.
async fn log_rows(c: &Client) -> Vec<String> {
    c.query(
        "SELECT format('%s %s %s %s %s %s', id, user_id, video_id, \
         to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), start_position, end_position) \
         FROM viewing_log ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bad_lines_reject_the_file_or_are_skipped_and_a_second_load_is_refused() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    let dir = scratch("rejects");
    let f = dir.join("plays.csv");
    write_csv(&f, &plays(30), ',');
    // Spoil lines 5, 12 and 20 (line 1 is the header): a bad number, a bad
    // timestamp, a missing column.
    let mut lines: Vec<String> = std::fs::read_to_string(&f)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[4] = lines[4].replacen(',', ",x", 1);
    let fields: Vec<&str> = lines[11].split(',').collect();
    lines[11] = format!(
        "{},{},2024-13-01 00:00:00+00,{},{}",
        fields[0], fields[1], fields[3], fields[4]
    );
    let fields: Vec<String> = lines[19].split(',').map(str::to_string).collect();
    lines[19] = fields[..4].join(",");
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    let path = f.to_str().unwrap();

    let o = settle(
        &db.url,
        &["ingest", path, "--max-rejects", "0", "--json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json(&o);
    let file = &v["files"][0];
    assert_eq!(file["outcome"], "too_many_rejects", "{v}");
    let bad: Vec<(u64, String)> = file["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["column"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        bad,
        vec![
            (5, "user_id".to_string()),
            (12, "started_at".to_string()),
            (20, "end_position".to_string())
        ]
    );
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM ingest_reject").await, 3);
    // The text report names the lines too.
    let o = settle(&db.url, &["ingest", path], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("line 12, column started_at"),
        "{}",
        text(&o)
    );

    let o = settle(
        &db.url,
        &["ingest", path, "--max-rejects", "5", "--json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["files"][0]["rows_loaded"], 27);
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 27);
    // Ids from the sequence, in file order: 1..=27 on an empty log.
    assert_eq!(count(&c, "SELECT max(id) FROM viewing_log").await, 27);

    let o = settle(&db.url, &["ingest", path, "--max-rejects", "5"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("was loaded at"), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 27);

    let o = settle(
        &db.url,
        &["ingest", path, "--max-rejects", "5", "--force"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 54);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT id) FROM viewing_log").await,
        54
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_tsv_ndjson_and_parquet_load_the_same_rows() {
    let rows = plays(5000);
    let dir = scratch("formats");
    let files = [
        ("plays.csv", dir.join("plays.csv")),
        ("plays.tsv", dir.join("plays.tsv")),
        ("plays.ndjson", dir.join("plays.ndjson")),
        ("plays.parquet", dir.join("plays.parquet")),
    ];
    write_csv(&files[0].1, &rows, ',');
    write_csv(&files[1].1, &rows, '\t');
    write_ndjson(&files[2].1, &rows);
    write_parquet(&files[3].1, &rows);
    let mut seen: Vec<Vec<String>> = Vec::new();
    for (name, f) in &files {
        let db = TestDb::new().await.unwrap();
        let c = db.connect().await.unwrap();
        let o = settle(&db.url, &["ingest", f.to_str().unwrap(), "--json"], &[]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let got = log_rows(&c).await;
        assert_eq!(got.len(), rows.len(), "{name}");
        seen.push(got);
        drop(c);
        db.drop_db().await;
    }
    // The expected rows, from the generator, not from a load.
    let want: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let t = chrono::DateTime::from_timestamp_micros(r.2).unwrap();
            format!(
                "{} {} {} {} {} {}",
                k + 1,
                r.0,
                r.1,
                t.format("%Y-%m-%d %H:%M:%S%.6f"),
                r.3,
                r.4
            )
        })
        .collect();
    for (k, got) in seen.iter().enumerate() {
        assert_eq!(got, &want, "{} differs", files[k].0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_without_a_zone_need_timezone() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    let dir = scratch("zones");
    let f = dir.join("local.csv");
    std::fs::write(
        &f,
        "user_id,video_id,started_at,start_position,end_position\n\
         1,2,2024-07-01 09:00:00,0,10\n",
    )
    .unwrap();
    let path = f.to_str().unwrap();
    let o = settle(&db.url, &["ingest", path], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--timezone"), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 0);
    let o = settle(&db.url, &["ingest", path, "--timezone", "Asia/Seoul"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM viewing_log WHERE started_at = timestamptz '2024-07-01 00:00:00+00'"
        )
        .await,
        1
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_file_leaves_nothing_and_the_rerun_loads_each_row_once() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    let dir = scratch("kill");
    let f = dir.join("plays.csv");
    let rows = plays(40_000);
    write_csv(&f, &rows, ',');
    let path = f.to_str().unwrap().to_string();
    let mut child = std::process::Command::new(SETTLE)
        .args(["ingest", &path])
        .env("DATABASE_URL", &db.url)
        .env("SETTLE_INGEST_PAUSE_AT_ROW", "25000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the server has taken rows of the file into the COPY.
    let mut copied = 0i64;
    for _ in 0..9_000 {
        copied = c
            .query_one(
                "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copied >= 25_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(copied >= 25_000, "the COPY never got going ({copied} rows)");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The server ends the orphaned COPY; nothing of it stays.
    for _ in 0..9_000 {
        let busy = count(
            &c,
            "SELECT count(*) FROM pg_stat_progress_copy WHERE datname = current_database()",
        )
        .await;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM ingest_file").await, 0);

    let o = settle(&db.url, &["ingest", &path, "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 40_000);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM (SELECT DISTINCT user_id, video_id, started_at FROM viewing_log) d"
        )
        .await,
        40_000
    );
    let o = settle(&db.url, &["ingest", &path], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 40_000);
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_land_in_partitions_made_for_them_and_files_load_in_parallel() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    // A partitioned log whose only partition ends at id 100.
    c.batch_execute(
        "DROP TABLE viewing_log; \
         CREATE TABLE viewing_log (id bigint NOT NULL, user_id bigint NOT NULL, video_id bigint NOT NULL, \
           started_at timestamptz NOT NULL, start_position integer NOT NULL, end_position integer NOT NULL, \
           PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE viewing_log_p0 PARTITION OF viewing_log FOR VALUES FROM (MINVALUE) TO (100);",
    )
    .await
    .unwrap();
    let dir = scratch("parts");
    let (a, b) = (dir.join("a.csv"), dir.join("b.ndjson"));
    let rows = plays(300);
    write_csv(&a, &rows[..150], ',');
    write_ndjson(&b, &rows[150..]);
    let o = settle(
        &db.url,
        &["ingest", a.to_str().unwrap(), b.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, 300);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT id) FROM viewing_log").await,
        300
    );
    assert_eq!(count(&c, "SELECT max(id) FROM viewing_log").await, 300);
    let parts = count(
        &c,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'viewing_log'::regclass",
    )
    .await;
    assert!(parts >= 2, "no partition was added ({parts})");
    drop(c);
    db.drop_db().await;
}
