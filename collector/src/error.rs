//! Every error the collector answers, and the one place it is rendered
//! ([`IntoResponse`]): status, body `{"error":"<code>","field":<name or null>,"rule":"<sentence>"}`
//! and, for "retry later" answers, `Retry-After`.
//!
//! The codes are a contract (the SDK drops an event on `invalid`, `too_large` and
//! `conflict`, and retries the rest): [`ErrorCode`] is their home, docs/DESIGN.md
//! ("HTTP API") lists them for clients, and a test keeps the two in step.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::event::{Invalid, InvalidKind};
use crate::group_commit::SubmitError;

/// Why a `conflict` verdict was given (409 body and `/batch` result reason).
pub const CONFLICT_RULE: &str =
    "this event id is already stored with different content (user agent, lesson, level, question, answer or table); the stored event is kept";

/// The `error` field of an error body: the variant's name in snake case
/// (`TooLarge` is `too_large`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Invalid,
    TooLarge,
    Conflict,
    BadHeader,
    BadJson,
    BadBody,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    RateLimited,
    Busy,
    Timeout,
    ShuttingDown,
    Unavailable,
}

/// A refused request. Final answers (4xx but 408 and 429) mean the request as sent
/// can never succeed; after the others (408, 429, 503) a retry with the same event id
/// is safe, and 429 and 503 say when in `Retry-After`.
#[derive(Debug)]
pub enum ApiError {
    /// 404 `not_found`: no such route (or no such `/sdk/` file).
    NotFound,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 409 `conflict`: the event id is already stored with different content; the
    /// stored row is kept.
    Conflict,
    /// An event value or a batch body broke a rule: 422 `invalid`, 413 `too_large` or
    /// 400 `bad_json`, by its kind.
    Invalid(Invalid),
    /// Any invalid value on a legacy GET: 404 with the value's code, as the original
    /// Flask service answered.
    LegacyInvalid(Invalid),
    /// 400 `bad_header`: a header of the SDK's POST is missing or unreadable.
    BadHeader { header: &'static str, rule: &'static str },
    /// 415 `unsupported_media_type`: a batch that is not `application/json`.
    UnsupportedMediaType,
    /// 414 `too_large`: the request target is longer than `max_bytes`.
    UriTooLong { max_bytes: usize },
    /// 431 `too_large`: the request headers are larger than `max_bytes`.
    HeadersTooLarge { max_bytes: usize },
    /// 413 `too_large`: a batch body over the `/batch` limit, seen by its handler.
    BatchTooLarge { max_bytes: usize },
    /// 413 `too_large` (field `body`): a body over the limit, refused by the body guard.
    BodyTooLarge { max_bytes: usize },
    /// 413 `too_large` (field `body`): a body on a route that takes none, left unread.
    BodyNotTaken,
    /// 400 `bad_body`: the body broke off.
    BodyUnreadable,
    /// 408 `timeout`: the body did not arrive within `--body-timeout-secs`.
    BodyTimeout { after: Duration },
    /// 429 `rate_limited`: this client is over its request rate.
    RateLimited { retry_after: u64 },
    /// 429 `rate_limited` (field `body`): this client holds its share of body bytes.
    ClientBodyBytes { max_bytes: usize, retry_after: u64 },
    /// 503 `busy`: the write queue is full.
    QueueFull { retry_after: u64 },
    /// 503 `busy`: the rate limiter is full of clients that are all being limited.
    TooManyClients { retry_after: u64 },
    /// 503 `busy`: all clients together hold `--max-body-bytes-in-flight`.
    BodyBytes { retry_after: u64 },
    /// 503 `shutting_down`.
    ShuttingDown { retry_after: u64 },
    /// 503 `timeout`: no commit within `--db-timeout-ms`.
    DbTimeout { retry_after: u64 },
    /// 503 `unavailable`: the database failed.
    DbUnavailable { retry_after: u64 },
}

/// The JSON body of every error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorCode,
    field: Option<&'static str>,
    rule: Cow<'a, str>,
}

impl ApiError {
    /// 503 + `Retry-After` for a submission that got no outcome.
    pub fn unavailable(err: &SubmitError, retry_after: u64) -> Self {
        match err {
            SubmitError::QueueFull => ApiError::QueueFull { retry_after },
            SubmitError::ShuttingDown => ApiError::ShuttingDown { retry_after },
            SubmitError::Timeout(_) => ApiError::DbTimeout { retry_after },
            SubmitError::Store(_) => ApiError::DbUnavailable { retry_after },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::LegacyInvalid(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::Invalid(reason) => match reason.kind {
                InvalidKind::Value => StatusCode::UNPROCESSABLE_ENTITY,
                InvalidKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                InvalidKind::BadJson => StatusCode::BAD_REQUEST,
            },
            ApiError::BadHeader { .. } | ApiError::BodyUnreadable => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::BatchTooLarge { .. } | ApiError::BodyTooLarge { .. } | ApiError::BodyNotTaken => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } | ApiError::ClientBodyBytes { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueFull { .. }
            | ApiError::TooManyClients { .. }
            | ApiError::BodyBytes { .. }
            | ApiError::ShuttingDown { .. }
            | ApiError::DbTimeout { .. }
            | ApiError::DbUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Conflict => ErrorCode::Conflict,
            ApiError::Invalid(reason) | ApiError::LegacyInvalid(reason) => match reason.kind {
                InvalidKind::Value => ErrorCode::Invalid,
                InvalidKind::TooLarge => ErrorCode::TooLarge,
                InvalidKind::BadJson => ErrorCode::BadJson,
            },
            ApiError::BadHeader { .. } => ErrorCode::BadHeader,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::UriTooLong { .. }
            | ApiError::HeadersTooLarge { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::BodyNotTaken => ErrorCode::TooLarge,
            ApiError::BodyUnreadable => ErrorCode::BadBody,
            ApiError::BodyTimeout { .. } | ApiError::DbTimeout { .. } => ErrorCode::Timeout,
            ApiError::RateLimited { .. } | ApiError::ClientBodyBytes { .. } => ErrorCode::RateLimited,
            ApiError::QueueFull { .. } | ApiError::TooManyClients { .. } | ApiError::BodyBytes { .. } => {
                ErrorCode::Busy
            }
            ApiError::ShuttingDown { .. } => ErrorCode::ShuttingDown,
            ApiError::DbUnavailable { .. } => ErrorCode::Unavailable,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid(reason) | ApiError::LegacyInvalid(reason) => reason.field,
            ApiError::BadHeader { header, .. } => Some(header),
            ApiError::UnsupportedMediaType => Some("Content-Type"),
            ApiError::UriTooLong { .. } => Some("path"),
            ApiError::HeadersTooLarge { .. } => Some("headers"),
            ApiError::BodyTooLarge { .. }
            | ApiError::BodyNotTaken
            | ApiError::BodyUnreadable
            | ApiError::BodyTimeout { .. }
            | ApiError::ClientBodyBytes { .. } => Some("body"),
            _ => None,
        }
    }

    fn rule(&self) -> Cow<'_, str> {
        let text = |s: &'static str| Cow::Borrowed(s);
        match self {
            ApiError::NotFound => text("no such route"),
            ApiError::MethodNotAllowed => text("this route does not take that method"),
            ApiError::Conflict => text(CONFLICT_RULE),
            ApiError::Invalid(reason) | ApiError::LegacyInvalid(reason) => Cow::Borrowed(reason.rule.as_str()),
            ApiError::BadHeader { rule, .. } => text(rule),
            ApiError::UnsupportedMediaType => text("a batch must be sent as application/json"),
            ApiError::UriTooLong { max_bytes } => format!("the request path is longer than {max_bytes} bytes").into(),
            ApiError::HeadersTooLarge { max_bytes } => {
                format!("the request headers are larger than {max_bytes} bytes").into()
            }
            ApiError::BatchTooLarge { max_bytes } => {
                format!("a batch body is at most {max_bytes} bytes; split it").into()
            }
            ApiError::BodyTooLarge { max_bytes } => format!("the request body is larger than {max_bytes} bytes").into(),
            ApiError::BodyNotTaken => text("this route takes no request body; events with a body go to /batch"),
            ApiError::BodyUnreadable => text("the request body could not be read"),
            ApiError::BodyTimeout { after } => {
                format!("the request body did not arrive within {} s", after.as_secs()).into()
            }
            ApiError::RateLimited { retry_after } => {
                format!("too many requests from this address; retry after {retry_after} s with the same event id")
                    .into()
            }
            ApiError::ClientBodyBytes { max_bytes, .. } => format!(
                "this address already has {max_bytes} bytes of request bodies in flight; retry when they are answered"
            )
            .into(),
            ApiError::QueueFull { .. } => text("the collector is at capacity; retry later"),
            ApiError::TooManyClients { .. } => text("the collector is tracking as many clients as it can; retry later"),
            ApiError::BodyBytes { .. } => text("the collector holds as many request bodies as it may; retry later"),
            ApiError::ShuttingDown { .. } => text("the collector is restarting; retry later"),
            ApiError::DbTimeout { .. } => text("the database did not answer in time; retry later"),
            ApiError::DbUnavailable { .. } => text("the database is unavailable; retry later"),
        }
    }

    /// Seconds for `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::ClientBodyBytes { retry_after, .. }
            | ApiError::QueueFull { retry_after }
            | ApiError::TooManyClients { retry_after }
            | ApiError::BodyBytes { retry_after }
            | ApiError::ShuttingDown { retry_after }
            | ApiError::DbTimeout { retry_after }
            | ApiError::DbUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code(),
            field: self.field(),
            rule: self.rule(),
        };
        let mut res = (self.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, Option<String>, String) {
        let res = err.into_response();
        let retry = res
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, retry, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bodies_are_error_field_rule_in_that_order() {
        let (status, retry, body) = body_of(ApiError::Invalid(Invalid::too_large(
            Some("answer"),
            "must be at most 3 bytes",
        )))
        .await;
        assert_eq!((status, retry), (StatusCode::PAYLOAD_TOO_LARGE, None));
        assert_eq!(
            body,
            r#"{"error":"too_large","field":"answer","rule":"must be at most 3 bytes"}"#
        );
        let (status, retry, body) = body_of(ApiError::QueueFull { retry_after: 2 }).await;
        assert_eq!((status, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("2")));
        assert_eq!(
            body,
            r#"{"error":"busy","field":null,"rule":"the collector is at capacity; retry later"}"#
        );
        let (status, _, body) = body_of(ApiError::LegacyInvalid(Invalid::rejected("no"))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, r#"{"error":"invalid","field":null,"rule":"no"}"#)
        );
    }

    #[test]
    fn design_lists_every_code() {
        use ErrorCode as E;
        let all = [
            E::Invalid,
            E::TooLarge,
            E::Conflict,
            E::BadHeader,
            E::BadJson,
            E::BadBody,
            E::UnsupportedMediaType,
            E::NotFound,
            E::MethodNotAllowed,
            E::RateLimited,
            E::Busy,
            E::Timeout,
            E::ShuttingDown,
            E::Unavailable,
        ];
        let design = include_str!("../../docs/DESIGN.md");
        let codes = design
            .split("Error body, every 4xx/5xx")
            .nth(1)
            .expect("the error section of docs/DESIGN.md");
        let codes = &codes[..codes.find("\n\n").unwrap_or(codes.len())];
        for code in all {
            let code = serde_json::to_value(code).unwrap();
            let code = code.as_str().unwrap();
            assert!(
                codes.contains(&format!("`{code}`")),
                "docs/DESIGN.md does not list the code {code:?}"
            );
        }
    }
}
