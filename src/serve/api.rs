//! The JSON API under `/api`. Handlers check their input and answer 400
//! with a message rather than failing on it; the library does the work.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use super::runs::RunAsk;
use super::store::{self, ScheduleEdit};
use super::{data, schedule, AppState};
use crate::jobs::Requested;
use crate::rules::Day;

/// Largest `limit` a list accepts.
pub const MAX_LIMIT: i64 = 1000;
const STATUSES: [&str; 6] = [
    "STARTING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "STOPPED",
    "ABANDONED",
];

pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    q.map(|q| q.0)
        .map_err(|e| ApiError::bad(format!("bad query string: {e}")))
}

/// A JSON body, with a 400 naming what is wrong when it is not.
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))
}

pub fn parse_day(what: &str, s: &str) -> ApiResult<Day> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=2200).contains(&chrono::Datelike::year(d)))
        .map(Day::from_date)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "{what}: {s:?} is not a date (YYYY-MM-DD, 1970-2200)"
            ))
        })
}

pub fn parse_id(s: &str) -> ApiResult<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| ApiError::bad(format!("{s:?} is not an id (a positive integer)")))
}

pub fn parse_limit(p: &HashMap<String, String>, default: i64) -> ApiResult<i64> {
    match p.get("limit") {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad(format!("limit: {s:?} is not between 1 and {MAX_LIMIT}"))),
    }
}

/// What to run: one day, a range, or everything.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub date: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub all: Option<bool>,
    /// Settle again even if the instance already completed.
    pub force: Option<bool>,
    pub partitions: Option<u32>,
    /// Testing hook: pause after each partition (ms, at most 10 000).
    pub pause_after_partition_ms: Option<u64>,
}

impl RunBody {
    pub fn ask(&self) -> ApiResult<RunAsk> {
        let requested = match (&self.date, &self.from, &self.to, self.all) {
            (Some(d), None, None, None | Some(false)) => {
                let d = parse_day("date", d)?;
                Requested::Days(d, d)
            }
            (None, Some(f), Some(t), None | Some(false)) => {
                let (f, t) = (parse_day("from", f)?, parse_day("to", t)?);
                if f > t {
                    return Err(ApiError::bad(format!("from {f} is after to {t}")));
                }
                Requested::Days(f, t)
            }
            (None, None, None, Some(true)) => Requested::All,
            _ => return Err(ApiError::bad(
                "give exactly one of {\"date\": D}, {\"from\": D, \"to\": D} or {\"all\": true}",
            )),
        };
        if self.partitions.is_some_and(|p| !(1..=4096).contains(&p)) {
            return Err(ApiError::bad("partitions must be between 1 and 4096"));
        }
        let pause = self.pause_after_partition_ms.unwrap_or(0);
        if pause > 10_000 {
            return Err(ApiError::bad("pause_after_partition_ms is at most 10000"));
        }
        Ok(RunAsk {
            requested,
            force: self.force.unwrap_or(false),
            partitions: self.partitions,
            pause_after_partition_ms: pause,
        })
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RunStarted {
    pub execution_id: i64,
    /// True when the instance had completed before and nothing ran.
    pub already_completed: bool,
}

/// Starts a run and answers with its execution id once it has one.
pub async fn start(state: &AppState, ask: &RunAsk) -> ApiResult<Response> {
    let started = state.runs.start(ask).await?;
    let code = if started.already_completed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(RunStarted {
            execution_id: started.execution_id,
            already_completed: started.already_completed,
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/runs", request_body = RunBody,
    responses((status = 202, body = RunStarted), (status = 400), (status = 409, description = "another run holds the lock")))]
pub async fn post_runs(State(state): State<AppState>, bytes: Bytes) -> ApiResult<Response> {
    let ask = body::<RunBody>(&bytes)?.ask()?;
    start(&state, &ask).await
}

#[utoipa::path(get, path = "/api/executions", params(("status" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 400)))]
pub async fn list_executions(
    State(state): State<AppState>,
    q: Params,
) -> ApiResult<Json<serde_json::Value>> {
    let p = params(q)?;
    let limit = parse_limit(&p, 50)?;
    let status = match p.get("status").map(|s| s.to_uppercase()) {
        Some(s) if !STATUSES.contains(&s.as_str()) => {
            return Err(ApiError::bad(format!(
                "status: {s:?} is not one of {}",
                STATUSES.join(", ")
            )))
        }
        s => s,
    };
    let c = state.pool.get().await?;
    // The history is small; filter after reading a bounded window of it.
    let window = if status.is_some() { 5000 } else { limit };
    let mut rows = crate::jobs::history::recent(&c, window).await?;
    if let Some(s) = status {
        rows.retain(|r| r.status == s);
    }
    rows.truncate(limit as usize);
    Ok(Json(serde_json::json!({ "executions": rows })))
}

#[utoipa::path(get, path = "/api/executions/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 400), (status = 404)))]
pub async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let c = state.pool.get().await?;
    let status = crate::jobs::history::status(&c, id).await?;
    let mut v = serde_json::to_value(&status).map_err(|e| ApiError::bad(e.to_string()))?;
    v["status"] = serde_json::Value::String(status.execution.status.clone());
    v["progress"] = serde_json::to_value(state.runs.progress(id)).unwrap_or_default();
    Ok(Json(v))
}

#[utoipa::path(post, path = "/api/executions/{id}/stop", params(("id" = i64, Path)),
    responses((status = 202), (status = 409, description = "not running"), (status = 404)))]
pub async fn stop_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    match state.settle.stop(id).await? {
        crate::api::StopAnswer::Asked => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "execution_id": id, "asked": true })),
        )
            .into_response()),
        crate::api::StopAnswer::NotRunning(s) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("execution {id} is {s}; nothing to stop"),
        )),
    }
}

/// The range an execution was asked for, from its instance's key.
pub fn requested_of(params_key: &str) -> ApiResult<Requested> {
    if params_key == "all" {
        return Ok(Requested::All);
    }
    let bad = || ApiError::bad(format!("cannot restart parameters {params_key:?}"));
    let (f, t) = params_key
        .strip_prefix("from=")
        .and_then(|r| r.split_once(";to="))
        .ok_or_else(bad)?;
    Ok(Requested::Days(parse_day("from", f)?, parse_day("to", t)?))
}

#[utoipa::path(post, path = "/api/executions/{id}/restart", params(("id" = i64, Path)),
    responses((status = 202, body = RunStarted), (status = 404), (status = 409)))]
pub async fn restart_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let status = {
        let c = state.pool.get().await?;
        crate::jobs::history::status(&c, id).await?
    };
    let ask = RunAsk::new(requested_of(&status.execution.params)?);
    start(&state, &ask).await
}

/// A schedule with what the scheduler makes of it now.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: store::Schedule,
    pub next_fire_at: Option<String>,
    /// Days that would be settled at once if it ran (or resumed) now.
    pub would_run: Vec<String>,
}

pub fn view(state: &AppState, s: store::Schedule) -> ScheduleView {
    let now = state.scheduler.clock.now();
    let would_run = schedule::due_fires(&s, now)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| schedule::fire_day(&s, t).map(|d| d.to_string()))
        .collect();
    ScheduleView {
        next_fire_at: schedule::next_fire(&s, now).map(|t| t.to_rfc3339()),
        would_run,
        schedule: s,
    }
}

#[utoipa::path(get, path = "/api/schedules", responses((status = 200, body = [ScheduleView])))]
pub async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<Vec<ScheduleView>>> {
    let c = state.pool.get().await?;
    let list = store::list(&c).await?;
    Ok(Json(list.into_iter().map(|s| view(&state, s)).collect()))
}

pub fn check_edit(e: &ScheduleEdit) -> ApiResult<()> {
    if let Some(c) = &e.cron {
        schedule::parse_cron(c).map_err(ApiError::bad)?;
    }
    if let Some(tz) = &e.timezone {
        schedule::parse_tz(tz).map_err(ApiError::bad)?;
    }
    if e.catch_up
        .as_deref()
        .is_some_and(|c| c != "all" && c != "latest")
    {
        return Err(ApiError::bad("catch_up is \"all\" or \"latest\""));
    }
    if e.day_offset.is_some_and(|d| !(0..=366).contains(&d)) {
        return Err(ApiError::bad("day_offset is between 0 and 366"));
    }
    if e.max_failures.is_some_and(|n| !(1..=1000).contains(&n)) {
        return Err(ApiError::bad("max_failures is between 1 and 1000"));
    }
    if e.name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty() || n.len() > 100)
    {
        return Err(ApiError::bad("name is 1 to 100 characters"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/schedules", request_body = ScheduleEdit,
    responses((status = 201, body = ScheduleView), (status = 400)))]
pub async fn create_schedule(State(state): State<AppState>, bytes: Bytes) -> ApiResult<Response> {
    let e: ScheduleEdit = body(&bytes)?;
    check_edit(&e)?;
    let (Some(name), Some(cron)) = (&e.name, &e.cron) else {
        return Err(ApiError::bad("a new schedule needs a name and a cron"));
    };
    let c = state.pool.get().await?;
    let s = store::create(&c, &e, name, cron)
        .await
        .map_err(|err| match err {
            crate::error::Error::Db { .. } => ApiError::bad(format!(
                "could not create the schedule (is the name {name:?} taken?)"
            )),
            other => other.into(),
        })?;
    state.scheduler_wake();
    Ok((StatusCode::CREATED, Json(view(&state, s))).into_response())
}

#[utoipa::path(patch, path = "/api/schedules/{id}", params(("id" = i64, Path)), request_body = ScheduleEdit,
    responses((status = 200, body = ScheduleView), (status = 400), (status = 404)))]
pub async fn patch_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<ScheduleView>> {
    let id = parse_id(&id)?;
    let e: ScheduleEdit = body(&bytes)?;
    check_edit(&e)?;
    let c = state.pool.get().await?;
    let s = store::update(&c, id, &e)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no schedule {id}")))?;
    state.scheduler_wake();
    Ok(Json(view(&state, s)))
}

#[utoipa::path(get, path = "/api/schedules/{id}/fires", params(("id" = i64, Path), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [store::Fire])))]
pub async fn list_fires(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<Vec<store::Fire>>> {
    let id = parse_id(&id)?;
    let limit = parse_limit(&params(q)?, 100)?;
    let c = state.pool.get().await?;
    Ok(Json(store::fires(&c, Some(id), limit).await?))
}

#[utoipa::path(get, path = "/api/audit", params(("limit" = Option<i64>, Query)), responses((status = 200, body = [store::AuditEntry])))]
pub async fn list_audit(
    State(state): State<AppState>,
    q: Params,
) -> ApiResult<Json<Vec<store::AuditEntry>>> {
    let limit = parse_limit(&params(q)?, 100)?;
    let c = state.pool.get().await?;
    Ok(Json(store::audit_log(&c, limit).await?))
}

#[utoipa::path(get, path = "/api/settlements",
    params(("period" = String, Query), ("start" = Option<String>, Query), ("creator" = Option<i64>, Query), ("video" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 400)))]
pub async fn settlements(
    State(state): State<AppState>,
    q: Params,
) -> ApiResult<Json<serde_json::Value>> {
    let p = params(q)?;
    let query = data::SettlementQuery::parse(&p)?;
    let c = state.pool.get().await?;
    Ok(Json(data::settlements(&c, &query).await?))
}

#[utoipa::path(get, path = "/api/top",
    params(("period" = String, Query), ("start" = Option<String>, Query), ("metric" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 400)))]
pub async fn top(State(state): State<AppState>, q: Params) -> ApiResult<Json<serde_json::Value>> {
    let p = params(q)?;
    let query = data::TopQuery::parse(&p)?;
    let c = state.pool.get().await?;
    Ok(Json(data::top(&c, &query).await?))
}
