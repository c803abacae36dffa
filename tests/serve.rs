//! `settle serve` over real HTTP against a real PostgreSQL: auth, every
//! endpoint's happy path and bad input, runs started, stopped, restarted
//! and refused by the lock, metrics, health and the OpenAPI document.

mod serve_support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use serve_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_wrong_right_and_read_only() {
    let h = harness("5000").await;
    for (token, want) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some(READER), 200),
        (Some(ADMIN), 200),
    ] {
        let (code, body) = h.call(Method::GET, "/api/executions", token, None).await;
        assert_eq!(code.as_u16(), want, "GET with {token:?}: {body}");
        if want == 401 {
            assert!(
                body["error"].as_str().is_some(),
                "401 has a JSON error: {body}"
            );
        }
    }
    // A bearer prefix without a token, and a token of another length.
    let (code, _) = h.call(Method::GET, "/api/executions", Some(""), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = h
        .call(
            Method::GET,
            "/api/executions",
            Some(&format!("{ADMIN}x")),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // The read-only token changes nothing; the attempt is audited.
    let (code, body) = h
        .call(
            Method::POST,
            "/api/runs",
            Some(READER),
            Some(r#"{"all": true}"#),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, _) = h
        .call(Method::POST, "/api/runs", None, Some(r#"{"all": true}"#))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (_, audit) = h.get("/api/audit").await;
    let first = &audit[0];
    assert_eq!(first["token_name"], "read-only", "{audit}");
    assert_eq!(first["action"], "POST /api/runs");
    assert_eq!(first["status"], 403);
    assert!(
        first["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    // Unauthenticated endpoints.
    for path in ["/health", "/metrics"] {
        let (code, _) = h.call(Method::GET, path, None, None).await;
        assert_eq!(code, StatusCode::OK, "{path}");
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_with_a_message() {
    let h = harness("5000").await;
    let cases: &[(Method, &str, Option<&str>)] = &[
        (Method::POST, "/api/runs", Some("{not json")),
        (Method::POST, "/api/runs", Some(r#"{"date": "2024-13-01"}"#)),
        (
            Method::POST,
            "/api/runs",
            Some(r#"{"date": "2024-07-01", "all": true}"#),
        ),
        (
            Method::POST,
            "/api/runs",
            Some(r#"{"from": "2024-07-05", "to": "2024-07-01"}"#),
        ),
        (
            Method::POST,
            "/api/runs",
            Some(r#"{"dates": "2024-07-01"}"#),
        ),
        (Method::POST, "/api/runs", Some(r#"{}"#)),
        (Method::GET, "/api/executions?limit=100000000", None),
        (Method::GET, "/api/executions?limit=-1", None),
        (Method::GET, "/api/executions?status=DONE", None),
        (Method::GET, "/api/executions/-3", None),
        (Method::GET, "/api/executions/abc", None),
        (Method::POST, "/api/executions/-1/stop", Some("")),
        (Method::POST, "/api/executions/0/restart", Some("")),
        (Method::GET, "/api/settlements?period=year", None),
        (
            Method::GET,
            "/api/settlements?period=month&start=July",
            None,
        ),
        (Method::GET, "/api/settlements?period=day&creator=-5", None),
        (Method::GET, "/api/top?period=month&metric=likes", None),
        (Method::GET, "/api/top?period=fortnight", None),
        (
            Method::POST,
            "/api/schedules",
            Some(r#"{"name": "x", "cron": "every day"}"#),
        ),
        (
            Method::POST,
            "/api/schedules",
            Some(r#"{"name": "x", "cron": "0 1 * * *", "timezone": "Mars/Base"}"#),
        ),
        (
            Method::POST,
            "/api/schedules",
            Some(r#"{"cron": "0 1 * * *"}"#),
        ),
        (
            Method::PATCH,
            "/api/schedules/1",
            Some(r#"{"catch_up": "some"}"#),
        ),
        (
            Method::PATCH,
            "/api/schedules/1",
            Some(r#"{"max_failures": 0}"#),
        ),
        (Method::PATCH, "/api/schedules/1", Some(r#"[1, 2"#)),
        (
            Method::PATCH,
            "/api/schedules/-1",
            Some(r#"{"paused": true}"#),
        ),
    ];
    for (method, path, body) in cases {
        let (code, v) = h.call(method.clone(), path, Some(ADMIN), *body).await;
        assert_eq!(
            code,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body:?}: {v}"
        );
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    let (code, _) = h.get("/api/executions/999999").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = h
        .patch("/api/schedules/999999", r#"{"paused": true}"#)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_by_the_api_completes_and_shows_everywhere() {
    let h = harness("20000").await;
    let (code, v) = h.post("/api/runs", r#"{"all": true}"#).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let id = v["execution_id"].as_i64().expect("an execution id");
    let detail = h.wait_finished(id).await;
    assert_eq!(detail["status"], "COMPLETED", "{detail}");
    assert!(
        detail["partitions"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{detail}"
    );
    let (_, list) = h.get("/api/executions?status=COMPLETED&limit=5").await;
    assert_eq!(list["executions"][0]["execution_id"], id, "{list}");
    // The same request again is a no-op of the job identity.
    let (code, again) = h.post("/api/runs", r#"{"all": true}"#).await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["already_completed"], true);
    // Results: the month's creators, one creator's videos, the top 5.
    let (code, s) = h
        .get("/api/settlements?period=month&start=2024-07-01")
        .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    let creators = s["creators"].as_array().expect("creators");
    assert!(!creators.is_empty(), "{s}");
    let c = db_creator_total(&h, creators[0]["creator_id"].as_i64().unwrap()).await;
    assert_eq!(
        creators[0]["total_amount"].as_i64().unwrap(),
        c,
        "API equals the table"
    );
    let creator = creators[0]["creator_id"].as_i64().unwrap();
    let (_, mine) = h
        .get(&format!(
            "/api/settlements?period=month&start=2024-07-15&creator={creator}"
        ))
        .await;
    let videos = mine["videos"].as_array().expect("videos");
    assert!(
        !videos.is_empty() && videos.iter().all(|v| v["creator_id"] == creator),
        "{mine}"
    );
    assert_eq!(mine["start"], "2024-07-01", "start snaps to the month");
    let (code, top) = h
        .get("/api/top?period=month&start=2024-07-01&metric=views")
        .await;
    assert_eq!(code, StatusCode::OK);
    let top = top["top"].as_array().expect("top").clone();
    assert_eq!(top.len(), 5, "{top:?}");
    assert!(top
        .windows(2)
        .all(|w| w[0]["value"].as_i64() >= w[1]["value"].as_i64()));
    let (_, day) = h
        .get("/api/settlements?period=day&start=2024-07-03&video=1")
        .await;
    assert!(day["creators"].as_array().unwrap().is_empty());
    // The run shows in /metrics.
    let (_, text) = h.call(Method::GET, "/metrics", None, None).await;
    let text = text.as_str().unwrap().to_string();
    for needle in [
        "settle_executions{status=\"COMPLETED\"} 1",
        "settle_rows_read_total",
        "settle_phase_seconds_bucket",
        "settle_last_settled_day_age_seconds",
        "settle_next_fire_timestamp_seconds",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    h.finish().await;
}

async fn db_creator_total(h: &Harness, creator: i64) -> i64 {
    let c = h.db.connect().await.unwrap();
    c.query_one(
        "SELECT total_amount FROM settlement_creator WHERE period_kind = 'month' AND period_start = '2024-07-01' AND creator_id = $1",
        &[&creator],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_restart_and_a_concurrent_run_gets_409() {
    let h = harness("20000").await;
    let slow = r#"{"all": true, "partitions": 16, "pause_after_partition_ms": 400}"#;
    let (code, v) = h.post("/api/runs", slow).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let id = v["execution_id"].as_i64().unwrap();
    h.wait_execution(id, |s| s == "RUNNING").await;
    let (code, busy) = h.post("/api/runs", r#"{"date": "2024-07-02"}"#).await;
    assert_eq!(code, StatusCode::CONFLICT, "{busy}");
    assert_eq!(busy["holder"], id, "409 names the holder: {busy}");
    let (code, v) = h.post(&format!("/api/executions/{id}/stop"), "").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let stopped = h.wait_finished(id).await;
    assert_eq!(stopped["status"], "STOPPED", "{stopped}");
    let (code, v) = h.post(&format!("/api/executions/{id}/stop"), "").await;
    assert_eq!(code, StatusCode::CONFLICT, "stopping a stopped run: {v}");
    let (code, v) = h.post(&format!("/api/executions/{id}/restart"), "").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let again = v["execution_id"].as_i64().unwrap();
    assert_ne!(again, id);
    let done = h.wait_finished(again).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["execution"]["restarted_from"], id,
        "the restart continues the stopped one: {done}"
    );
    let (_, audit) = h.get("/api/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&format!("POST /api/executions/{id}/restart").as_str()),
        "{actions:?}"
    );
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["token_name"] == "admin"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_parses_and_lists_every_route() {
    let h = harness("1000").await;
    let (code, doc) = h.get("/api/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    let doc: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("a valid OpenAPI document");
    let paths = &doc.paths.paths;
    let want = [
        ("/api/runs", "post"),
        ("/api/executions", "get"),
        ("/api/executions/{id}", "get"),
        ("/api/executions/{id}/stop", "post"),
        ("/api/executions/{id}/restart", "post"),
        ("/api/schedules", "get"),
        ("/api/schedules", "post"),
        ("/api/schedules/{id}", "patch"),
        ("/api/settlements", "get"),
        ("/api/top", "get"),
    ];
    for (path, method) in want {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()));
        let has = match method {
            "get" => item.get.is_some(),
            "post" => item.post.is_some(),
            _ => item.patch.is_some(),
        };
        assert!(has, "{method} {path} missing");
    }
    // And every documented route answers (not 404) with the token.
    for path in paths.keys().filter(|p| !p.contains('{')) {
        let (code, v) = h.get(path).await;
        assert_ne!(code, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let (code, _) = h.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let _: Value = doc.paths.paths.len().into();
    h.finish().await;
}

/// What SIGTERM does (the same `shutdown`): a run in flight ends STOPPED
/// and publishes nothing; with `--drain` the server waits and it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_run_in_flight_or_with_drain_waits_for_it() {
    let mut h = harness("20000").await;
    for drain in [false, true] {
        if let Some(s) = h.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let server = start_with(&h.db, h.clock.clone(), drain).await;
        h.base = format!("http://{}", server.addr);
        h.server = Some(server);
        let slow = r#"{"all": true, "partitions": 8, "pause_after_partition_ms": 500}"#;
        let (code, v) = h.post("/api/runs", slow).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{v}");
        let id = v["execution_id"].as_i64().unwrap();
        h.wait_execution(id, |s| s == "RUNNING").await;
        let server = h.server.take().expect("a server");
        server.shutdown().await.expect("clean shutdown");
        let c = h.db.connect().await.unwrap();
        let r = c
            .query_one(
                "SELECT status, (SELECT count(*) FROM settled_day) FROM job_execution \
                 WHERE execution_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let (status, settled): (String, i64) = (r.get(0), r.get(1));
        if drain {
            assert_eq!(status, "COMPLETED", "--drain waits for the run");
            assert_eq!(settled, 7, "and it publishes the week");
        } else {
            assert_eq!(status, "STOPPED", "shutdown stops the run");
            assert_eq!(settled, 0, "a stopped run publishes nothing");
        }
    }
    h.finish().await;
}
