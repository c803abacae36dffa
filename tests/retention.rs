//! `settle retention` end to end with the real binary: a plain log is
//! refused; on a 30-day datagen log, settled, `--keep-days 10` drops the
//! old partitions; the next day, ingested and settled, gives exactly the
//! rows of a copy that kept everything (and of the reference SQL); and runs
//! that would need retired plays (`--all --force`, `--from` a retired day)
//! are refused.

mod common;

use common::cli::{settle_blocking, text};
use std::path::PathBuf;
use std::process::Output;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use settle::testkit::TestDb;
use tokio_postgres::Client;

fn settle(url: &str, args: &[&str]) -> Output {
    settle_blocking(url, args, &[])
}

fn ok(url: &str, args: &[&str]) -> Output {
    let o = settle(url, args);
    assert!(o.status.success(), "settle {args:?}:\n{}", text(&o));
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", text(o)))
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every row of the result tables (and the settled days), as text.
async fn results(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for t in ["settlement_video", "settlement_creator", "top_videos"] {
        let rows = c
            .query(
                &format!("SELECT '{t} ' || r::text FROM {t} r ORDER BY r::text"),
                &[],
            )
            .await
            .unwrap();
        out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    let days = c
        .query("SELECT day::text FROM settled_day ORDER BY day", &[])
        .await
        .unwrap();
    out.extend(
        days.iter()
            .map(|r| format!("settled {}", r.get::<_, String>(0))),
    );
    out
}

const DATAGEN: &[&str] = &[
    "--rows",
    "45000",
    "--days",
    "30",
    "--videos",
    "400",
    "--users",
    "3000",
    "--creators",
    "40",
    "--leaf-rows",
    "1500",
    "--jobs",
    "2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_log_is_refused_with_the_way_to_partition_it() {
    let db = TestDb::new().await.unwrap();
    let o = settle(&db.url, &["retention", "--keep-days", "10", "--yes"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("docs/retention.md"), "{}", text(&o));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_after_retention_equals_a_log_that_kept_everything() {
    let (kept, full) = (TestDb::new().await.unwrap(), TestDb::new().await.unwrap());
    kept.generate(DATAGEN).await;
    full.generate(DATAGEN).await;
    let (ck, cf) = (kept.connect().await.unwrap(), full.connect().await.unwrap());
    for db in [&kept, &full] {
        ok(&db.url, &["run", "--all"]);
    }
    assert_eq!(
        results(&ck).await,
        results(&cf).await,
        "same data, same rows"
    );

    // A dry run (no --yes) retires nothing.
    let before = count(&ck, "SELECT count(*) FROM viewing_log").await;
    let o = settle(&kept.url, &["retention", "--keep-days", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(count(&ck, "SELECT count(*) FROM viewing_log").await, before);

    let o = ok(
        &kept.url,
        &["retention", "--keep-days", "10", "--yes", "--json"],
    );
    let v = json(&o);
    let retired = v["retired"].as_u64().unwrap();
    assert!(retired >= 10, "few partitions retired: {v}");
    let after = count(&ck, "SELECT count(*) FROM viewing_log").await;
    assert!(after < before * 2 / 3, "{after} of {before} rows left");
    // Every kept day still has all its plays.
    let first_kept = v["first_kept_day"].as_str().unwrap().to_string();
    let since = format!(
        "SELECT count(*) FROM viewing_log WHERE started_at >= date '{first_kept}' - interval '9 hours'"
    );
    assert_eq!(count(&ck, &since).await, count(&cf, &since).await);

    // The next day's plays, made by datagen on the full copy, written to a
    // CSV without ids and taken back out of it.
    let max_id = count(&cf, "SELECT max(id) FROM viewing_log").await;
    let mut args: Vec<&str> = DATAGEN.to_vec();
    args[1] = "1500";
    args[3] = "1";
    args.push("--append");
    full.generate(&args).await;
    let sql = format!(
        "COPY (SELECT user_id, video_id, started_at, start_position, end_position FROM viewing_log \
         WHERE id > {max_id} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
    );
    let stream = cf.copy_out(sql.as_str()).await.unwrap();
    let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("retention-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("next-day.csv");
    std::fs::write(&file, chunks.concat()).unwrap();
    cf.batch_execute(&format!("DELETE FROM viewing_log WHERE id > {max_id}"))
        .await
        .unwrap();
    let next: String = ck
        .query_one("SELECT (max(day) + 1)::text FROM settled_day", &[])
        .await
        .unwrap()
        .get(0);
    for db in [&kept, &full] {
        let o = ok(&db.url, &["ingest", file.to_str().unwrap(), "--json"]);
        assert_eq!(
            json(&o)["settled_days"],
            serde_json::json!([]),
            "{}",
            text(&o)
        );
        ok(&db.url, &["run", "--date", &next]);
    }
    assert_eq!(
        count(&ck, "SELECT max(id) FROM viewing_log").await,
        count(&cf, "SELECT max(id) FROM viewing_log").await
    );
    let settled = results(&ck).await;
    assert_eq!(
        settled,
        results(&cf).await,
        "retired log settled differently"
    );
    assert!(
        settled.iter().any(|r| r.contains(&next)),
        "{next} not settled"
    );
    // And the full copy is right by the plain-SQL reference.
    settle::tools::reference::run(&cf).await.unwrap();
    let diff = settle::tools::reference::compare(&cf).await.unwrap();
    assert!(diff.is_empty(), "engine differs from reference:\n{diff}");

    // Runs that would read retired plays are refused; nothing changes.
    let o = settle(&kept.url, &["run", "--all", "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("retired"), "{}", text(&o));
    let (lo, _) = (
        ck.query_one("SELECT min(day)::text FROM settled_day", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        (),
    );
    let o = settle(&kept.url, &["run", "--from", &lo, "--to", &next, "--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("settle only days from"), "{}", text(&o));
    assert_eq!(settled, results(&ck).await, "a refused run changed results");
    // Nor can the retired days be unsettled: they could never be settled again.
    let o = settle(&kept.url, &["unsettle", "--from", &lo, "--yes"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("retired"), "{}", text(&o));
    assert_eq!(
        settled,
        results(&ck).await,
        "a refused unsettle changed results"
    );
    // A full recount would miss the retired plays: refused; --quick still checks.
    let o = settle(&kept.url, &["verify", "--all"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--quick"), "{}", text(&o));
    let o = settle(&kept.url, &["verify", "--all", "--quick"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The next day itself may be settled again.
    ok(&kept.url, &["run", "--date", &next, "--force"]);
    assert_eq!(settled, results(&ck).await);

    drop((ck, cf));
    kept.drop_db().await;
    full.drop_db().await;
}
