//! Guard rails: absurd dates, empty nights, wrong databases and refusals
//! never look like success. Each case runs the real binary against a real
//! server and checks its exit code, its words and what it left behind.

mod common;

use std::process::{Output, Stdio};

use common::*;
use serde_json::Value;
use settle::testkit::TestDb;
use tokio::process::Command;
use tokio_postgres::Client;

const SETTLE: &str = env!("CARGO_BIN_EXE_settle");

async fn settle(url: &str, args: &[&str]) -> Output {
    Command::new(SETTLE)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("the settle binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn executions(c: &Client) -> i64 {
    count(c, "SELECT count(*) FROM job_execution").await
}

/// A database of the test cluster with nothing in it.
async fn empty_database(db: &TestDb) -> (String, String) {
    let name = format!("{}_empty", db.name);
    let c = db.connect().await.unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    (name.clone(), db.url.replace(&db.name, &name))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_the_schema_is_refused_and_left_untouched() {
    let db = TestDb::new().await.unwrap();
    let (name, url) = empty_database(&db).await;
    for args in [
        &["history"][..],
        &["run", "--all"],
        &["status", "1"],
        &["datagen", "--rows", "1000"],
    ] {
        let o = settle(&url, args).await;
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains("has no settle schema"), "{}", text(&o));
        assert!(stderr(&o).contains("settle migrate"), "{}", text(&o));
    }
    let mut cfg = db.config().clone();
    cfg.dbname(&name);
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let tables = count(
        &c,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    )
    .await;
    assert_eq!(tables, 0, "no table was created");
    // With --json, the failure is a JSON object on stdout.
    let o = settle(&url, &["history", "--json"]).await;
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["status"], "ERROR");
    assert_eq!(v["exit_code"], 2);
    assert!(v["hint"].as_str().unwrap().contains("settle migrate"));
    drop(c);
    let admin = db.connect().await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {name}"))
        .await
        .unwrap();
    // Then migrate makes it usable.
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_ranges_and_refusals_leave_no_execution() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.71, 2000, Order::Logged).await;
    let (lo, hi) = data_days(&c).await;
    let cases: Vec<Vec<String>> = vec![
        vec!["--date".into(), "0001-01-01".into()],
        vec![
            "--from".into(),
            lo.to_string(),
            "--to".into(),
            "2099-12-31".into(),
        ],
        vec!["--date".into(), "9999-12-31".into()],
        vec![
            "--from".into(),
            hi.to_string(),
            "--to".into(),
            lo.to_string(),
        ],
    ];
    for extra in &cases {
        let mut args = vec!["run"];
        args.extend(extra.iter().map(String::as_str));
        let o = settle(&db.url, &args).await;
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        assert!(
            !stderr(&o).contains("9999"),
            "no absurd advice: {}",
            text(&o)
        );
        assert!(!stderr(&o).contains("2099-12-31 --") && !stderr(&o).contains("--to 2099"));
    }
    let o = settle(&db.url, &["run", "--date", "0001-01-01"]).await;
    assert!(
        stderr(&o).contains(&format!("holds plays of {lo} .. {hi}")),
        "{}",
        text(&o)
    );
    // A gap in the settled history: refused, recorded as a refusal only.
    let o = settle(&db.url, &["run", "--date", &lo.to_string()]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let third = settle::rules::Day(lo.0 + 2).to_string();
    let o = settle(&db.url, &["run", "--date", &third]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(executions(&c).await, 1, "refusals are not executions");
    let refusals = count(&c, "SELECT count(*) FROM run_refusal").await;
    assert_eq!(
        refusals, 4,
        "the backwards range is refused before anything is recorded"
    );
    let o = settle(&db.url, &["history", "--all"]).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("gap"),
        "{}",
        text(&o)
    );
    // The next run of that range is attempt 1, not a restart.
    let second = settle::rules::Day(lo.0 + 1).to_string();
    let o = settle(
        &db.url,
        &["run", "--from", &second, "--to", &third, "--json"],
    )
    .await;
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["status"], "COMPLETED");
    assert_eq!(v["attempt"], 1);
    assert!(v["restarted_from"].is_null());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_night_exits_3_and_settles_nothing_unless_allowed() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.72, 2000, Order::Logged).await;
    let (lo, hi) = data_days(&c).await;
    let o = settle(
        &db.url,
        &["run", "--from", &lo.to_string(), "--to", &hi.to_string()],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let next = hi.next().to_string();
    let o = settle(&db.url, &["run", "--date", &next, "--json"]).await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
    let settled = count(&c, "SELECT count(*) FROM settled_day").await;
    assert_eq!(
        settled,
        (hi.0 - lo.0 + 1) as i64,
        "the empty day is not marked settled"
    );
    let o = settle(&db.url, &["run", "--date", &next, "--allow-empty"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        count(&c, "SELECT count(*) FROM settled_day").await,
        settled + 1
    );
    // An empty log is an environment error.
    c.batch_execute("DELETE FROM viewing_log").await.unwrap();
    let o = settle(&db.url, &["run", "--all", "--force"]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("viewing_log is empty"), "{}", text(&o));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn datagen_refuses_to_replace_a_settled_or_foreign_log_without_yes() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.73, 500, Order::Logged).await;
    let before = count(&c, "SELECT count(*) FROM viewing_log").await;
    let flags = [
        "datagen", "--rows", "20000", "--days", "3", "--videos", "200",
    ];
    let o = settle(&db.url, &flags).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("settle did not generate") && stderr(&o).contains("--yes"));
    assert_eq!(count(&c, "SELECT count(*) FROM viewing_log").await, before);
    let o = settle(&db.url, &[&flags[..], &["--yes"]].concat()).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Its own load, unsettled: replaced without asking.
    let o = settle(&db.url, &flags).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = settle(&db.url, &["run", "--all"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = settle(&db.url, &flags).await;
    assert_eq!(code(&o), 2, "settled days are guarded: {}", text(&o));
    assert!(stderr(&o).contains("settled day"));
    // The change triggers came back with the recreated table.
    let triggers = count(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'viewing_log'::regclass AND tgname LIKE 'settle_%'",
    )
    .await;
    assert_eq!(triggers, 4);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_quietly() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.74, 500, Order::Logged).await;
    let o = settle(&db.url, &["run", "--all"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Enough history that its JSON overflows the pipe's buffer.
    c.batch_execute(
        "INSERT INTO job_execution (instance_id, attempt, status, host, pid, error) \
         SELECT instance_id, g, 'FAILED', host, pid, repeat('x', 200) \
         FROM job_execution, generate_series(2, 3000) g",
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let mut child = std::process::Command::new(SETTLE)
            .args(["history", "--json", "--limit", "3000"])
            .env("DATABASE_URL", &db.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close the pipe, as `head -c 1` does.
        let mut out = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        std::io::Read::read_exact(&mut out, &mut one).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        assert_ne!(o.status.code(), Some(101), "{}", text(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", text(&o));
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_without_days_says_which_days_to_give() {
    let db = TestDb::new().await.unwrap();
    let o = settle(&db.url, &["run"]).await;
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("say which days: --date D, --from D --to D, or --all"));
    assert!(!stderr(&o).contains("--pg-dir"), "{}", text(&o));
    let o = Command::new(SETTLE).arg("--help").output().await.unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 nothing to settle"));
    db.drop_db().await;
}
