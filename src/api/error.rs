//! API errors: an HTTP status and a JSON body `{"code", "detail"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::log::{AppendError, LogError};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "detail": self.detail})),
        )
            .into_response()
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        let (status, code) = match &e {
            LogError::UnknownStream(_) => (StatusCode::NOT_FOUND, "unknown_stream"),
            LogError::OutOfRange { .. } => (StatusCode::BAD_REQUEST, "out_of_range"),
            LogError::BeyondHead { .. } => (StatusCode::BAD_REQUEST, "beyond_head"),
            LogError::Corrupt(..) => (StatusCode::INTERNAL_SERVER_ERROR, "ledger_corrupt"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> ApiError {
        let (status, code) = match &e {
            AppendError::Conflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            AppendError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            AppendError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
            _ => (StatusCode::BAD_REQUEST, "invalid_event"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
