//! The scheduler of `settle serve` on an injected clock, over real HTTP
//! against a real PostgreSQL: the 01:00 fire, catch-up of missed days in
//! date order, no double fire, pause and resume (with its preview),
//! auto-pause after failures, and a second server refused by the lock.

mod serve_support;

use serde_json::Value;
use serve_support::*;

async fn fires(h: &Harness) -> Vec<(String, String)> {
    let (_, v) = h.get("/api/schedules/1/fires").await;
    let mut f: Vec<(String, String)> = v
        .as_array()
        .expect("fires")
        .iter()
        .map(|f| {
            (
                f["day"].as_str().unwrap().to_string(),
                f["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    f.reverse(); // oldest first
    f
}

async fn executions(h: &Harness) -> usize {
    let (_, v) = h.get("/api/executions?limit=1000").await;
    v["executions"].as_array().unwrap().len()
}

async fn schedule(h: &Harness) -> Value {
    let (_, v) = h.get("/api/schedules").await;
    v[0].clone()
}

fn pair(day: &str, outcome: &str) -> (String, String) {
    (day.to_string(), outcome.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_at_01_catches_up_in_order_never_twice_and_pauses() {
    let h = harness("20000").await;
    let s = schedule(&h).await;
    assert_eq!(s["name"], "nightly");
    assert_eq!(s["timezone"], "Asia/Seoul");
    assert_eq!(s["catch_up"], "all");
    // The schedule has handled everything up to 07-01 noon (Seoul).
    let (code, v) = h
        .patch(
            "/api/schedules/1",
            r#"{"last_fire_at": "2024-07-01T12:00:00+09:00"}"#,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    h.set_clock("2024-07-02T00:59:59+09:00").await;
    assert!(fires(&h).await.is_empty(), "nothing before 01:00");
    h.set_clock("2024-07-02T01:00:00+09:00").await;
    assert_eq!(
        fires(&h).await,
        vec![pair("2024-07-01", "completed")],
        "01:00 settles yesterday"
    );
    // Down for three nights: the missed days come in date order.
    h.set_clock("2024-07-05T01:00:30+09:00").await;
    assert_eq!(
        fires(&h).await,
        vec![
            pair("2024-07-01", "completed"),
            pair("2024-07-02", "completed"),
            pair("2024-07-03", "completed"),
            pair("2024-07-04", "completed"),
        ]
    );
    let runs = executions(&h).await;
    assert_eq!(runs, 4);
    // Later the same day: nothing more.
    h.set_clock("2024-07-05T23:00:00+09:00").await;
    assert_eq!(fires(&h).await.len(), 4, "no double fire");
    // Even told to fire 07-04's slot again, the engine's identity makes it a no-op.
    h.patch(
        "/api/schedules/1",
        r#"{"last_fire_at": "2024-07-04T12:00:00+09:00"}"#,
    )
    .await;
    h.set_clock("2024-07-05T23:30:00+09:00").await;
    assert_eq!(
        fires(&h).await.last(),
        Some(&pair("2024-07-04", "already_completed"))
    );
    assert_eq!(executions(&h).await, runs, "no day settled twice");
    // Paused: the night passes without a fire; the preview says what resuming runs.
    let (_, v) = h.patch("/api/schedules/1", r#"{"paused": true}"#).await;
    assert_eq!(v["paused"], true);
    h.set_clock("2024-07-07T01:00:05+09:00").await;
    assert_eq!(fires(&h).await.len(), 5, "a paused schedule does not fire");
    let s = schedule(&h).await;
    assert_eq!(
        s["would_run"],
        serde_json::json!(["2024-07-05", "2024-07-06"]),
        "{s}"
    );
    h.patch("/api/schedules/1", r#"{"paused": false}"#).await;
    h.set_clock("2024-07-07T01:00:06+09:00").await;
    let f = fires(&h).await;
    assert_eq!(
        &f[5..],
        &[
            pair("2024-07-05", "completed"),
            pair("2024-07-06", "completed")
        ]
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_only_and_auto_pause_after_failures() {
    let h = harness("5000").await;
    // Latest only, from a day the engine refuses (earlier days are unsettled).
    let (code, v) = h
        .patch("/api/schedules/1", r#"{"catch_up": "latest", "max_failures": 2, "last_fire_at": "2024-07-01T12:00:00+09:00"}"#)
        .await;
    assert_eq!(code, 200, "{v}");
    h.set_clock("2024-07-05T01:00:00+09:00").await;
    assert_eq!(
        fires(&h).await,
        vec![pair("2024-07-04", "failed")],
        "latest only: one fire, refused"
    );
    h.set_clock("2024-07-05T01:00:01+09:00").await;
    let s = schedule(&h).await;
    assert_eq!(s["paused"], true, "paused after 2 failures: {s}");
    assert!(
        s["paused_reason"]
            .as_str()
            .unwrap()
            .contains("2 consecutive"),
        "{s}"
    );
    let n = fires(&h).await.len();
    h.set_clock("2024-07-05T01:00:02+09:00").await;
    assert_eq!(fires(&h).await.len(), n, "a paused schedule stays quiet");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_database_is_refused_by_the_lock_and_carries_on() {
    let h = harness("20000").await;
    // A long run in the first server holds the lock.
    let (_, v) = h
        .post(
            "/api/runs",
            r#"{"all": true, "partitions": 16, "pause_after_partition_ms": 700}"#,
        )
        .await;
    let id = v["execution_id"].as_i64().unwrap();
    h.wait_execution(id, |s| s == "RUNNING").await;
    // The second server's scheduler fires while it runs.
    let clock2 = std::sync::Arc::new(settle::serve::ManualClock::new(seoul(
        "2024-07-01T00:00:00+09:00",
    )));
    let second = start(&h.db, clock2.clone()).await;
    h.patch(
        "/api/schedules/1",
        r#"{"last_fire_at": "2024-07-07T12:00:00+09:00"}"#,
    )
    .await;
    let t = seoul("2024-07-08T01:00:00+09:00");
    clock2.set(t);
    for _ in 0..POLL_CAP {
        if second.scheduler().last_pass().is_some_and(|p| p >= t) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let f = fires(&h).await;
    assert_eq!(
        f,
        vec![pair("2024-07-07", "locked")],
        "refused by the lock, recorded, not failed"
    );
    assert!(
        second.scheduler().is_alive(),
        "the second scheduler carries on"
    );
    let s = schedule(&h).await;
    assert_eq!(s["consecutive_failures"], 0);
    h.wait_finished(id).await;
    second.shutdown().await.unwrap();
    h.finish().await;
}
