//! Shared by the `settle serve` tests: a server on 127.0.0.1:0 over a fresh
//! test database with small generated data, and HTTP helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use settle::serve::{self, ManualClock, ServeConfig, Server};
use settle::testkit::TestDb;
use settle::Settle;

pub const ADMIN: &str = "admin-token-for-tests";
pub const READER: &str = "read-only-token-for-tests";

/// How often and how long tests poll for a state (bounded, never timed).
pub const POLL: Duration = Duration::from_millis(50);
pub const POLL_CAP: u32 = 3600; // 3 minutes

pub struct Harness {
    pub db: TestDb,
    pub server: Option<Server>,
    pub clock: Arc<ManualClock>,
    pub base: String,
    pub http: Client,
}

pub fn seoul(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test time")
        .with_timezone(&Utc)
}

/// A server with both tokens, the scheduler on a manual clock, and a week
/// of generated plays (2024-07-01 .. 07-07, Seoul).
pub async fn harness(rows: &str) -> Harness {
    let db = TestDb::new().await.expect("a test database");
    db.generate(&[
        "--rows", rows, "--videos", "300", "--days", "7", "--jobs", "1",
    ])
    .await;
    let clock = Arc::new(ManualClock::new(seoul("2024-07-01T00:00:00+09:00")));
    let server = start(&db, clock.clone()).await;
    let base = format!("http://{}", server.addr);
    Harness {
        db,
        server: Some(server),
        clock,
        base,
        http: Client::new(),
    }
}

pub async fn start(db: &TestDb, clock: Arc<ManualClock>) -> Server {
    start_with(db, clock, false).await
}

/// `start`, choosing whether shutdown waits for runs in flight (`--drain`).
pub async fn start_with(db: &TestDb, clock: Arc<ManualClock>, drain: bool) -> Server {
    let settle = Settle::from_database(db.database().await.expect("open"));
    let cfg = ServeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN.into()),
        read_token: Some(READER.into()),
        insecure_no_auth: false,
        drain,
        scheduler: true,
    };
    serve::start(settle, &cfg, clock)
        .await
        .expect("the server starts")
}

impl Harness {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        let text = resp.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(ADMIN), None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(ADMIN), Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(ADMIN), Some(body))
            .await
    }

    /// Polls an execution until `done` says so; returns its last detail.
    pub async fn wait_execution(&self, id: i64, done: impl Fn(&str) -> bool) -> Value {
        for _ in 0..POLL_CAP {
            let (code, v) = self.get(&format!("/api/executions/{id}")).await;
            assert_eq!(code, StatusCode::OK, "{v}");
            if done(v["status"].as_str().unwrap_or("")) {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("execution {id} never reached the awaited state");
    }

    pub async fn wait_finished(&self, id: i64) -> Value {
        self.wait_execution(id, |s| !matches!(s, "RUNNING" | "STARTING"))
            .await
    }

    /// The clock time of the scheduler's last finished pass, from /health.
    pub async fn last_pass(&self) -> Option<DateTime<Utc>> {
        let (_, v) = self.call(Method::GET, "/health", None, None).await;
        v["scheduler_clock"]
            .as_str()
            .map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc))
    }

    /// Moves the clock and waits for a whole scheduler pass at that time.
    pub async fn set_clock(&self, t: &str) {
        let t = seoul(t);
        self.clock.set(t);
        for _ in 0..POLL_CAP {
            if self.last_pass().await.is_some_and(|p| p >= t) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the scheduler made no pass after the clock moved to {t}");
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        self.db.drop_db().await;
    }
}
