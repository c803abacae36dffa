//! Who is calling: a bearer token (or the console's cookie holding it),
//! compared in constant time on SHA-256 digests so neither its content
//! nor its length leaks through timing. The admin token may change
//! things; the read-only token may only read. State-changing calls are
//! written to the audit log, with who, what, when and from where.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// The cookie the console keeps the token in (HttpOnly).
pub const COOKIE: &str = "settle_token";

/// Bodies the audit log keeps a copy of are small JSON; larger are refused.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct Tokens {
    admin: Option<[u8; 32]>,
    read: Option<[u8; 32]>,
    /// `--insecure-no-auth`: everyone is admin (loopback only).
    open: bool,
}

/// The caller, once known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    pub name: &'static str,
    pub can_write: bool,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Tokens {
    pub fn new(admin: Option<&str>, read: Option<&str>, open: bool) -> Tokens {
        Tokens {
            admin: admin.map(digest),
            read: read.map(digest),
            open,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Who holds `token`, if anyone.
    pub fn check(&self, token: Option<&str>) -> Option<Who> {
        if self.open {
            return Some(Who {
                name: "anonymous",
                can_write: true,
            });
        }
        let d = digest(token?);
        let is = |t: &Option<[u8; 32]>| t.is_some_and(|t| bool::from(t.ct_eq(&d)));
        if is(&self.admin) {
            Some(Who {
                name: "admin",
                can_write: true,
            })
        } else if is(&self.read) {
            Some(Who {
                name: "read-only",
                can_write: false,
            })
        } else {
            None
        }
    }

    /// The console's CSRF token for a session: derived from its token, so it
    /// needs no server state and no other site can know it.
    pub fn csrf_for(token: &str) -> String {
        hex::encode(&Sha256::digest(format!("settle-csrf:{token}").as_bytes())[..16])
    }
}

pub fn bearer(req: &Request<Body>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn remote(req: &Request<Body>) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".into(), |c| c.0.to_string())
}

/// `/api`: a valid token, write rights for anything but GET, and an audit
/// entry for every state-changing call (kept even when it was refused).
pub async fn api_guard(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let who = state.tokens.check(bearer(&req));
    let Some(who) = who else {
        let msg = if bearer(&req).is_some() {
            "the token is not valid"
        } else {
            "missing Authorization: Bearer <token>"
        };
        return ApiError::unauthorized(msg).into_response();
    };
    let changes = req.method() != Method::GET && req.method() != Method::HEAD;
    if !changes {
        let mut req = req;
        req.extensions_mut().insert(who);
        return next.run(req).await;
    }
    let remote = remote(&req);
    let action = format!("{} {}", req.method(), req.uri().path());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 64 KiB",
        )
        .into_response();
    };
    let detail = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    let response = if who.can_write {
        let mut req = Request::from_parts(parts, Body::from(bytes));
        req.extensions_mut().insert(who);
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "the read-only token cannot change anything",
        )
        .into_response()
    };
    record(
        &state,
        who.name,
        &action,
        &detail,
        &remote,
        response.status(),
    )
    .await;
    response
}

/// Writes an audit entry; a failure to is logged, not hidden.
pub async fn record(
    state: &AppState,
    who: &str,
    action: &str,
    detail: &serde_json::Value,
    remote: &str,
    status: StatusCode,
) {
    let result = match state.pool.get().await {
        Ok(c) => {
            super::store::audit(&c, who, action, detail, remote, i32::from(status.as_u16())).await
        }
        Err(e) => Err(crate::error::Error::Tool(e.to_string())),
    };
    if let Err(e) = result {
        tracing::error!(action, "could not write the audit entry: {e}");
    }
}
