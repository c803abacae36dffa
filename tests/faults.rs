//! Fault tests of the job repository (issue 5), on a real PostgreSQL with the
//! real `settle` binary as a subprocess: a run killed with SIGKILL, the server
//! restarted under a run, two concurrent runs, `settle stop`, too many
//! rejects, reruns of a completed instance, a worker's connection killed,
//! the log changing under a run, and readers during a publish.
//!
//! Runs are made slow enough to interrupt with the hidden flag
//! `--pause-after-partition-ms` and many small partitions; the tests wait for
//! states in the job repository (bounded polling), never for wall-clock time.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cli::*;
use common::*;
use serde_json::Value;
use settle::rules::Day;
use settle::testkit::TestDb;
use tokio::process::Child;
use tokio_postgres::Client;

/// How often and how long the tests poll for a state (a generous cap: the
/// awaited states come within a few seconds).
const POLL: Duration = Duration::from_millis(20);
const POLL_CAP: u32 = 9_000; // 3 minutes

/// Runs `settle ARGS` and asserts it succeeded.
async fn settle_ok(url: &str, args: &[&str]) -> Output {
    let o = settle_output(url, args).await;
    assert!(o.status.success(), "settle {args:?} failed:\n{}", text(&o));
    o
}

/// A slow run in the background: `partitions` partitions read by one worker
/// that pauses `pause_ms` after each.
fn spawn_slow_run(
    url: &str,
    range: &[&str],
    partitions: u32,
    pause_ms: u64,
    extra: &[&str],
) -> Child {
    let partitions = partitions.to_string();
    let pause = pause_ms.to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(range);
    args.extend_from_slice(&[
        "--partitions",
        &partitions,
        "--workers",
        "1",
        // One stream, so "the worker's connection" is one connection.
        "--streams",
        "1",
        "--pause-after-partition-ms",
        &pause,
        "--json",
    ]);
    args.extend_from_slice(extra);
    settle_cmd(url, &args)
        .spawn()
        .expect("the settle binary starts")
}

/// Polls `cond` until it gives a value, failing if `child` exits first.
async fn wait_until<T, F, Fut>(child: &mut Child, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..POLL_CAP {
        if let Some(v) = cond().await {
            return v;
        }
        if let Some(status) = child.try_wait().expect("child status") {
            let mut out = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut out).await;
            }
            panic!("settle exited ({status}) before {what}; stderr:\n{out}");
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("gave up waiting for {what}");
}

/// The newest execution, if any.
async fn latest_execution(c: &Client) -> Option<(i64, String)> {
    c.query_opt(
        "SELECT execution_id, status FROM job_execution ORDER BY execution_id DESC LIMIT 1",
        &[],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

async fn status_of(c: &Client, exec: i64) -> String {
    c.query_one(
        "SELECT status FROM job_execution WHERE execution_id = $1",
        &[&exec],
    )
    .await
    .unwrap()
    .get(0)
}

/// Partition numbers of `exec` with `status`.
async fn partitions_with(c: &Client, exec: i64, status: &str) -> Vec<i32> {
    c.query(
        "SELECT partition_no FROM partition_execution WHERE execution_id = $1 AND status = $2 ORDER BY 1",
        &[&exec, &status],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Waits for a RUNNING execution with at least `n` COMPLETED partitions.
async fn wait_for_completed_partitions(child: &mut Child, c: &Client, n: usize) -> i64 {
    wait_until(child, &format!("{n} completed partitions"), || async {
        match latest_execution(c).await {
            Some((id, s)) if s == "RUNNING" => {
                (partitions_with(c, id, "COMPLETED").await.len() >= n).then_some(id)
            }
            _ => None,
        }
    })
    .await
}

/// `settle history --json` as (execution id, status) pairs, newest first.
async fn history(url: &str) -> Vec<(i64, String)> {
    let o = settle_ok(url, &["history", "--json"]).await;
    stdout_json(&o)
        .as_array()
        .expect("history is a JSON array")
        .iter()
        .map(|e| {
            (
                e["execution_id"].as_i64().expect("execution_id"),
                e["status"].as_str().expect("status").to_string(),
            )
        })
        .collect()
}

/// Valid plays (and `bad` rows for an unknown video) appended to the log, so
/// that a run that published would change the results.
async fn append_plays(c: &Client, plays: i64, bad: i64) {
    c.batch_execute(&format!(
        "INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position)
         SELECT m.hi + g, 100000 + g, 1 + g % 40, timestamptz '2024-07-27 03:00:00+00' + g * interval '1 minute', 0, 100
         FROM generate_series(1, {plays}) g, (SELECT max(id) AS hi FROM viewing_log) m;
         INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position)
         SELECT m.hi + g, 200000 + g, 777777, timestamptz '2024-07-28 03:00:00+00' + g * interval '1 minute', 0, 10
         FROM generate_series(1, {bad}) g, (SELECT max(id) AS hi FROM viewing_log) m;
         ANALYZE viewing_log;"
    ))
    .await
    .unwrap();
}

/// One play of video 1 by `user`, from position 0 to `end`, with the next
/// id; `started_at` is an SQL expression. Returns its id.
async fn append_play(c: &Client, user: i64, started_at: &str, end: i32) -> i64 {
    c.query_one(
        &format!(
            "INSERT INTO viewing_log (id, user_id, video_id, started_at, start_position, end_position)
             SELECT max(id) + 1, $1, 1, {started_at}, 0, $2 FROM viewing_log RETURNING id"
        ),
        &[&user, &end],
    )
    .await
    .unwrap()
    .get(0)
}

async fn log_rows(c: &Client) -> i64 {
    c.query_one("SELECT count(*) FROM viewing_log", &[])
        .await
        .unwrap()
        .get(0)
}

fn day_arg(d: Day) -> String {
    d.to_string()
}

/// `settle run --from first --to last`, which must succeed.
async fn settle_days(url: &str, first: Day, last: Day) -> Output {
    settle_ok(
        url,
        &["run", "--from", &day_arg(first), "--to", &day_arg(last)],
    )
    .await
}

/// 1. SIGKILL mid-read, then a rerun: the killed execution becomes ABANDONED,
/// the rerun keeps the killed run's completed partitions and reads only the
/// others, and the results equal the reference's (no double counting).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_read_then_rerun_reuses_finished_partitions_and_matches_reference() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.51, 12000, Order::Logged).await;
    let rows = log_rows(&c).await;
    assert!(rows > 10_000, "{rows} rows");

    let mut child = spawn_slow_run(&db.url, &["--all"], 16, 400, &[]);
    let killed = wait_for_completed_partitions(&mut child, &c, 3).await;
    child.kill().await.expect("SIGKILL");
    let status = child.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    let done = partitions_with(&c, killed, "COMPLETED").await;
    assert!(
        done.len() >= 3 && done.len() < 16,
        "killed mid-read: {done:?}"
    );
    // Nothing was published. The repository still says RUNNING, but the
    // server released the dead session's lock, so `settle history` and
    // `settle status` already show the execution ABANDONED.
    assert!(settled_days(&c).await.is_empty());
    assert_eq!(results_digest(&c).await, "0/0/0:---");
    assert_eq!(status_of(&c, killed).await, "RUNNING");
    let mut shown = Vec::new();
    for _ in 0..POLL_CAP {
        shown = history(&db.url).await;
        if shown != [(killed, "RUNNING".to_string())] {
            break;
        }
        tokio::time::sleep(POLL).await; // the server is ending the dead session
    }
    assert_eq!(shown, [(killed, "ABANDONED".to_string())]);
    let o = settle_ok(&db.url, &["status", &killed.to_string(), "--json"]).await;
    let st = stdout_json(&o);
    assert_eq!(st["execution"]["status"], "ABANDONED");
    assert!(st["execution"]["error"].as_str().unwrap().contains("died"));
    assert_eq!(status_of(&c, killed).await, "RUNNING");
    assert_eq!(
        kept_results(&c, killed).await,
        done.len() as i64,
        "the killed run kept the results of its completed partitions"
    );

    // The rerun (same parameters) notices the dead run and continues it.
    let o = settle_ok(&db.url, &["run", "--all", "--workers", "1", "--json"]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("[{killed}] ABANDONED")),
        "the rerun says it abandoned {killed}:\n{}",
        text(&o)
    );
    assert_eq!(
        stderr.matches("ABANDONED").count(),
        1,
        "said once:\n{}",
        text(&o)
    );
    let s = stdout_json(&o);
    let rerun = s["execution_id"].as_i64().unwrap();
    // An --all run's days show in its status once it has read them.
    let shown = settle_ok(&db.url, &["status", &rerun.to_string()]).await;
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    let days = format!(
        "days {} .. {}",
        s["first_day"].as_str().unwrap(),
        s["last_day"].as_str().unwrap()
    );
    assert!(shown.contains(&days), "{days} in:\n{shown}");
    assert_eq!(s["restarted_from"].as_i64(), Some(killed));
    assert_eq!(s["partitions"].as_u64(), Some(16));
    assert_eq!(s["partitions_reused"].as_u64(), Some(done.len() as u64));
    assert_eq!(s["partitions_read"].as_u64(), Some(16 - done.len() as u64));
    assert!(s["partitions_reused"].as_u64().unwrap() > 0);
    assert!(s["partitions_read"].as_u64().unwrap() < 16);
    assert_eq!(
        s["rows_read"].as_i64(),
        Some(rows),
        "every row exactly once"
    );

    assert_eq!(status_of(&c, killed).await, "ABANDONED");
    assert!(partitions_with(&c, killed, "RUNNING").await.is_empty());
    assert_eq!(status_of(&c, rerun).await, "COMPLETED");
    // Exactly the killed run's completed partitions were kept; the rest
    // were read again, once each.
    let kept: Vec<i32> = c
        .query(
            "SELECT partition_no FROM partition_execution WHERE execution_id = $1 AND reused_from = $2 ORDER BY 1",
            &[&rerun, &killed],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, done);
    let reread: Vec<(i32, i32)> = c
        .query(
            "SELECT partition_no, attempts FROM partition_execution WHERE execution_id = $1 AND reused_from IS NULL ORDER BY 1",
            &[&rerun],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(reread.len(), 16 - done.len());
    assert!(reread.iter().all(|(no, a)| !done.contains(no) && *a == 1));
    assert_eq!(partitions_with(&c, rerun, "COMPLETED").await.len(), 16);
    // Published, the instance needs no kept results any more: neither its
    // own nor the killed run's stay in the repository.
    assert_eq!(kept_results(&c, rerun).await, 0);
    assert_eq!(kept_results(&c, killed).await, 0);

    assert_matches_reference(&c, "rerun after SIGKILL").await;
    // And the same rows as an uninterrupted run of the same data.
    let after_restart = results_digest(&c).await;
    settle_ok(&db.url, &["run", "--all", "--force", "--json"]).await;
    assert_eq!(results_digest(&c).await, after_restart);

    let h = history(&db.url).await;
    assert_eq!(h.len(), 3);
    assert_eq!(h[1], (rerun, "COMPLETED".into()));
    assert_eq!(h[2], (killed, "ABANDONED".into()));
    db.drop_db().await;
}

/// Partitions of `execution` whose result is still kept for a restart.
async fn kept_results(c: &tokio_postgres::Client, execution: i64) -> i64 {
    c.query_one(
        "SELECT count(*) FROM partition_execution WHERE execution_id = $1 AND result IS NOT NULL",
        &[&execution],
    )
    .await
    .unwrap()
    .get(0)
}

/// A private cluster for the server-restart test (the other tests share the
/// default test cluster, which must not be restarted under them).
struct PrivateCluster {
    dir: PathBuf,
    handles: Vec<settle::db::Database>,
}

impl PrivateCluster {
    async fn start() -> PrivateCluster {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("faults-pg-{}", std::process::id()));
        if dir.exists() {
            let _ = settle::db::embedded::Cluster::new(dir.clone())
                .unwrap()
                .stop_now();
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let db = settle::db::Database::open(None, Some(dir.clone()))
            .await
            .expect("a private cluster starts");
        PrivateCluster {
            dir,
            handles: vec![db],
        }
    }

    fn url(&self) -> String {
        settle::db::embedded::Cluster::new(self.dir.clone())
            .unwrap()
            .url("settle")
    }

    async fn connect(&self) -> Client {
        self.handles.last().unwrap().connect().await.unwrap()
    }

    /// `pg_ctl stop -m fast` (every session is terminated), then start again.
    async fn restart(&mut self) {
        let dir = self.dir.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            settle::db::embedded::Cluster::new(dir).unwrap().stop_now()
        })
        .await
        .unwrap()
        .expect("the server stops");
        assert!(stopped, "the server was running");
        let db = settle::db::Database::open(None, Some(self.dir.clone()))
            .await
            .expect("the server starts again");
        self.handles.push(db);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // The last handle released stops the server.
        self.handles.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 2. The server restarts in the middle of a run: the run either retries and
/// completes or fails cleanly (and the rerun completes); either way the final
/// results equal the reference's.
#[tokio::test(flavor = "multi_thread")]
async fn server_restart_mid_run_ends_cleanly_and_the_rerun_matches_reference() {
    let mut pg = PrivateCluster::start().await;
    let url = pg.url();
    let mut c = pg.connect().await;
    settle::db::migrate::migrate(&mut c).await.unwrap();
    load_hard_data(&c, 0.63, 5000, Order::Logged).await;

    let mut child = spawn_slow_run(&url, &["--all"], 16, 400, &[]);
    let exec = wait_for_completed_partitions(&mut child, &c, 3).await;
    drop(c);
    pg.restart().await;
    let o = child.wait_with_output().await.unwrap();
    eprintln!("the run under the restart:\n{}", text(&o));
    let c = pg.connect().await;

    if o.status.success() {
        // Retried through the restart.
        let s = stdout_json(&o);
        assert_eq!(s["execution_id"].as_i64(), Some(exec));
        assert_eq!(status_of(&c, exec).await, "COMPLETED");
    } else {
        // Failed cleanly: nothing published; FAILED if it could still say
        // so, else left RUNNING for the next run to mark ABANDONED.
        assert!(
            matches!(o.status.code(), Some(1 | 2)),
            "a clean failure:\n{}",
            text(&o)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("error:"));
        let st = status_of(&c, exec).await;
        assert!(st == "FAILED" || st == "RUNNING", "{st}:\n{}", text(&o));
        assert!(settled_days(&c).await.is_empty());
        assert_eq!(results_digest(&c).await, "0/0/0:---");
        let kept = partitions_with(&c, exec, "COMPLETED").await;
        assert!(kept.len() >= 3);

        let o2 = settle_ok(&url, &["run", "--all", "--json"]).await;
        let s = stdout_json(&o2);
        let rerun = s["execution_id"].as_i64().unwrap();
        assert_eq!(s["restarted_from"].as_i64(), Some(exec));
        assert_eq!(s["partitions_reused"].as_u64(), Some(kept.len() as u64));
        assert_eq!(status_of(&c, rerun).await, "COMPLETED");
        let st = status_of(&c, exec).await;
        assert!(st == "FAILED" || st == "ABANDONED", "{st}");
    }
    assert_matches_reference(&c, "after a server restart").await;
    drop(c);
    drop(pg);
}

/// 3. Two runs over overlapping days: the second exits at once with exit
/// code 2, naming the execution that holds the lock; the first is unharmed.
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_run_over_overlapping_days_is_refused_with_exit_code_2() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.71, 3000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    let (from, to) = (day_arg(first), day_arg(last));
    let mut child = spawn_slow_run(&db.url, &["--from", &from, "--to", &to], 8, 300, &[]);
    let holder = wait_for_completed_partitions(&mut child, &c, 1).await;

    let (a, b) = (day_arg(Day(first.0 + 2)), day_arg(Day(first.0 + 5)));
    let o = settle_output(&db.url, &["run", "--from", &a, "--to", &b]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("execution {holder})"))
            && stderr.contains(&format!("settle stop {holder}")),
        "names the holder {holder}:\n{}",
        text(&o)
    );
    // The refused run recorded nothing and did not disturb the holder.
    assert_eq!(status_of(&c, holder).await, "RUNNING");
    let o1 = child.wait_with_output().await.unwrap();
    assert!(o1.status.success(), "{}", text(&o1));
    assert_eq!(history(&db.url).await, vec![(holder, "COMPLETED".into())]);
    assert_matches_reference(&c, "the run that held the lock").await;
    db.drop_db().await;
}

/// 4. `settle stop` during a run: the execution ends STOPPED and the
/// published results are untouched, although the data changed.
#[tokio::test(flavor = "multi_thread")]
async fn settle_stop_ends_the_run_stopped_and_publishes_nothing() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.83, 4000, Order::Logged).await;
    let o = settle_ok(&db.url, &["run", "--all", "--json"]).await;
    let first = stdout_json(&o)["execution_id"].as_i64().unwrap();
    let before = results_digest(&c).await;
    let days_before = settled_days(&c).await;
    append_plays(&c, 500, 0).await;

    let mut child = spawn_slow_run(&db.url, &["--all"], 16, 400, &["--force"]);
    let exec = wait_for_completed_partitions(&mut child, &c, 2).await;
    let o = settle_ok(&db.url, &["stop", &exec.to_string()]).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("asked execution {exec} to stop")),
        "{}",
        text(&o)
    );
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopped before publishing"));

    assert_eq!(status_of(&c, exec).await, "STOPPED");
    assert!(partitions_with(&c, exec, "RUNNING").await.is_empty());
    assert!(partitions_with(&c, exec, "PENDING").await.is_empty());
    assert!(!partitions_with(&c, exec, "STOPPED").await.is_empty());
    assert_eq!(results_digest(&c).await, before, "results unchanged");
    assert_eq!(settled_days(&c).await, days_before);
    // Stopping a finished execution changes nothing.
    let o = settle_ok(&db.url, &["stop", &exec.to_string()]).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("is STOPPED; nothing to stop"));
    assert_eq!(
        history(&db.url).await,
        vec![(exec, "STOPPED".into()), (first, "COMPLETED".into())]
    );

    // The next run continues the stopped one and publishes the new data.
    let o = settle_ok(&db.url, &["run", "--all", "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(s["restarted_from"].as_i64(), Some(exec));
    assert!(s["partitions_reused"].as_u64().unwrap() >= 2);
    assert_ne!(results_digest(&c).await, before);
    assert_matches_reference(&c, "after continuing a stopped run").await;
    db.drop_db().await;
}

/// 5. More rejects than `--max-rejects`: exit code 1, nothing published, the
/// rejects visible in `settle status`; a rerun with a higher limit continues
/// the failed execution without reading again.
#[tokio::test(flavor = "multi_thread")]
async fn too_many_rejects_fail_the_run_publish_nothing_and_show_in_status() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.91, 3000, Order::Logged).await;
    settle_ok(&db.url, &["run", "--all"]).await;
    let before = results_digest(&c).await;
    let days_before = settled_days(&c).await;
    append_plays(&c, 300, 7).await;
    let invalid: i64 = c
        .query_one(
            "SELECT count(*) FROM viewing_log l LEFT JOIN videos v USING (video_id)
             WHERE v.video_id IS NULL OR NOT (0 <= l.start_position AND l.start_position <= l.end_position
                                              AND l.end_position <= v.duration_seconds)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(invalid > 10, "{invalid} invalid rows");

    let o = settle_output(
        &db.url,
        &[
            "run",
            "--all",
            "--force",
            "--max-rejects",
            "5",
            "--partitions",
            "4",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "found {invalid} rejected rows, more than --max-rejects 5; nothing was published"
        )),
        "{}",
        text(&o)
    );
    assert_eq!(results_digest(&c).await, before, "nothing published");
    assert_eq!(settled_days(&c).await, days_before);
    let (exec, st) = latest_execution(&c).await.unwrap();
    assert_eq!(st, "FAILED");
    assert!(stderr.contains(&format!("settle status {exec}")));

    let o = settle_ok(&db.url, &["status", &exec.to_string(), "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(s["execution"]["status"], "FAILED");
    let by_reason: i64 = s["rejects_by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_i64().unwrap())
        .sum();
    assert_eq!(by_reason, invalid);
    assert_eq!(
        s["execution"]["rejected_unknown_video"].as_i64().unwrap()
            + s["execution"]["rejected_bad_position"].as_i64().unwrap(),
        invalid
    );
    assert!(!s["reject_sample"].as_array().unwrap().is_empty());
    let o = settle_ok(&db.url, &["status", &exec.to_string()]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAILED")
            && out.contains("rejected rows: bad_position")
            && out.contains("unknown_video")
            && out.contains("more than --max-rejects 5"),
        "{out}"
    );

    // The operator corrects one rejected row in place. With a higher limit
    // the failed execution is continued: the partition holding the corrected
    // row is read again (its row count is unchanged, but the row was written
    // after the failed execution's snapshot), the other three are kept, and
    // the rows are right.
    let corrected: i64 = c
        .query_one(
            "UPDATE viewing_log SET end_position = start_position WHERE id = (
               SELECT min(l.id) FROM viewing_log l JOIN videos v USING (video_id)
               WHERE l.start_position > l.end_position AND l.start_position BETWEEN 0 AND v.duration_seconds)
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(corrected > 0);
    let o = settle_ok(
        &db.url,
        &[
            "run",
            "--all",
            "--max-rejects",
            &invalid.to_string(),
            "--json",
        ],
    )
    .await;
    let s = stdout_json(&o);
    assert_eq!(s["restarted_from"].as_i64(), Some(exec));
    assert_eq!(s["partitions_read"].as_u64(), Some(1), "{}", text(&o));
    assert_eq!(s["partitions_reused"].as_u64(), Some(3));
    let exec2 = s["execution_id"].as_i64().unwrap();
    let rejected: i64 = c
        .query_one(
            "SELECT count(*) FROM rejected_play WHERE execution_id = $1",
            &[&exec2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rejected,
        invalid - 1,
        "the corrected row is no longer rejected"
    );
    assert_matches_reference(&c, "after correcting a row and raising --max-rejects").await;
    db.drop_db().await;
}

/// 6. A completed instance run again without `--force` changes nothing and
/// says so; with `--force` it is a new execution with identical rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_completed_instance_reruns_only_with_force_and_gives_identical_rows() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.97, 3000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    let (from, to) = (day_arg(first), day_arg(last));
    let range = ["run", "--from", from.as_str(), "--to", to.as_str()];
    let o = settle_ok(&db.url, &[&range[..], &["--json"]].concat()).await;
    let a = stdout_json(&o)["execution_id"].as_i64().unwrap();
    let digest = results_digest(&c).await;
    let days = settled_days(&c).await;

    let o = settle_ok(&db.url, &range).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "already COMPLETED in execution {a}; nothing to do (use --force to run it again)"
        )),
        "{}",
        text(&o)
    );
    let o = settle_ok(&db.url, &[&range[..], &["--json"]].concat()).await;
    assert_eq!(
        stdout_json(&o),
        serde_json::json!({"status": "ALREADY_COMPLETED", "execution_id": a})
    );
    assert_eq!(history(&db.url).await, vec![(a, "COMPLETED".into())]);
    assert_eq!(results_digest(&c).await, digest);
    assert_eq!(settled_days(&c).await, days);

    let o = settle_ok(&db.url, &[&range[..], &["--force", "--json"]].concat()).await;
    let s = stdout_json(&o);
    let b = s["execution_id"].as_i64().unwrap();
    assert!(b > a);
    assert_eq!(s["attempt"].as_i64(), Some(2));
    assert_eq!(s["restarted_from"], Value::Null);
    assert_eq!(s["partitions_reused"].as_u64(), Some(0));
    assert_eq!(results_digest(&c).await, digest, "identical rows");
    assert!(settled_days(&c).await.iter().all(|(_, e)| *e == Some(b)));
    let o = settle_ok(&db.url, &["history", "--json"]).await;
    let h = stdout_json(&o);
    assert_eq!(h[0]["execution_id"].as_i64(), Some(b));
    assert_eq!(h[0]["status"], "COMPLETED");
    assert_eq!(h[0]["attempt"].as_i64(), Some(2));
    assert_eq!(h[1]["execution_id"].as_i64(), Some(a));
    assert_eq!(h[1]["status"], "COMPLETED");
    assert_eq!(h[0]["params"], format!("from={from};to={to}"));
    assert_matches_reference(&c, "after --force").await;

    // A play written into the range after it completed: the next run of the
    // same range settles it again instead of saying there is nothing to do.
    append_play(&c, 4242, &format!("timestamptz '{from} 12:00:00+09'"), 60).await;
    let o = settle_ok(&db.url, &[&range[..], &["--json"]].concat()).await;
    let s = stdout_json(&o);
    assert_eq!(s["attempt"].as_i64(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("written after execution {b}")),
        "{}",
        text(&o)
    );
    let c3 = s["execution_id"].as_i64().unwrap();
    assert_matches_reference(&c, "after a play was added to a settled range").await;
    let o = settle_ok(&db.url, &[&range[..], &["--json"]].concat()).await;
    assert_eq!(
        stdout_json(&o),
        serde_json::json!({"status": "ALREADY_COMPLETED", "execution_id": c3})
    );

    // `--all` means every day with plays: a play on a new day after it
    // completed is settled by the next `--all`.
    let o = settle_ok(&db.url, &["run", "--all", "--json"]).await;
    let all = stdout_json(&o)["execution_id"].as_i64().unwrap();
    let next = last.next().to_string();
    append_play(&c, 4243, &format!("timestamptz '{next} 08:00:00+09'"), 60).await;
    let o = settle_ok(&db.url, &["run", "--all", "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(s["last_day"].as_str(), Some(next.as_str()), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("written after execution {all}")),
        "{}",
        text(&o)
    );
    assert_matches_reference(&c, "after a play on a new day").await;
    db.drop_db().await;
}

/// A worker's connection is killed (as by a server-side timeout or a
/// failover): the worker reconnects into the same snapshot, reads its
/// partition again, and the run completes with the right rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_connection_is_retried_and_the_run_completes() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.33, 3000, Order::Logged).await;
    let mut child = spawn_slow_run(&db.url, &["--all"], 12, 400, &[]);
    let exec = wait_for_completed_partitions(&mut child, &c, 2).await;
    let killed: i64 = c
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'COPY % TO STDOUT %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one worker connection terminated");
    let o = child.wait_with_output().await.unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let s = stdout_json(&o);
    assert_eq!(s["execution_id"].as_i64(), Some(exec));
    assert_eq!(status_of(&c, exec).await, "COMPLETED");
    let retried: i64 = c
        .query_one(
            "SELECT count(*) FROM partition_execution WHERE execution_id = $1 AND attempts = 2 AND status = 'COMPLETED'",
            &[&exec],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retried, 1, "one partition took a second attempt");
    assert!(s["partition_timings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["attempts"].as_u64() == Some(2)));
    assert_matches_reference(&c, "after a retried partition").await;
    db.drop_db().await;
}

/// The run reads one snapshot: rows deleted, changed and added while it
/// runs do not reach its results, which equal the reference's on the log as
/// it was when the run started.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_reads_one_snapshot_while_the_log_changes_under_it() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.44, 3000, Order::Logged).await;
    c.batch_execute("CREATE TABLE saved_log AS SELECT * FROM viewing_log; CREATE TABLE saved_videos AS SELECT * FROM videos")
        .await
        .unwrap();
    let mut child = spawn_slow_run(&db.url, &["--all"], 12, 400, &[]);
    wait_for_completed_partitions(&mut child, &c, 2).await;
    // Change every part of the log, read or not, and the catalogue.
    c.batch_execute(
        "DELETE FROM viewing_log WHERE id % 5 = 0;
         UPDATE viewing_log SET end_position = start_position WHERE id % 7 = 0;
         UPDATE videos SET uploader_id = uploader_id + 1 WHERE video_id % 3 = 0;",
    )
    .await
    .unwrap();
    append_plays(&c, 400, 5).await;
    let o = child.wait_with_output().await.unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let during = results_digest(&c).await;

    // The reference on the log as it was.
    c.batch_execute(
        "TRUNCATE viewing_log, videos; INSERT INTO viewing_log SELECT * FROM saved_log;
         INSERT INTO videos SELECT * FROM saved_videos;",
    )
    .await
    .unwrap();
    assert_matches_reference(&c, "a run whose log changed under it").await;
    assert_eq!(results_digest(&c).await, during);
    db.drop_db().await;
}

/// Readers during a publish see the old rows or the new ones, never a mix.
#[tokio::test(flavor = "multi_thread")]
async fn readers_see_the_old_results_or_the_new_never_a_mix() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.27, 4000, Order::Logged).await;
    settle_ok(&db.url, &["run", "--all"]).await;
    let old = results_digest(&c).await;
    append_plays(&c, 2000, 0).await;

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let config = db.config().clone();
        tokio::spawn(async move {
            let r = settle::db::connect(&config).await.unwrap();
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let d = results_digest(&r).await;
                if seen.last() != Some(&d) {
                    seen.push(d);
                }
            }
            seen.push(results_digest(&r).await);
            seen.dedup();
            seen
        })
    };
    settle_ok(&db.url, &["run", "--all", "--force"]).await;
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let new = results_digest(&c).await;
    assert_ne!(old, new);
    assert_eq!(seen.last(), Some(&new));
    assert!(
        seen.iter().all(|d| *d == old || *d == new),
        "readers saw only the old and the new rows: {seen:?} (old {old}, new {new})"
    );
    assert_matches_reference(&c, "after the publish").await;
    db.drop_db().await;
}

/// A continued run must read again what its predecessor did not cover:
/// here another run settled later days in between, so the continued range
/// reaches further than the kept partitions did.
#[tokio::test(flavor = "multi_thread")]
async fn a_continued_run_whose_range_grew_meanwhile_does_not_reuse_partial_partitions() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.19, 4000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    let (from, mid, to) = (day_arg(first), day_arg(Day(first.0 + 3)), day_arg(last));
    let mut child = spawn_slow_run(&db.url, &["--from", &from, "--to", &mid], 12, 400, &[]);
    let killed = wait_for_completed_partitions(&mut child, &c, 2).await;
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    // Another instance settles every day.
    settle_ok(&db.url, &["run", "--from", &from, "--to", &to]).await;
    assert_eq!(status_of(&c, killed).await, "ABANDONED");
    // The killed instance again: its range now extends to the last settled day.
    let o = settle_ok(&db.url, &["run", "--from", &from, "--to", &mid, "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(s["extended_to"].as_str(), Some(to.as_str()), "{}", text(&o));
    assert_eq!(s["partitions_reused"].as_u64(), Some(0), "{}", text(&o));
    assert_matches_reference(&c, "a continued run over a grown range").await;
    db.drop_db().await;
}

/// A failed run continued after the log changed: rows appended above the
/// failed run's plan and a row deleted inside a partition it had finished.
/// The continuation reads the new id range, re-reads the changed partition
/// instead of reusing its result, and matches the reference.
#[tokio::test(flavor = "multi_thread")]
async fn a_continued_run_reads_what_the_log_gained_or_lost_since_the_failed_attempt() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.37, 4000, Order::Logged).await;
    let mut child = spawn_slow_run(&db.url, &["--all"], 16, 400, &[]);
    let exec = wait_for_completed_partitions(&mut child, &c, 3).await;
    settle_ok(&db.url, &["stop", &exec.to_string()]).await;
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(status_of(&c, exec).await, "STOPPED");
    let done = partitions_with(&c, exec, "COMPLETED").await;
    assert!(!done.is_empty() && done.len() < 16, "{done:?}");

    // Meanwhile: new plays (ids above the plan) and one play gone from the
    // first finished partition.
    append_plays(&c, 300, 2).await;
    let gone: i64 = c
        .query_one(
            "DELETE FROM viewing_log WHERE id = (SELECT min(l.id) FROM viewing_log l, partition_execution p
               WHERE p.execution_id = $1 AND p.partition_no = $2 AND l.id BETWEEN p.id_lo AND p.id_hi)
             RETURNING id",
            &[&exec, &done[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert!(gone > 0);
    let rows = log_rows(&c).await;

    let o = settle_ok(&db.url, &["run", "--all", "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(s["restarted_from"].as_i64(), Some(exec), "{}", text(&o));
    assert_eq!(
        s["rows_read"].as_i64(),
        Some(rows),
        "every row once: {}",
        text(&o)
    );
    let reused = s["partitions_reused"].as_u64().unwrap();
    assert!(
        reused > 0 && reused < done.len() as u64,
        "the changed partition was read again, the others reused: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("changed since"),
        "the run says why: {}",
        text(&o)
    );
    assert_matches_reference(&c, "a continued run after the log changed").await;
    db.drop_db().await;
}

/// Plays backfilled before the earliest settled day: a later nightly run
/// refuses (exit code 1) and names the fix, instead of pricing the night on
/// a tier history that misses them; `--all` then settles everything and
/// matches the reference.
#[tokio::test(flavor = "multi_thread")]
async fn plays_backfilled_before_the_settled_history_stop_the_next_run() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.61, 2000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    settle_days(&db.url, first, Day(last.0 - 1)).await;
    let before = results_digest(&c).await;
    append_play(
        &c,
        424242,
        &format!("'{first} 12:00:00+09'::timestamptz - interval '1 day'"),
        10,
    )
    .await;

    let o = settle_output(&db.url, &["run", "--date", &day_arg(last)]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o)); // a refusal: usage or environment
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("plays before {first}")) && err.contains("settle run --all"),
        "{err}"
    );
    assert_eq!(results_digest(&c).await, before, "nothing published");

    settle_ok(&db.url, &["run", "--all"]).await;
    assert_matches_reference(&c, "after the backfill was settled").await;
    db.drop_db().await;
}

/// A play of the settled day before, still running when that day was
/// settled and written afterwards: the next nightly run notices it in the
/// day's tail count, settles that day again with its own, says so, and
/// matches the reference. A nightly run with nothing late restates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_play_written_after_its_day_was_settled_is_counted_by_the_next_night() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.29, 2000, Order::Logged).await;
    let (first, last) = data_days(&c).await;
    let eve = Day(last.0 - 1);
    settle_days(&db.url, first, Day(eve.0 - 1)).await;
    let o = settle_ok(&db.url, &["run", "--date", &day_arg(eve), "--json"]).await;
    assert!(stdout_json(&o)["restated_from"].is_null(), "{}", text(&o));

    // Written now: a play that started at 23:58 on `eve`.
    append_play(&c, 515151, &format!("'{eve} 23:58:00+09'"), 1).await;
    let o = settle_ok(&db.url, &["run", "--date", &day_arg(last), "--json"]).await;
    let s = stdout_json(&o);
    assert_eq!(
        s["restated_from"].as_str(),
        Some(day_arg(eve).as_str()),
        "{}",
        text(&o)
    );
    assert_eq!(s["first_day"].as_str(), Some(day_arg(eve).as_str()));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 more plays in its last hours"),
        "{}",
        text(&o)
    );
    assert_matches_reference(&c, "after a late play of a settled day").await;
    db.drop_db().await;
}

/// A row whose started_at is infinite belongs to no Seoul day: `--all`
/// refuses before reading, names the row, and publishes nothing; a run of
/// the data's days, which never reads it, still settles.
#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_started_at_is_refused_by_name() {
    let db = TestDb::new().await.unwrap();
    let c = db.connect().await.unwrap();
    load_hard_data(&c, 0.71, 1000, Order::Logged).await;
    let id = append_play(&c, 616161, "'infinity'", 1).await;
    let o = settle_output(&db.url, &["run", "--all"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o)); // a refusal: usage or environment
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("row {id} has started_at = infinity")),
        "{err}"
    );
    assert_eq!(results_digest(&c).await, "0/0/0:---");
    assert!(settled_days(&c).await.is_empty());
    // A run of the data's days reads no infinite row, and planning it must
    // not either: its cuts are found by probing rows up to the log's last
    // id, here a run of them long enough to be a probe's median.
    for _ in 0..20 {
        append_play(&c, 616162, "'infinity'", 1).await;
    }
    let r = c
        .query_one(
            "SELECT (min(started_at) AT TIME ZONE 'Asia/Seoul')::date::text, \
                    (max(started_at) FILTER (WHERE started_at < 'infinity') \
                     AT TIME ZONE 'Asia/Seoul')::date::text FROM viewing_log",
            &[],
        )
        .await
        .unwrap();
    let (first, last): (String, String) = (r.get(0), r.get(1));
    let o = settle_output(&db.url, &["run", "--from", &first, "--to", &last]).await;
    assert!(o.status.success(), "{}", text(&o));
    let days = settled_days(&c).await;
    assert_eq!(days.last().map(|d| d.0.as_str()), Some(last.as_str()));
    db.drop_db().await;
}
