//! HTTP routes (see the table in docs/DESIGN.md). Handlers only translate HTTP to
//! events and outcomes to status codes; writing is [`GroupCommit`]'s job.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;
use uuid::Uuid;

use crate::cors::{self, OriginList};
use crate::error::ApiError;
use crate::event::{self, BatchItem, Invalid, Outcome, Table};
use crate::group_commit::{GroupCommit, SubmitError};
use crate::metrics::Metrics;
use crate::validate::{Admitted, Rules};

/// Most events in one `/batch` request.
pub(crate) const MAX_BATCH_EVENTS: usize = 500;
/// Largest `/batch` body.
pub(crate) const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The only routes that read a request body (see [`crate::limits::guard`]); every
/// other route refuses a body unread with 413.
pub(crate) const BODY_ROUTES: &[&str] = &["/batch", "/test/batch"];

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub(crate) rules: Rules,
    pub(crate) commit: GroupCommit,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) retry_after_secs: u64,
    /// `--allow-origin` (SDK routes, `/sdk/`, the rest); `None`: no CORS headers.
    pub(crate) cors: Option<OriginList>,
    /// `--legacy-allow-origin` (legacy GET routes); `*` unless restricted.
    pub(crate) legacy_cors: OriginList,
    /// False with `--admin-bind`: `/metrics` is then served on the admin listener only.
    pub(crate) metrics_public: bool,
    pub(crate) sdk_dir: Option<PathBuf>,
    /// Rate limit, header size and body deadline (see [`crate::limits::guard`]).
    pub(crate) limits: Arc<crate::limits::RequestLimits>,
    /// Set on SIGTERM: /healthz answers 503 so balancers stop sending new requests
    /// while the collector still serves (see `--shutdown-drain-ms`).
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    fn unavailable(&self, err: &SubmitError) -> ApiError {
        ApiError::unavailable(err, self.retry_after_secs)
    }
}

/// Parse `--allow-origin` values (`None` when the list is empty; see [`crate::cors`]).
pub(crate) fn cors_origins(origins: &[String]) -> anyhow::Result<Option<OriginList>> {
    OriginList::parse(origins, "allow-origin")
}

/// Parse `--legacy-allow-origin` values; none given means `*` (see [`crate::cors`]).
pub(crate) fn legacy_cors_origins(origins: &[String]) -> anyhow::Result<OriginList> {
    Ok(OriginList::parse(origins, "legacy-allow-origin")?.unwrap_or_else(OriginList::any))
}

/// Every route of the collector, with metrics, CORS and the SDK files.
///
/// What a request meets, outermost first; each layer wraps every answer of the layers
/// inside it, rejections included (tests/rejections.rs checks what each rejection gets):
///
/// 1. `with_response_headers`: tracing and `X-Content-Type-Options: nosniff`, on
///    every answer.
/// 2. CORS, by request kind (`cors::is_legacy_request`): `--legacy-allow-origin` for
///    the legacy GETs, `--allow-origin` for the rest. Every answer below gets its CORS
///    headers, rejections included, so a page can read a 429 or 503 and its
///    `Retry-After`. Preflights are answered here: not counted, not rate limited.
/// 3. `count_and_limit`: counts every answer below by route, method and status
///    (`hourofci_http_requests_total`), and refuses an over-long request target (414).
/// 4. `limits::guard`: the per-client rate (429, or 503 `busy` when the limiter
///    is full), the header size (431), then the body: refused unread on routes that
///    take none (413), else read whole within the body budget (503/429) and the body
///    deadline (408).
/// 5. The route's handler (400, 404, 409, 413, 415, 422, 503) or the fallbacks (404, 405).
pub fn router(state: AppState) -> Router {
    let mut app = Router::new().route("/", get(root)).route("/healthz", get(healthz));
    if state.metrics_public {
        app = app.route("/metrics", get(metrics));
    }
    let mut app = app
        .route("/batch", post(batch_production))
        .route("/test/batch", post(batch_test))
        .route(
            "/{ua}/{lesson}/{level}/{question}/{answer}",
            get(legacy_get).post(post_event),
        )
        .route(
            "/test/{ua}/{lesson}/{level}/{question}/{answer}",
            get(legacy_get).post(post_event),
        );
    if state.sdk_dir.is_some() {
        app = app.route("/sdk/{*path}", get(crate::sdk_files::serve));
    }
    let app = app
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Layers 2 to 4 (ServiceBuilder: the first is the outermost). Router::layer
        // wraps each route, and the fallbacks, after routing, so they see the matched
        // route.
        .layer(
            tower::ServiceBuilder::new()
                .layer(cors::ByKindLayer::new(state.cors.as_ref(), &state.legacy_cors))
                .layer(middleware::from_fn_with_state(state.clone(), count_and_limit))
                .layer(middleware::from_fn_with_state(
                    state.limits.clone(),
                    crate::limits::guard,
                )),
        )
        .with_state(state);
    // Layer 1.
    with_response_headers(app)
}

/// The outermost layers, around every answer (errors, 404, 429 and 503 from the limit
/// layers included): `X-Content-Type-Options: nosniff`, so no browser runs an answer
/// as a script or style whatever it contains, and request tracing. Add these last.
pub(crate) fn with_response_headers(app: Router) -> Router {
    app.layer(
        tower::ServiceBuilder::new()
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )),
    )
}

/// Longest request target accepted (longer gets 414): five segments of up to the
/// answer limit, percent-encoded at 3 bytes per byte, plus slack.
fn max_uri_bytes(rules: &Rules) -> usize {
    rules.max_answer_bytes * 3 + 4096
}

/// Count requests by route and status; refuse over-long request targets with 414.
async fn count_and_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let method = req.method().to_string();
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let res = if target_len > max_uri_bytes(&state.rules) {
        ApiError::UriTooLong {
            max_bytes: max_uri_bytes(&state.rules),
        }
        .into_response()
    } else {
        next.run(req).await
    };
    state.metrics.record_request(route, &method, res.status().as_u16());
    res
}

fn route_label(matched: Option<&str>) -> &'static str {
    match matched {
        Some("/") => "root",
        Some("/healthz") => "healthz",
        Some("/metrics") => "metrics",
        Some("/batch") | Some("/test/batch") => "batch",
        Some(p) if p.starts_with("/sdk") => "sdk",
        Some(p) if p.ends_with("{answer}") => "event",
        _ => "unmatched",
    }
}

async fn root() -> &'static str {
    "Hello World!"
}

pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return state.unavailable(&SubmitError::ShuttingDown).into_response();
    }
    match state.commit.health().await {
        Ok(()) => "ok".into_response(),
        Err(e) => {
            if let SubmitError::Store(e) = &e {
                tracing::warn!("health check failed: {e}");
            }
            state.unavailable(&e).into_response()
        }
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The original API: GET writes a row with no id; success is 200 `null`, every
/// invalid value is 404 (as the Flask service answered). `HEAD` (link checkers,
/// prefetchers) gets the same status and headers but never writes.
async fn legacy_get(State(state): State<AppState>, method: Method, uri: Uri) -> Result<Response, ApiError> {
    let values = match event::parse_event_path(uri.path()) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(ApiError::LegacyInvalid(e)),
        None => return Err(ApiError::NotFound),
    };
    let event = match state.rules.admit(values.into_event(None, None, None)) {
        Ok(event) => event,
        Err(e) => {
            state.metrics.invalid.inc();
            return Err(ApiError::LegacyInvalid(e));
        }
    };
    if method == Method::HEAD {
        return Ok(([(header::CONTENT_TYPE, "application/json")], "null").into_response());
    }
    let outcomes = state
        .commit
        .submit(vec![event])
        .await
        .map_err(|e| state.unavailable(&e))?;
    if let Some(Outcome::Rejected(rule)) = outcomes.first() {
        return Err(ApiError::LegacyInvalid(Invalid::rejected(rule)));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], "null").into_response())
}

#[derive(Serialize)]
struct EventReply {
    id: Uuid,
    status: &'static str,
}

/// An optional request header, parsed; one that is present but unreadable is 400
/// `bad_header` with `rule`.
fn parsed_header<T>(
    headers: &HeaderMap,
    name: &'static str,
    rule: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    let bad = || ApiError::BadHeader { header: name, rule };
    headers
        .get(name)
        .map(|v| v.to_str().ok().and_then(parse).ok_or_else(bad))
        .transpose()
}

/// One event with its id: 201 when written, 200 when that id was already stored with
/// the same content, 409 when with different content, 422 when the database refused it.
async fn post_event(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let required = ApiError::BadHeader {
        header: "Idempotency-Key",
        rule: "the Idempotency-Key header (the event's UUID) is required",
    };
    let key_rule = "Idempotency-Key must be a UUID";
    let id = parsed_header(&headers, "Idempotency-Key", key_rule, |k| {
        Uuid::parse_str(k.trim()).ok()
    })?
    .ok_or(required)?;
    let id = event::check_event_id(id).map_err(ApiError::Invalid)?;
    let client_time = parsed_header(
        &headers,
        "X-Client-Time",
        "X-Client-Time must be an RFC 3339 timestamp, e.g. 2026-11-28T07:31:02.123Z",
        |t| event::parse_client_time(t).ok(),
    )?;
    let values = match event::parse_event_path(uri.path()) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(ApiError::Invalid(e)),
        None => return Err(ApiError::NotFound),
    };
    let learner_rule = "X-Learner-Id must be a UUID other than the nil UUID";
    let learner_id = parsed_header(&headers, "X-Learner-Id", learner_rule, |t| {
        event::parse_learner_id(t).ok()
    })?;
    let event = match state.rules.admit(values.into_event(Some(id), client_time, learner_id)) {
        Ok(event) => event,
        Err(e) => {
            state.metrics.invalid.inc();
            return Err(ApiError::Invalid(e));
        }
    };
    let outcomes = state
        .commit
        .submit(vec![event])
        .await
        .map_err(|e| state.unavailable(&e))?;
    match outcomes.first() {
        Some(Outcome::Written) => Ok((StatusCode::CREATED, Json(EventReply { id, status: "written" })).into_response()),
        Some(Outcome::Conflict) => Err(ApiError::Conflict),
        Some(Outcome::Rejected(rule)) => Err(ApiError::Invalid(Invalid::rejected(rule))),
        _ => Ok((
            StatusCode::OK,
            Json(EventReply {
                id,
                status: "duplicate",
            }),
        )
            .into_response()),
    }
}

#[derive(Serialize, Debug)]
struct BatchResult {
    id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Debug)]
struct BatchReply {
    results: Vec<BatchResult>,
}

async fn batch_production(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchReply>, ApiError> {
    batch(state, Table::Production, headers, body).await
}

async fn batch_test(state: State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<BatchReply>, ApiError> {
    batch(state, Table::Test, headers, body).await
}

/// Many events in one request, all committed in one group. Each event gets its own
/// result, in request order; invalid events do not stop the others.
async fn batch(
    State(state): State<AppState>,
    table: Table,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchReply>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = || ApiError::BatchTooLarge {
        max_bytes: MAX_BATCH_BYTES,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|_| too_large())?;
    let request = event::parse_batch(&bytes, MAX_BATCH_EVENTS, table).map_err(ApiError::Invalid)?;
    state.metrics.client_dropped.add(request.dropped);

    let mut results: Vec<BatchResult> = Vec::with_capacity(request.events.len());
    let mut pending: Vec<(usize, Admitted)> = Vec::new();
    for item in request.events {
        let checked: Result<Admitted, (String, Invalid)> = match item {
            BatchItem::Event(e) => {
                let id = e.id.map(|i| i.to_string()).unwrap_or_default();
                state.rules.admit(e).map_err(|reason| (id, reason))
            }
            BatchItem::Unreadable { id, reason } => Err((id, reason)),
        };
        match checked {
            Ok(e) => {
                results.push(BatchResult {
                    id: e.event().id.map(|i| i.to_string()).unwrap_or_default(),
                    status: "pending",
                    reason: None,
                });
                pending.push((results.len() - 1, e));
            }
            Err((id, reason)) => {
                state.metrics.invalid.inc();
                results.push(BatchResult {
                    id,
                    status: "invalid",
                    reason: Some(reason.describe()),
                });
            }
        }
    }
    let (slots, events): (Vec<usize>, Vec<Admitted>) = pending.into_iter().unzip();
    let outcomes = state.commit.submit(events).await.map_err(|e| state.unavailable(&e))?;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        results[slot].status = outcome.as_str();
        results[slot].reason = match outcome {
            Outcome::Conflict => Some(crate::error::CONFLICT_RULE.to_string()),
            Outcome::Rejected(rule) => Some(rule.to_string()),
            Outcome::Written | Outcome::Duplicate => None,
        };
    }
    Ok(Json(BatchReply { results }))
}
