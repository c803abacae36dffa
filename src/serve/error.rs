//! The server's error answer: a status and a JSON body `{"error": ...}`.
//! Every handler returns it instead of panicking on bad input.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
}

/// Library errors by kind: a held lock is a conflict naming its holder, a
/// refused run is unprocessable with its facts, a missing execution is 404,
/// the database being away is 503.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        match &e {
            Error::Locked { holder } => ApiError {
                status: StatusCode::CONFLICT,
                message,
                extra: Some(serde_json::json!({ "holder": holder })),
            },
            Error::Refused(r) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message,
                extra: serde_json::to_value(r)
                    .ok()
                    .map(|r| serde_json::json!({ "refusal": r })),
            },
            Error::Usage(m) if m.starts_with("there is no execution") => {
                ApiError::not_found(message)
            }
            Error::Usage(_) => ApiError::bad(message),
            e if e.is_environment() => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database is not reachable: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;
