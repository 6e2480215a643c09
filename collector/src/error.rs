//! Every 4xx/5xx body is `{"error":"<code>","field":<name or null>,"rule":"<sentence>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::event::Invalid;
use crate::group_commit::SubmitError;

/// Why a `conflict` verdict was given (409 body and `/batch` result reason).
pub const CONFLICT_RULE: &str =
    "this event id is already stored with different content (user agent, lesson, level, question, answer or table); the stored event is kept";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Invalid,
    /// Seconds for `Retry-After` (503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, body: Invalid) -> Self {
        ApiError { status, body, retry_after: None }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, Invalid::with_code("not_found", None, "no such route"))
    }

    /// 409: the event id is already stored with different content; the stored row is
    /// kept. Final: a retry cannot succeed.
    pub fn conflict() -> Self {
        Self::new(StatusCode::CONFLICT, Invalid::with_code("conflict", None, CONFLICT_RULE))
    }

    /// The database refused this event's values (`rule` says why); `status` is 422 on
    /// the SDK routes, 404 on the legacy GET (as every invalid value there).
    pub fn rejected(status: StatusCode, rule: &str) -> Self {
        Self::new(status, Invalid::with_code("invalid", None, rule))
    }

    /// 503 + `Retry-After`: the caller should try again later with the same event id.
    pub fn unavailable(err: &SubmitError, retry_after: u64) -> Self {
        let (code, rule) = match err {
            SubmitError::QueueFull => ("busy", "the collector is at capacity; retry later"),
            SubmitError::ShuttingDown => ("shutting_down", "the collector is restarting; retry later"),
            SubmitError::Timeout(_) => ("timeout", "the database did not answer in time; retry later"),
            SubmitError::Store(_) => ("unavailable", "the database is unavailable; retry later"),
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Invalid::with_code(code, None, rule),
            retry_after: Some(retry_after),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(&self.body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
