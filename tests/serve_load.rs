//! A bounded loopback load test of `settle serve` (ignored by default; run
//! with `cargo test --release --test serve_load -- --ignored`): 50 clients
//! for 30 s against the read endpoints while a run is in progress. It
//! reports p50/p99 latency and the error count into
//! results/serve-load-<time>.md, and checks the run still completes with
//! results equal to sql/reference.

mod common;
mod serve_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serve_support::*;

const CLIENTS: usize = 50;
const SECONDS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30 s load test; run it on purpose"]
async fn fifty_clients_for_thirty_seconds_while_a_run_is_in_progress() {
    let h = harness("200000").await;
    // The first run publishes results to read; the second (forced, slow)
    // is in progress during the load.
    let (_, v) = h.post("/api/runs", r#"{"all": true}"#).await;
    h.wait_finished(v["execution_id"].as_i64().unwrap()).await;
    let (_, v) = h
        .post(
            "/api/runs",
            r#"{"all": true, "force": true, "partitions": 32, "pause_after_partition_ms": 2500}"#,
        )
        .await;
    let run = v["execution_id"].as_i64().unwrap();
    h.wait_execution(run, |s| s == "RUNNING").await;

    let paths: Arc<Vec<String>> = Arc::new(vec![
        "/api/executions?limit=20".into(),
        format!("/api/executions/{run}"),
        "/api/settlements?period=month&start=2024-07-01".into(),
        "/api/settlements?period=day&start=2024-07-03&limit=50".into(),
        "/api/top?period=month&start=2024-07-01".into(),
        "/api/top?period=week&start=2024-07-01".into(),
        "/api/schedules".into(),
        "/health".into(),
    ]);
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3).unwrap()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for i in 0..CLIENTS {
        let (paths, hist, errors, stop) =
            (paths.clone(), hist.clone(), errors.clone(), stop.clone());
        let base = h.base.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[n % paths.len()];
                n += 1;
                let t = Instant::now();
                let ok = match http
                    .get(format!("{base}{path}"))
                    .bearer_auth(READER)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let us = t.elapsed().as_micros() as u64;
                hist.lock().unwrap().record(us.max(1)).unwrap();
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let still_running = h.get(&format!("/api/executions/{run}")).await.1["status"] == "RUNNING";
    let done = h.wait_finished(run).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let c = h.db.connect().await.unwrap();
    common::assert_matches_reference(&c, "the run under load").await;

    let hist = hist.lock().unwrap().clone();
    let errors = errors.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = format!(
        "# settle serve: loopback load test\n\n\
         {CLIENTS} concurrent clients for {SECONDS} s against 8 read endpoints (read-only token) on 127.0.0.1, \
         while execution {run} (a forced re-run of 200 000 plays in 32 slowed partitions) was in progress \
         (still running at the end of the load: {still_running}), on a 2-core machine: the clients, the server and PostgreSQL share its cores.\n\n\
         | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n| --- | --- | --- | --- | --- | --- | --- |\n\
         | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {errors} |\n\n\
         The run completed afterwards and its results equal sql/reference.\n",
        hist.len(),
        hist.len() as f64 / elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0,
    );
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("results/serve-load-{stamp}.md"));
    std::fs::write(&path, &report).unwrap();
    println!("{report}");
    assert_eq!(errors, 0, "no request failed");
    h.finish().await;
}
