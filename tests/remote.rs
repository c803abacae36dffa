//! Beyond one machine, on one machine: a primary and a streaming hot
//! standby made with `pg_basebackup -R`, a `settle run --remote`
//! coordinator and `settle worker --once` processes, all real. Workers are
//! killed with SIGKILL and their reads cancelled on the standby; the
//! published rows must still equal a single-process run and sql/reference/.

mod common;

use std::time::{Duration, Instant};

use common::cli::*;
use common::*;
use settle::testkit::{ReplicaDb, ReplicaPair};
use tokio::process::Child;
use tokio_postgres::Client;

/// The pair is shared by the tests of this file, and one of them pauses
/// replay: they take turns.
static PAIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The result tables and the ledger, one comparable text per table.
async fn results(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    // The ledger without who settled it when: its tail counts must agree.
    for t in [
        "settlement_video t",
        "settlement_creator t",
        "top_videos t",
        "(SELECT day, tail_from, tail_rows FROM settled_day) t",
    ] {
        let sql =
            format!("SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM {t}");
        out.push(c.query_one(&sql, &[]).await.unwrap().get(0));
    }
    out
}

fn worker(rdb: &ReplicaDb, pause_ms: u32) -> Child {
    let pause = pause_ms.to_string();
    settle_cmd(
        &rdb.db.url,
        &[
            "worker",
            "--once",
            "--wait",
            "120",
            "--threads",
            "1",
            "--poll-ms",
            "100",
            "--read-url",
            &rdb.standby_url,
            "--json",
            "--pause-mid-partition-ms",
            &pause,
        ],
    )
    .spawn()
    .expect("settle worker starts")
}

/// `settle run --all --remote --workers 0`: every partition is left to
/// workers, read from `read_url` when given.
fn coordinator(url: &str, partitions: &str, read_url: Option<&str>) -> Child {
    let mut args = vec![
        "run",
        "--all",
        "--remote",
        "--workers",
        "0",
        "--partitions",
        partitions,
        "--json",
    ];
    if let Some(r) = read_url {
        args.extend(["--read-url", r]);
    }
    settle_cmd(url, &args)
        .spawn()
        .expect("the coordinator starts")
}

async fn log_rows(c: &Client) -> i64 {
    c.query_one("SELECT count(*) FROM viewing_log", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until `pid` holds a RUNNING claim; its partition and attempt.
async fn running_claim_of(c: &Client, pid: u32) -> (i32, i32) {
    let t = Instant::now();
    loop {
        if let Some(r) = c
            .query_opt(
                "SELECT partition_no, attempts FROM partition_execution \
                 WHERE status = 'RUNNING' AND claimed_pid = $1",
                &[&(pid as i32)],
            )
            .await
            .unwrap()
        {
            return (r.get(0), r.get(1));
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "pid {pid} never claimed a partition"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The standby backend streaming a partition's COPY, once one is.
async fn copying_backend(standby: &Client) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(r) = standby
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE 'COPY % TO STDOUT %' AND pid <> pg_backend_pid() LIMIT 1",
                &[],
            )
            .await
            .unwrap()
        {
            return r.get(0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no COPY ever ran on the standby"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_two_workers_on_a_standby_survive_a_killed_worker() {
    let _turn = PAIR.lock().await;
    let pair = ReplicaPair::start()
        .await
        .expect("primary and standby start");
    let rdb = pair.database().await.expect("a replicated test database");
    rdb.db
        .generate(&["--rows", "2000000", "--videos", "20000", "--days", "20"])
        .await;
    pair.caught_up().await.unwrap();
    let primary = rdb.db.connect().await.unwrap();

    let coordinator = coordinator(&rdb.db.url, "8", Some(&rdb.standby_url));
    let mut a = worker(&rdb, 1500);
    let b = worker(&rdb, 1500);
    let a_pid = a.id().unwrap();
    let b_pid = b.id().unwrap();

    // Kill A mid-partition: it sleeps after its first 64k rows.
    let (killed, attempt) = running_claim_of(&primary, a_pid).await;
    a.start_kill().unwrap();
    let _ = a.wait().await;

    let run = coordinator.wait_with_output().await.unwrap();
    assert_eq!(code(&run), 0, "the coordinator completes:\n{}", text(&run));
    let summary = stdout_json(&run);
    let b_out = b.wait_with_output().await.unwrap();
    assert_eq!(
        code(&b_out),
        0,
        "worker B ends by itself (--once):\n{}",
        text(&b_out)
    );

    // The killed partition was read again, by B, on a later attempt.
    let r = primary
        .query_one(
            "SELECT status, attempts, claimed_pid FROM partition_execution \
             WHERE execution_id = $1 AND partition_no = $2",
            &[&summary["execution_id"].as_i64().unwrap(), &killed],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "COMPLETED");
    assert!(
        r.get::<_, i32>(1) > attempt,
        "partition {killed} claimed again after the kill"
    );
    assert_eq!(r.get::<_, Option<i32>>(2), Some(b_pid as i32));
    let readers: Vec<i64> = summary["partition_timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(readers.len(), 8);
    assert!(readers
        .iter()
        .all(|&p| p == a_pid as i64 || p == b_pid as i64));
    assert!(summary["read_from"]["server"]
        .as_str()
        .unwrap()
        .starts_with("standby"));
    let total = log_rows(&primary).await;
    assert_eq!(
        summary["rows_read"].as_i64(),
        Some(total),
        "every row read once"
    );

    // The same rows as one process reading the primary, and as the reference.
    let remote = results(&primary).await;
    let single = settle_output(&rdb.db.url, &["run", "--all", "--force", "--json"]).await;
    assert_eq!(code(&single), 0, "{}", text(&single));
    assert_eq!(stdout_json(&single)["remote"], false);
    assert_eq!(
        results(&primary).await,
        remote,
        "remote run equals a single-process run"
    );
    assert_matches_reference(&primary, "remote run on a standby").await;
    rdb.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_standby_reads_without_the_newest_plays_and_the_next_run_picks_them_up() {
    let _turn = PAIR.lock().await;
    let pair = ReplicaPair::start()
        .await
        .expect("primary and standby start");
    let rdb = pair.database().await.expect("a replicated test database");
    rdb.db
        .generate(&["--rows", "200000", "--videos", "2000", "--days", "10"])
        .await;
    pair.caught_up().await.unwrap();
    let primary = rdb.db.connect().await.unwrap();
    let standby = settle::db::connect(&rdb.standby_config).await.unwrap();
    let before = log_rows(&primary).await;

    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let paused = async {
        loop {
            let s: String = standby
                .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
                .await
                .unwrap()
                .get(0);
            if s == "paused" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), paused)
        .await
        .expect("replay pauses");
    // 300 new plays on the primary, copies of existing ones a minute later.
    primary
        .batch_execute(
            "INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position) \
             SELECT m.top + row_number() OVER (ORDER BY v.id), v.user_id, v.video_id, \
                    v.started_at + interval '1 minute', v.start_position, v.end_position \
             FROM (SELECT id, user_id, video_id, started_at, start_position, end_position \
                   FROM viewing_log ORDER BY id LIMIT 300) v, (SELECT max(id) AS top FROM viewing_log) m",
        )
        .await
        .unwrap();

    let run = settle_output(
        &rdb.db.url,
        &["run", "--all", "--read-url", &rdb.standby_url, "--json"],
    )
    .await;
    let resumed = standby.batch_execute("SELECT pg_wal_replay_resume()").await;
    assert_eq!(code(&run), 0, "{}", text(&run));
    resumed.unwrap();
    let s = stdout_json(&run);
    assert_eq!(
        s["rows_read"].as_i64(),
        Some(before),
        "the lagging standby's rows only"
    );
    assert!(s["read_from"]["replay_lsn"].is_string(), "{s}");
    let lsn: Option<String> = primary
        .query_one(
            "SELECT read_lsn::text FROM job_execution WHERE execution_id = $1",
            &[&s["execution_id"].as_i64().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lsn.as_deref(), s["read_from"]["replay_lsn"].as_str());

    pair.caught_up().await.unwrap();
    let again = settle_output(
        &rdb.db.url,
        &["run", "--all", "--read-url", &rdb.standby_url, "--json"],
    )
    .await;
    assert_eq!(code(&again), 0, "{}", text(&again));
    let s2 = stdout_json(&again);
    assert_ne!(
        s2["status"], "ALREADY_COMPLETED",
        "the rows added since make it run: {s2}"
    );
    assert_eq!(s2["rows_read"].as_i64(), Some(before + 300));
    assert_matches_reference(&primary, "the run after the standby caught up").await;
    rdb.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_on_the_standby_is_retried_and_counted_once() {
    let _turn = PAIR.lock().await;
    let pair = ReplicaPair::start()
        .await
        .expect("primary and standby start");
    let rdb = pair.database().await.expect("a replicated test database");
    rdb.db
        .generate(&["--rows", "400000", "--videos", "3000", "--days", "10"])
        .await;
    pair.caught_up().await.unwrap();
    let primary = rdb.db.connect().await.unwrap();
    let standby = settle::db::connect(&rdb.standby_config).await.unwrap();

    let coordinator = coordinator(&rdb.db.url, "2", Some(&rdb.standby_url));
    // Each partition's COPY pauses after 64k of its 200k rows, with far
    // more left than the socket buffers: the statement is still running.
    let w = worker(&rdb, 1000);
    running_claim_of(&primary, w.id().unwrap()).await;
    let backend = copying_backend(&standby).await;
    let cancelled: bool = standby
        .query_one("SELECT pg_cancel_backend($1)", &[&backend])
        .await
        .unwrap()
        .get(0);
    assert!(cancelled);

    let run = coordinator.wait_with_output().await.unwrap();
    assert_eq!(code(&run), 0, "{}", text(&run));
    let s = stdout_json(&run);
    let w_out = w.wait_with_output().await.unwrap();
    let events = String::from_utf8_lossy(&w_out.stdout).to_string();
    assert!(
        events.contains("\"gave_back\""),
        "the worker gave the cancelled read back:\n{events}"
    );
    let attempts: Vec<i32> = primary
        .query(
            "SELECT attempts FROM partition_execution WHERE execution_id = $1 \
             AND status = 'COMPLETED' ORDER BY attempts",
            &[&s["execution_id"].as_i64().unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        attempts,
        [1, 2],
        "the cancelled partition read twice, kept once"
    );
    let total = log_rows(&primary).await;
    assert_eq!(
        s["rows_read"].as_i64(),
        Some(total),
        "the retried partition counted once"
    );
    assert_matches_reference(&primary, "a run with a cancelled standby read").await;
    rdb.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_by_sigterm_gives_its_partition_back_and_another_finishes_it() {
    // On the primary alone: no standby needed, so no turn on the pair.
    let db = settle::testkit::TestDb::new().await.unwrap();
    db.generate(&["--rows", "200000", "--videos", "2000", "--days", "10"])
        .await;
    let c = db.connect().await.unwrap();
    let coordinator = coordinator(&db.url, "2", None);
    let spawn_worker = |pause: &str| {
        settle_cmd(
            &db.url,
            &[
                "worker",
                "--once",
                "--threads",
                "1",
                "--poll-ms",
                "100",
                "--json",
                "--pause-mid-partition-ms",
                pause,
            ],
        )
        .spawn()
        .unwrap()
    };
    let x = spawn_worker("5000");
    let x_pid = x.id().unwrap();
    let (no, _) = running_claim_of(&c, x_pid).await;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(x_pid as i32, libc::SIGTERM) };
    let x_out = x.wait_with_output().await.unwrap();
    assert_eq!(
        code(&x_out),
        0,
        "a stopped worker exits cleanly:\n{}",
        text(&x_out)
    );
    assert!(
        String::from_utf8_lossy(&x_out.stdout).contains("\"gave_back\""),
        "{}",
        text(&x_out)
    );
    let r = c
        .query_one(
            "SELECT status, attempts, claimed_pid FROM partition_execution WHERE partition_no = $1",
            &[&no],
        )
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, String>(0),
        "PENDING",
        "given back, not left RUNNING"
    );
    assert_eq!(r.get::<_, i32>(1), 0, "a clean stop uses up no attempt");
    assert_eq!(r.get::<_, Option<i32>>(2), None);

    let y = spawn_worker("0");
    let y_pid = y.id().unwrap() as i64;
    let run = coordinator.wait_with_output().await.unwrap();
    assert_eq!(code(&run), 0, "{}", text(&run));
    let y_out = y.wait_with_output().await.unwrap();
    assert_eq!(code(&y_out), 0, "{}", text(&y_out));
    let s = stdout_json(&run);
    let pids: Vec<Option<i64>> = s["partition_timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64())
        .collect();
    assert_eq!(
        pids,
        [Some(y_pid), Some(y_pid)],
        "the stopped worker kept no result"
    );
    assert_matches_reference(&c, "a run whose worker was stopped").await;
    db.drop_db().await;
}
