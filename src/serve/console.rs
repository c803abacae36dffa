//! The web console: server-rendered pages (askama), readable without
//! JavaScript. Logging in puts the token in an HttpOnly, SameSite=Strict
//! cookie; every form carries a CSRF token derived from it, and every
//! change is audited like an API call.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use subtle::ConstantTimeEq;

use super::api::{self, parse_id};
use super::auth::{self, Tokens, Who};
use super::error::ApiError;
use super::runs::RunAsk;
use super::store::{self, ScheduleEdit};
use super::views;
use super::{data, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/executions", get(executions))
        .route("/executions/{id}", get(execution))
        .route("/executions/{id}/stop", post(stop))
        .route("/executions/{id}/restart", post(restart))
        .route("/run", get(run_page).post(run))
        .route("/settlements", get(settlements))
        .route("/schedules", get(schedules))
        .route("/schedules/{id}", post(edit_schedule))
        .route("/schedules/{id}/pause", post(pause))
        .route("/schedules/{id}/resume", post(resume))
        .route("/audit", get(audit_page))
}

/// A logged-in visitor.
struct Session {
    who: Who,
    csrf: String,
}

/// The logged-in session, or the redirect to the login page (a Response
/// is what axum handlers return, so it is not boxed).
#[allow(clippy::result_large_err)]
fn session(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    let token = auth::cookie(headers, auth::COOKIE).unwrap_or("");
    match state.tokens.check(Some(token)) {
        Some(who) => Ok(Session {
            who,
            csrf: Tokens::csrf_for(token),
        }),
        None => Err(Redirect::to("/login").into_response()),
    }
}

fn page(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {e}"),
        )
            .into_response(),
    }
}

fn fail(e: ApiError) -> Response {
    let body = format!(
        "<!doctype html><title>error</title><h1>{}</h1><p>{}</p><p><a href=\"/\">back</a></p>",
        e.status,
        askama_escape(&e.message)
    );
    (e.status, Html(body)).into_response()
}

fn askama_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A form post: a session with write rights and the right CSRF token;
/// the attempt is audited either way.
async fn change(
    state: &AppState,
    headers: &HeaderMap,
    remote: SocketAddr,
    form: &HashMap<String, String>,
    action: &str,
) -> Result<Session, Response> {
    let s = session(state, headers)?;
    let given = form.get("csrf").map_or(&b""[..], |c| c.as_bytes());
    let detail = serde_json::json!(form
        .iter()
        .filter(|(k, _)| *k != "csrf")
        .collect::<HashMap<_, _>>());
    let refused = if !bool::from(given.ct_eq(s.csrf.as_bytes())) {
        Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong; reload the page",
        ))
    } else if !s.who.can_write {
        Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "the read-only token cannot change anything",
        ))
    } else {
        None
    };
    let status = refused.as_ref().map_or(StatusCode::SEE_OTHER, |e| e.status);
    auth::record(
        state,
        s.who.name,
        &format!("console: {action}"),
        &detail,
        &remote.to_string(),
        status,
    )
    .await;
    match refused {
        Some(e) => Err(fail(e)),
        None => Ok(s),
    }
}

async fn login_page() -> Response {
    page(views::Login { error: None })
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let token = f.get("token").map(|t| t.trim()).unwrap_or("");
    let Some(who) = state
        .tokens
        .check(Some(token))
        .filter(|_| !token.is_empty() || state.tokens.is_open())
    else {
        auth::record(
            &state,
            "unknown",
            "console: log in",
            &serde_json::json!({}),
            &remote.to_string(),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        return (
            StatusCode::UNAUTHORIZED,
            page(views::Login {
                error: Some("That token is not valid.".into()),
            }),
        )
            .into_response();
    };
    auth::record(
        &state,
        who.name,
        "console: log in",
        &serde_json::json!({}),
        &remote.to_string(),
        StatusCode::SEE_OTHER,
    )
    .await;
    let cookie = format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/",
        auth::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

type Q = Query<HashMap<String, String>>;

async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match dashboard_page(&state, s).await {
        Ok(r) | Err(r) => r,
    }
}

async fn dashboard_page(state: &AppState, s: Session) -> Result<Response, Response> {
    let c = state.pool.get().await.map_err(|e| fail(e.into()))?;
    let executions = crate::jobs::history::recent(&c, 10)
        .await
        .map_err(|e| fail(e.into()))?;
    let last_settled: Option<chrono::NaiveDate> = c
        .query_one("SELECT max(day) FROM settled_day", &[])
        .await
        .map_err(|e| fail(ApiError::bad(e.to_string())))?
        .get(0);
    let schedules = store::list(&c).await.map_err(|e| fail(e.into()))?;
    let now = state.scheduler.clock.now();
    let mut attention = Vec::new();
    let mut next: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    for sc in &schedules {
        if sc.paused {
            attention.push(format!(
                "Schedule {} is paused: {}",
                sc.name,
                sc.paused_reason.as_deref().unwrap_or("")
            ));
        } else if let Some(t) = super::schedule::next_fire(sc, now) {
            if next.as_ref().is_none_or(|(n, _)| t < *n) {
                next = Some((t, sc.name.clone()));
            }
        }
    }
    for e in executions
        .iter()
        .filter(|e| e.status == "FAILED" || e.status == "ABANDONED")
        .take(3)
    {
        attention.push(format!(
            "Execution {} ({}) {}: {}",
            e.execution_id,
            e.params,
            e.status,
            e.error.as_deref().unwrap_or("")
        ));
    }
    let tzs = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono_tz::Asia::Seoul)
            .format("%Y-%m-%d %H:%M:%S KST")
            .to_string()
    };
    Ok(page(views::Dashboard {
        who: s.who.name.into(),
        csrf: s.csrf,
        last_settled: last_settled.map(|d| d.to_string()),
        next_run: next.map(|(t, n)| format!("{} ({n})", tzs(t))),
        in_flight: state.runs.running(),
        attention,
        executions,
    }))
}

async fn executions(State(state): State<AppState>, headers: HeaderMap, Query(q): Q) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let status = q.get("status").cloned().unwrap_or_default().to_uppercase();
    let rows = match state.pool.get().await {
        Ok(c) => crate::jobs::history::recent(&c, if status.is_empty() { 100 } else { 5000 }).await,
        Err(e) => return fail(e.into()),
    };
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return fail(e.into()),
    };
    if !status.is_empty() {
        rows.retain(|r| r.status == status);
        rows.truncate(100);
    }
    let statuses = vec!["RUNNING", "COMPLETED", "FAILED", "STOPPED", "ABANDONED"];
    page(views::Executions {
        who: s.who.name.into(),
        csrf: s.csrf,
        status,
        statuses,
        executions: rows,
    })
}

async fn execution(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match execution_page(&state, s, &id).await {
        Ok(r) => r,
        Err(e) => fail(e),
    }
}

async fn execution_page(state: &AppState, s: Session, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let c = state.pool.get().await?;
    let st = crate::jobs::history::status(&c, id).await?;
    let summary: Option<serde_json::Value> = c
        .query_one(
            "SELECT summary FROM job_execution WHERE execution_id = $1",
            &[&id],
        )
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?
        .get(0);
    let running = matches!(st.execution.status.as_str(), "RUNNING" | "STARTING");
    Ok(page(views::Execution {
        who: s.who.name.into(),
        csrf: s.csrf,
        running,
        progress: state.runs.progress(id),
        phases: summary.as_ref().map(views::phase_bars).unwrap_or_default(),
        partitions: st.partitions,
        rejects: st.rejects_by_reason,
        sample: st.reject_sample,
        e: st.execution,
    }))
}

async fn stop(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = change(
        &state,
        &headers,
        remote,
        &f,
        &format!("stop execution {id}"),
    )
    .await
    {
        return r;
    }
    let Ok(n) = parse_id(&id) else {
        return fail(ApiError::bad("bad id"));
    };
    match state.settle.stop(n).await {
        Ok(_) => Redirect::to(&format!("/executions/{n}")).into_response(),
        Err(e) => fail(e.into()),
    }
}

async fn restart(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = change(
        &state,
        &headers,
        remote,
        &f,
        &format!("restart execution {id}"),
    )
    .await
    {
        return r;
    }
    let result = async {
        let n = parse_id(&id)?;
        let st = crate::jobs::history::status(&*state.pool.get().await?, n).await?;
        let started = state
            .runs
            .start(&RunAsk::new(api::requested_of(&st.execution.params)?))
            .await?;
        Ok::<_, ApiError>(started.execution_id)
    }
    .await;
    match result {
        Ok(n) => Redirect::to(&format!("/executions/{n}")).into_response(),
        Err(e) => fail(e),
    }
}

async fn run_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session(&state, &headers) {
        Ok(s) => page(run_view(s, None, &state)),
        Err(r) => r,
    }
}

fn run_view(s: Session, error: Option<String>, state: &AppState) -> views::Run {
    let today = state
        .scheduler
        .clock
        .now()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .date_naive();
    let yesterday = today.pred_opt().unwrap_or(today);
    views::Run {
        who: s.who.name.into(),
        csrf: s.csrf,
        error,
        default_day: yesterday.to_string(),
    }
}

fn run_body(f: &HashMap<String, String>) -> api::RunBody {
    let get = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    let mut b = api::RunBody {
        force: Some(f.contains_key("force")),
        ..Default::default()
    };
    match f.get("what").map(String::as_str) {
        Some("all") => b.all = Some(true),
        Some("range") => (b.from, b.to) = (get("from"), get("to")),
        _ => b.date = get("date"),
    }
    b.partitions = get("partitions").and_then(|p| p.parse().ok());
    b.pause_after_partition_ms = get("pause_ms").and_then(|p| p.parse().ok());
    b
}

async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change(&state, &headers, remote, &f, "start a run").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let started = match run_body(&f).ask() {
        Ok(ask) => state.runs.start(&ask).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match started {
        Ok(st) => Redirect::to(&format!("/executions/{}", st.execution_id)).into_response(),
        Err(e) => (e.status, page(run_view(s, Some(e.message), &state))).into_response(),
    }
}

async fn settlements(State(state): State<AppState>, headers: HeaderMap, Query(q): Q) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match settlements_page(&state, s, q).await {
        Ok(r) => r,
        Err(e) => fail(e),
    }
}

async fn settlements_page(
    state: &AppState,
    s: Session,
    mut q: HashMap<String, String>,
) -> Result<Response, ApiError> {
    q.entry("period".into()).or_insert_with(|| "month".into());
    let sq = data::SettlementQuery::parse(&q)?;
    let tq = data::TopQuery::parse(&q)?;
    let c = state.pool.get().await?;
    let set = data::settlements(&c, &sq).await?;
    let top = data::top(&c, &tq).await?;
    Ok(page(views::Settlements {
        who: s.who.name.into(),
        csrf: s.csrf,
        period: sq.kind.as_str().into(),
        start: set["start"].as_str().unwrap_or("").into(),
        creator: sq.creator.map(|c| c.to_string()).unwrap_or_default(),
        charts: vec![
            views::chart("views", &top["top"]),
            views::chart("watch_seconds", &top["top"]),
        ],
        creators: views::money(&set["creators"], "creator_id"),
        videos: views::money(&set["videos"], "video_id"),
    }))
}

async fn schedules(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session(&state, &headers) {
        Ok(s) => schedules_page(&state, s, None).await,
        Err(r) => r,
    }
}

async fn schedules_page(state: &AppState, s: Session, error: Option<String>) -> Response {
    let c = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return fail(e.into()),
    };
    let list = match store::list(&c).await {
        Ok(l) => l,
        Err(e) => return fail(e.into()),
    };
    let mut cards = Vec::new();
    for sc in list {
        let fires = store::fires(&c, Some(sc.schedule_id), 10)
            .await
            .unwrap_or_default();
        let v = api::view(state, sc);
        let sc = v.schedule;
        cards.push(views::ScheduleCard {
            id: sc.schedule_id,
            name: sc.name,
            cron: sc.cron,
            timezone: sc.timezone,
            day_offset: sc.day_offset,
            catch_up: sc.catch_up,
            paused: sc.paused,
            paused_reason: sc.paused_reason,
            failures: sc.consecutive_failures,
            max_failures: sc.max_failures,
            last_fire: sc.last_fire_at.to_rfc3339(),
            next_fire: v.next_fire_at,
            would_run: v.would_run,
            fires,
        });
    }
    let code = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        code,
        page(views::Schedules {
            who: s.who.name.into(),
            csrf: s.csrf,
            error,
            schedules: cards,
        }),
    )
        .into_response()
}

async fn apply_edit(state: &AppState, s: Session, id: &str, e: ScheduleEdit) -> Response {
    let result = async {
        let id = parse_id(id)?;
        api::check_edit(&e)?;
        let c = state.pool.get().await?;
        store::update(&c, id, &e)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("there is no schedule {id}")))
    }
    .await;
    match result {
        Ok(_) => {
            state.scheduler_wake();
            Redirect::to("/schedules").into_response()
        }
        Err(err) => schedules_page(state, s, Some(err.message)).await,
    }
}

async fn edit_schedule(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let s = match change(&state, &headers, remote, &f, &format!("edit schedule {id}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let get = |k: &str| {
        f.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let num = |k: &str| get(k).map(|v| v.parse::<i32>().unwrap_or(-1));
    let e = ScheduleEdit {
        cron: get("cron"),
        timezone: get("timezone"),
        catch_up: get("catch_up"),
        day_offset: num("day_offset"),
        max_failures: num("max_failures"),
        ..Default::default()
    };
    apply_edit(&state, s, &id, e).await
}

async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    match change(
        &state,
        &headers,
        remote,
        &f,
        &format!("pause schedule {id}"),
    )
    .await
    {
        Ok(s) => {
            apply_edit(
                &state,
                s,
                &id,
                ScheduleEdit {
                    paused: Some(true),
                    ..Default::default()
                },
            )
            .await
        }
        Err(r) => r,
    }
}

async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    match change(
        &state,
        &headers,
        remote,
        &f,
        &format!("resume schedule {id}"),
    )
    .await
    {
        Ok(s) => {
            apply_edit(
                &state,
                s,
                &id,
                ScheduleEdit {
                    paused: Some(false),
                    ..Default::default()
                },
            )
            .await
        }
        Err(r) => r,
    }
}

async fn audit_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let entries = match state.pool.get().await {
        Ok(c) => store::audit_log(&c, 200).await.unwrap_or_default(),
        Err(e) => return fail(e.into()),
    };
    page(views::Audit {
        who: s.who.name.into(),
        csrf: s.csrf,
        entries,
    })
}
