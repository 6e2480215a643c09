//! Every 4xx/5xx body is `{"error":"<code>","field":<name or null>,"rule":"<sentence>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::event::Invalid;
use crate::group_commit::SubmitError;

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
