//! `settle serve`: one process with an HTTP server (the JSON API, the web
//! console, `/metrics` and `/health`) and the scheduler, all on the
//! library's front door. It may log (tracing); the CLI only starts it.

pub mod api;
pub mod auth;
pub mod console;
pub mod data;
pub mod error;
pub mod metrics;
pub mod runs;
pub mod schedule;
pub mod store;
mod views;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::Settle;
use crate::error::{Error, Result};
pub use schedule::{Clock, ManualClock, SystemClock};

/// How the server is set up (the CLI's flags, checked).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    pub admin_token: Option<String>,
    pub read_token: Option<String>,
    pub insecure_no_auth: bool,
    /// On shutdown, wait for a running execution instead of stopping it.
    pub drain: bool,
    /// Run the scheduler in this process.
    pub scheduler: bool,
}

impl ServeConfig {
    /// Refuses set-ups that would expose the API: no token at all, or an
    /// open API on an address other machines can reach.
    pub fn check(&self) -> Result<()> {
        let loopback = self.bind.ip().is_loopback();
        let has_token = self.admin_token.is_some() || self.read_token.is_some();
        if self.insecure_no_auth && !loopback {
            return Err(Error::Usage(format!(
                "--insecure-no-auth is allowed on a loopback address only, not {}",
                self.bind
            )));
        }
        if !self.insecure_no_auth && !has_token {
            return Err(Error::Usage(
                "settle serve needs a token: --token-file FILE or SETTLE_TOKEN (or --insecure-no-auth on loopback)".into(),
            ));
        }
        if self.admin_token.as_deref().is_some_and(str::is_empty)
            || self.read_token.as_deref().is_some_and(str::is_empty)
        {
            return Err(Error::Usage("a token may not be empty".into()));
        }
        Ok(())
    }
}

pub struct Inner {
    pub settle: Arc<Settle>,
    pub pool: deadpool_postgres::Pool,
    pub runs: Arc<runs::RunManager>,
    pub scheduler: Arc<schedule::Scheduler>,
    pub tokens: auth::Tokens,
    pub scheduler_on: bool,
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Makes the scheduler look at its schedules again (after an edit).
    pub fn scheduler_wake(&self) {
        if let Some(n) = self.scheduler.clock.changed() {
            n.notify_one();
        }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "settle serve",
    description = "The admin API of settle: runs, executions, schedules, results. Every route needs Authorization: Bearer <token>."
))]
struct ApiDoc;

/// The API routes and their OpenAPI document.
pub fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::post_runs))
        .routes(routes!(api::list_executions))
        .routes(routes!(api::get_execution))
        .routes(routes!(api::stop_execution))
        .routes(routes!(api::restart_execution))
        .routes(routes!(api::list_schedules, api::create_schedule))
        .routes(routes!(api::patch_schedule))
        .routes(routes!(api::list_fires))
        .routes(routes!(api::list_audit))
        .routes(routes!(api::settlements))
        .routes(routes!(api::top))
        .split_for_parts()
}

fn app(state: AppState) -> Router {
    let (api, doc) = api_router();
    let doc = Arc::new(doc);
    let api = api
        .route(
            "/api/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::api_guard,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .merge(console::router())
        .merge(api)
        .fallback(|| async { error::ApiError::not_found("no such page or API route") })
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    let db = match state.pool.get().await {
        Ok(c) => c
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let scheduler = !state.scheduler_on || state.scheduler.is_alive();
    let ok = db.is_ok() && scheduler;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": db.as_ref().map_or_else(|e| e.as_str(), |_| "ok"),
        "scheduler": if !state.scheduler_on { "off" } else if scheduler { "alive" } else { "stopped" },
        "scheduler_passes": state.scheduler.ticks(),
        "scheduler_clock": state.scheduler.last_pass().map(|t| t.to_rfc3339()),
        "runs_in_flight": state.runs.running(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let now = state.scheduler.clock.now();
    if let Ok(c) = state.pool.get().await {
        if let Err(e) = metrics::refresh_gauges(&c, now).await {
            tracing::warn!("metrics: {e}");
        }
        if let Ok(list) = store::list(&c).await {
            for s in list {
                let labels = [("schedule", s.name.clone())];
                ::metrics::gauge!("settle_schedule_paused", &labels).set(if s.paused {
                    1.0
                } else {
                    0.0
                });
                if let Some(t) = schedule::next_fire(&s, now).filter(|_| !s.paused) {
                    ::metrics::gauge!("settle_next_fire_timestamp_seconds", &labels)
                        .set(t.timestamp() as f64);
                }
            }
        }
    }
    let text = metrics::handle().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A started server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Arc<Notify>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    scheduler_task: Option<tokio::task::JoinHandle<()>>,
    drain: bool,
}

/// Starts the server and (unless turned off) the scheduler.
pub async fn start(settle: Settle, cfg: &ServeConfig, clock: Arc<dyn Clock>) -> Result<Server> {
    cfg.check()?;
    if cfg.insecure_no_auth {
        tracing::warn!("--insecure-no-auth: the API on {} needs no token; anyone on this machine can run and stop settlement", cfg.bind);
    }
    let _ = metrics::handle();
    let settle = Arc::new(settle);
    let mgr = deadpool_postgres::Manager::from_config(
        settle.database().config().clone(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(mgr)
        .max_size(16)
        .build()
        .map_err(|e| Error::Tool(format!("could not build the connection pool: {e}")))?;
    let runs = Arc::new(runs::RunManager::new(settle.clone()));
    let scheduler = Arc::new(schedule::Scheduler::new(pool.clone(), runs.clone(), clock));
    let state = AppState(Arc::new(Inner {
        settle,
        pool,
        runs,
        scheduler: scheduler.clone(),
        tokens: auth::Tokens::new(
            cfg.admin_token.as_deref(),
            cfg.read_token.as_deref(),
            cfg.insecure_no_auth,
        ),
        scheduler_on: cfg.scheduler,
    }));
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| Error::io(format!("binding {}", cfg.bind), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let http = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async move { stopped.notified().await })
            .await
    });
    let scheduler_task = cfg.scheduler.then(|| tokio::spawn(scheduler.run()));
    tracing::info!(%addr, "settle serve listening");
    Ok(Server {
        addr,
        state,
        stop,
        http,
        scheduler_task,
        drain: cfg.drain,
    })
}

impl Server {
    pub fn scheduler(&self) -> &schedule::Scheduler {
        &self.state.scheduler
    }

    /// Stops the scheduler, stops (or with drain awaits) the runs in
    /// flight, then the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        self.state.scheduler.stop();
        self.state.runs.shutdown(self.drain).await;
        if let Some(t) = self.scheduler_task {
            let _ = t.await;
        }
        self.stop.notify_one();
        match self.http.await {
            Ok(r) => r.map_err(|e| Error::io("serving HTTP", e)),
            Err(e) => Err(Error::Tool(format!("the HTTP task failed: {e}"))),
        }
    }
}

/// Waits for SIGTERM or Ctrl-C (the command's end).
pub async fn terminated() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("listening for SIGTERM", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
