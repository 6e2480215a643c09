//! `hourofci-insights serve`: server-rendered pages (no JavaScript, no external
//! assets) and a JSON API over the answers, for an internal address. Every route but
//! the login form needs the token: a session cookie (HttpOnly, SameSite=Strict) set by
//! the login form, or `Authorization: Bearer TOKEN`. Tokens and sessions are compared
//! in constant time; wrong tokens are limited per client and globally ([`LoginLimits`],
//! 429 with Retry-After beyond). Every value is HTML-escaped by `maud`; the Content-Security-Policy
//! forbids scripts, so even a missed escape could run nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::overview::Overviews;
pub use crate::overview::{AnsweredBy, OverviewRow};
use crate::source::{self, AnswerRow, Filter, Order, ReadTx, Source, Table};

/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const COOKIE: &str = "hourofci_insights";
/// Answers per page of the question page's list.
const LIST_PAGE: i64 = 50;
/// Bars in the answer chart; the rest is "other".
const TOP_ANSWERS: usize = 10;

/// How many wrong tokens (login form or `Authorization: Bearer`) are allowed before
/// the answer is 429 with Retry-After, and how fast the allowance comes back.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Per client address: this many at once...
    pub per_client_burst: u32,
    /// ... then one more per this period.
    pub per_client_period: Duration,
    /// Every client together (someone with many addresses).
    pub global_burst: u32,
    pub global_period: Duration,
}

impl Default for LoginLimits {
    /// 10 wrong tokens per client, then one per 6 s (10 a minute); 100 for everyone,
    /// then one per second. Hopeless for guessing a token of 16+ random characters,
    /// generous for a person mistyping.
    fn default() -> Self {
        LoginLimits {
            per_client_burst: 10,
            per_client_period: Duration::from_secs(6),
            global_burst: 100,
            global_period: Duration::from_secs(1),
        }
    }
}

/// Clients refused at most this many at once are remembered; beyond, every sign-in
/// waits (as if the global limit were reached), so memory stays bounded.
const MAX_BLOCKED_CLIENTS: usize = 10_000;
/// Clients with wrong tokens tracked by the per-client limiter before those whose
/// allowance has come back are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Counts wrong tokens with governor's GCRA limiters. A client (or everyone) over the
/// limit is refused *before* its token is compared, until the limiter would let it try
/// again: a right guess then cannot be told from a wrong one.
struct LoginGuard {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    /// Until when each refused client (`None` key: everyone) must wait.
    refused_until: Mutex<HashMap<Option<IpAddr>, Instant>>,
}

/// 429 with Retry-After (whole seconds, rounded up).
struct TooManyAttempts(Duration);

impl IntoResponse for TooManyAttempts {
    fn into_response(self) -> Response {
        let seconds = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        let mut res = (
            StatusCode::TOO_MANY_REQUESTS,
            login_page(Some("Too many wrong tokens: wait, then try again.")),
        )
            .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        res
    }
}

impl LoginGuard {
    fn new(limits: LoginLimits) -> Self {
        let quota = |burst: u32, period: Duration| {
            Quota::with_period(period.max(Duration::from_nanos(1)))
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst > 0"))
        };
        LoginGuard {
            per_client: DefaultKeyedRateLimiter::keyed(quota(limits.per_client_burst, limits.per_client_period)),
            global: DefaultDirectRateLimiter::direct(quota(limits.global_burst, limits.global_period)),
            refused_until: Mutex::new(HashMap::new()),
        }
    }

    /// Must `client` wait before its token may be compared?
    fn must_wait(&self, client: IpAddr) -> Result<(), TooManyAttempts> {
        let now = Instant::now();
        let refused = self.refused_until.lock().expect("refused_until");
        let wait = [None, Some(client)]
            .iter()
            .filter_map(|k| refused.get(k))
            .filter(|until| **until > now)
            .max();
        match wait {
            Some(until) => Err(TooManyAttempts(*until - now)),
            None => Ok(()),
        }
    }

    /// A wrong token from `client`: refuse it (429) if over its or the global limit.
    fn failed(&self, client: IpAddr) -> Result<(), TooManyAttempts> {
        if self.per_client.len() >= MAX_TRACKED_CLIENTS {
            self.per_client.retain_recent();
        }
        let clock = DefaultClock::default();
        let refusal = match self.per_client.check_key(&client) {
            Err(not_until) => Some((Some(client), not_until.wait_time_from(clock.now()))),
            Ok(()) => self
                .global
                .check()
                .err()
                .map(|not_until| (None, not_until.wait_time_from(clock.now()))),
        };
        let Some((key, wait)) = refusal else { return Ok(()) };
        let now = Instant::now();
        let mut refused = self.refused_until.lock().expect("refused_until");
        if refused.len() >= MAX_BLOCKED_CLIENTS {
            refused.retain(|_, until| *until > now);
            self.per_client.retain_recent();
        }
        let key = if refused.len() >= MAX_BLOCKED_CLIENTS {
            None
        } else {
            key
        };
        let until = refused.entry(key).or_insert(now);
        *until = (*until).max(now + wait);
        tracing::warn!(client = %client, "too many wrong insights tokens: refusing sign-ins for {:.0} s", wait.as_secs_f64().ceil());
        Err(TooManyAttempts(wait))
    }
}

/// The client's address (from `into_make_service_with_connect_info`; without it every
/// client shares one allowance), as [`client_key`].
fn client_ip(req: &Request) -> IpAddr {
    client_key(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
    )
}

/// A client: its IPv4 address, or its IPv6 /64 (one host may use a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

pub struct Inner {
    pub source: Source,
    token: Vec<u8>,
    sessions: Mutex<Vec<(String, Instant)>>,
    overviews: Overviews,
    login_guard: LoginGuard,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// `token` must be at least 16 bytes (it is the only key to learners' answers).
    /// Starts building the in-memory overviews (see [`crate::overview`]).
    pub fn new(source: Source, token: &str) -> anyhow::Result<Self> {
        Self::with_login_limits(source, token, LoginLimits::default())
    }

    pub fn with_login_limits(source: Source, token: &str, limits: LoginLimits) -> anyhow::Result<Self> {
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= 16,
            "the token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
        );
        let overviews = Overviews::new(source.clone());
        overviews.start();
        Ok(AppState(Arc::new(Inner {
            source,
            token: token.as_bytes().to_vec(),
            sessions: Mutex::new(Vec::new()),
            overviews,
            login_guard: LoginGuard::new(limits),
        })))
    }

    /// The in-memory overviews (to wait for their build).
    pub fn overviews(&self) -> &Overviews {
        &self.0.overviews
    }

    fn token_matches(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(&self.0.token))
    }

    fn new_session(&self) -> String {
        let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut sessions = self.0.sessions.lock().expect("sessions");
        sessions.retain(|(_, t)| t.elapsed() < SESSION_LIFETIME);
        sessions.push((id.clone(), Instant::now()));
        id
    }

    fn session_valid(&self, given: &str) -> bool {
        let sessions = self.0.sessions.lock().expect("sessions");
        // Look at every session, so the time taken does not say which one (nearly) matched.
        sessions.iter().fold(false, |found, (id, t)| {
            found | (bool::from(id.as_bytes().ct_eq(given.as_bytes())) && t.elapsed() < SESSION_LIFETIME)
        })
    }
}

/// Every route. `/login` is the only one open without the token. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so that wrong tokens are
/// limited per client.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(overview))
        .route("/overview.csv", get(overview_csv))
        .route("/question", get(question))
        .route("/question.csv", get(question_csv))
        .route("/api/answers", get(api_answers))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                page("Not found", html! { p { "No such page." } }),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/login", get(login_form).post(login))
        .merge(protected)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serve until Ctrl-C / SIGTERM.
pub async fn serve(state: AppState, bind: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    eprintln!("insights on http://{}/", listener.local_addr()?);
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// 401 and the login form (which shows no data) unless the request carries the token.
/// A valid session cookie always passes (its 256 random bits cannot be guessed); a
/// bearer token is compared only while its client may try, and a wrong one counts.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if cookie_value(headers, COOKIE).is_some_and(|s| state.session_valid(s)) {
        return next.run(req).await;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        let client = client_ip(&req);
        if let Err(wait) = state.0.login_guard.must_wait(client) {
            return wait.into_response();
        }
        if state.token_matches(token) {
            return next.run(req).await;
        }
        if let Err(wait) = state.0.login_guard.failed(client) {
            return wait.into_response();
        }
    }
    let mut res = (StatusCode::UNAUTHORIZED, login_page(None)).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

async fn login_form() -> Markup {
    login_page(None)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, req: Request) -> Response {
    let client = client_ip(&req);
    if let Err(wait) = state.0.login_guard.must_wait(client) {
        return wait.into_response();
    }
    let form = match Form::<LoginForm>::from_request(req, &state).await {
        Ok(Form(form)) => form,
        Err(rejection) => return rejection.into_response(),
    };
    if !state.token_matches(form.token.trim()) {
        if let Err(wait) = state.0.login_guard.failed(client) {
            return wait.into_response();
        }
        return (StatusCode::UNAUTHORIZED, login_page(Some("That token is not right."))).into_response();
    }
    let session = state.new_session();
    let cookie = format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    res
}

fn login_page(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        html! {
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/login" {
                label { "Token " input type="password" name="token" autofocus; }
                " " button type="submit" { "Sign in" }
            }
        },
    )
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;max-width:70em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.answer{white-space:pre-wrap;overflow-wrap:anywhere;max-width:45em}
.error{color:#a00}nav a{margin-right:1em}svg text{font:12px system-ui,sans-serif}form.f{margin:1em 0}";

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · hourofci insights" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Overview" } }
                h1 { (title) }
                (body)
            }
        }
    }
}

/// Query string of the pages and the API (all optional).
#[derive(Deserialize, Default, Clone)]
pub struct Params {
    table: Option<String>,
    lesson: Option<String>,
    level: Option<String>,
    question: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    before: Option<i64>,
    cursor: Option<i64>,
    limit: Option<i64>,
}

/// A 400 with a sentence, as HTML or JSON.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "bad_request", "rule": self.0})),
        )
            .into_response()
    }
}

/// A database failure: 503, the detail in the log only.
struct Unavailable(anyhow::Error);

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        tracing::warn!("insights query failed: {:#}", self.0);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database did not answer; try again",
        )
            .into_response()
    }
}

impl<E: Into<anyhow::Error>> From<E> for Unavailable {
    fn from(e: E) -> Self {
        Unavailable(e.into())
    }
}

enum Failure {
    Bad(BadRequest),
    Down(Unavailable),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Bad(b) => b.into_response(),
            Failure::Down(d) => d.into_response(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Down(Unavailable(e.into()))
    }
}

fn empty_none(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Params {
    fn filter(&self) -> Result<Filter, Failure> {
        let bad = |e: String| Failure::Bad(BadRequest(e));
        let instant = |v: &Option<String>| {
            empty_none(v)
                .map(|s| source::parse_instant(&s))
                .transpose()
                .map_err(bad)
        };
        Ok(Filter {
            table: Some(
                empty_none(&self.table)
                    .map(|t| source::parse_table(&t))
                    .transpose()
                    .map_err(bad)?
                    .unwrap_or(Table::Production),
            ),
            lesson: empty_none(&self.lesson),
            level: empty_none(&self.level),
            question: empty_none(&self.question),
            since: instant(&self.since)?,
            until: instant(&self.until)?,
            search: self.q.clone().filter(|s| !s.is_empty()),
            charted_only: false,
        })
    }

    /// The same query string with some keys replaced (`None` removes).
    fn link(&self, path: &str, changes: &[(&str, Option<String>)]) -> String {
        let mut pairs: Vec<(&str, String)> = [
            ("table", &self.table),
            ("lesson", &self.lesson),
            ("level", &self.level),
            ("question", &self.question),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect();
        for (k, v) in changes {
            pairs.retain(|(key, _)| key != k);
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        }
        let query: String = url_encode_pairs(&pairs);
        if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        }
    }
}

fn url_encode_pairs(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The overview's numbers (from memory, or SQL while that is being built).
pub async fn overview_rows(state: &AppState, filter: &Filter) -> anyhow::Result<(Vec<OverviewRow>, AnsweredBy)> {
    state.0.overviews.rows(filter).await
}

/// Says which computed the overview (tests and benchmarks look).
fn answered_by(by: AnsweredBy) -> [(HeaderName, &'static str); 1] {
    [(HeaderName::from_static("x-overview-from"), by.as_str())]
}

fn filter_form(params: &Params, path: &str, hidden: &[(&str, &Option<String>)]) -> Markup {
    let table = params.table.clone().unwrap_or_else(|| "production".into());
    html! {
        form.f method="get" action=(path) {
            @for (name, value) in hidden {
                @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
            }
            label { "Table " select name="table" {
                option value="production" selected[table == "production"] { "production" }
                option value="test" selected[table == "test"] { "test" }
            } }
            " " label { "From " input type="date" name="since" value=[params.since.as_deref()]; }
            " " label { "before " input type="date" name="until" value=[params.until.as_deref()]; }
            " " button type="submit" { "Show" }
        }
    }
}

async fn overview(State(state): State<AppState>, Query(params): Query<Params>) -> Result<Response, Failure> {
    let filter = Filter {
        lesson: None,
        level: None,
        question: None,
        search: None,
        ..params.filter()?
    };
    let (rows, by) = overview_rows(&state, &filter).await?;
    Ok((answered_by(by), page(
        "Answers per question",
        html! {
            (filter_form(&params, "/", &[]))
            p { "Learners are counted by learner id. Rows sent without one (legacy lessons, older SDKs) can only be told apart by "
                "user agent, which many learners share: they are counted in the " em { "user agents" } " column, not as learners." }
            p { a href=(params.link("/overview.csv", &[])) { "Download this table as CSV" } }
            table id="overview" {
                thead { tr { th { "Lesson" } th { "Level" } th { "Question" } th { "Answers" } th { "Learners" } th { "User agents (rows without learner id)" } th { "Last answer (UTC)" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.lesson.as_deref().unwrap_or("")) }
                            td { (r.level.as_deref().unwrap_or("")) }
                            td { a href=(params.link("/question", &[("lesson", r.lesson.clone()), ("level", r.level.clone()), ("question", r.question.clone()), ("q", None)])) { (r.question.as_deref().unwrap_or("(none)")) } }
                            td.n.answers { (r.answers) }
                            td.n.learners { (r.learners) }
                            td.n.user-agents { (r.user_agents) }
                            td { (r.last.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No answers in this range." } }
        },
    ))
        .into_response())
}

fn csv_response(name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response()
}

async fn overview_csv(State(state): State<AppState>, Query(params): Query<Params>) -> Result<Response, Failure> {
    let filter = Filter {
        lesson: None,
        level: None,
        question: None,
        search: None,
        ..params.filter()?
    };
    let (rows, by) = overview_rows(&state, &filter).await?;
    let mut w = crate::export::csv_writer(Vec::new());
    w.write_record([
        "lesson",
        "level",
        "question",
        "answers",
        "learners",
        "user_agents_without_learner_id",
        "last_answer_utc",
    ])?;
    for r in rows {
        w.write_record([
            r.lesson.unwrap_or_default(),
            r.level.unwrap_or_default(),
            r.question.unwrap_or_default(),
            r.answers.to_string(),
            r.learners.to_string(),
            r.user_agents.to_string(),
            r.last.unwrap_or_default(),
        ])?;
    }
    Ok((
        answered_by(by),
        csv_response("overview.csv", w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?),
    )
        .into_response())
}

#[derive(sqlx::FromRow)]
pub struct Counted {
    pub label: Option<String>,
    pub n: i64,
}

/// The most frequent answers (trimmed) of the filter, most frequent first; equally
/// frequent ones by their bytes, NULL first, in both stores whatever the database's
/// collation (as the in-memory [`crate::overview::QuestionPage`] sorts them).
pub async fn top_answers(tx: &mut ReadTx, filter: &Filter, limit: usize) -> anyhow::Result<Vec<Counted>> {
    let pg = format!(
        "SELECT trim(answer) AS label, count(*) AS n FROM {{table}} {{where}} GROUP BY 1
         ORDER BY count(*) DESC, trim(answer) COLLATE \"C\" NULLS FIRST LIMIT {limit}"
    );
    let sqlite = format!("SELECT trim(answer) AS label, count(*) AS n FROM {{table}} {{where}} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}");
    tx.rows(filter, &pg, &sqlite).await
}

/// Answers per day (UTC), oldest first.
pub async fn per_day(tx: &mut ReadTx, filter: &Filter) -> anyhow::Result<Vec<Counted>> {
    tx.rows(
            filter,
            "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS label, count(*) AS n FROM {table} {where} GROUP BY 1 ORDER BY 1",
            "SELECT substr(received_at, 1, 10) AS label, count(*) AS n FROM {table} {where} GROUP BY 1 ORDER BY 1",
        )
        .await
}

fn shorten(text: &str, chars: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= chars {
        one_line
    } else {
        format!("{}…", one_line.chars().take(chars).collect::<String>())
    }
}

/// Horizontal bars, one per label, as inline SVG.
fn bar_chart(bars: &[(String, i64)]) -> Markup {
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let (label_w, bar_w, row_h) = (260i64, 380i64, 24i64);
    let height = row_h * bars.len() as i64 + 8;
    html! {
        svg id="answer-chart" xmlns="http://www.w3.org/2000/svg" width=(label_w + bar_w + 60) height=(height) role="img" aria-label="Most frequent answers" {
            @for (i, (label, n)) in bars.iter().enumerate() {
                @let y = i as i64 * row_h + 4;
                @let w = (bar_w * n / max).max(1);
                g.bar data-count=(n) {
                    title { (label) ": " (n) }
                    text.bar-label x=(label_w - 6) y=(y + 16) text-anchor="end" { (shorten(label, 34)) }
                    rect x=(label_w) y=(y) width=(w) height=(row_h - 6) fill="#3b6ea5" {}
                    text.bar-count x=(label_w + w + 4) y=(y + 16) { (n) }
                }
            }
        }
    }
}

/// Vertical bars per day, as inline SVG.
fn timeline(days: &[Counted]) -> Markup {
    let max = days.iter().map(|d| d.n).max().unwrap_or(1).max(1);
    let (w, h) = (640i64, 160i64);
    let step = if days.is_empty() {
        w
    } else {
        (w / days.len() as i64).max(2)
    };
    html! {
        svg id="timeline" xmlns="http://www.w3.org/2000/svg" width=(w + 20) height=(h + 40) role="img" aria-label="Answers per day" {
            @for (i, d) in days.iter().enumerate() {
                @let bh = (h * d.n / max).max(1);
                g.day data-day=(d.label.as_deref().unwrap_or("")) data-count=(d.n) {
                    title { (d.label.as_deref().unwrap_or("")) ": " (d.n) }
                    rect x=(i as i64 * step + 10) y=(h - bh + 4) width=((step - 2).max(1)) height=(bh) fill="#5a9" {}
                }
            }
            @if let (Some(first), Some(last)) = (days.first(), days.last()) {
                text x="10" y=(h + 24) { (first.label.as_deref().unwrap_or("")) }
                text x=(w + 10) y=(h + 24) text-anchor="end" { (last.label.as_deref().unwrap_or("")) }
            }
        }
    }
}

/// What a question page shows.
struct QuestionNumbers {
    total: i64,
    charted: i64,
    bars: Vec<(String, i64)>,
    days: Vec<Counted>,
    list: Vec<AnswerRow>,
    /// The cursor of the next (older) page, when this page is full.
    older: Option<i64>,
}

/// The page from memory (see [`crate::overview`]): the numbers, then the listed rows by
/// primary key (with a search term, by SQL: newest first, until a page of matches). `None`
/// when memory cannot answer (a bound inside a day, no question named, aggregate not
/// built, or too many distinct answers kept for the question).
async fn question_from_memory(
    state: &AppState,
    filter: &Filter,
    before: i64,
) -> anyhow::Result<Option<QuestionNumbers>> {
    let Some(page) = state
        .0
        .overviews
        .question(filter, before, TOP_ANSWERS, LIST_PAGE as usize)
        .await
    else {
        return Ok(None);
    };
    let mut tx = state.0.source.read().await?;
    let (list, older) = if filter.search.is_some() {
        let list = tx.page(filter, Some((before, Order::Descending)), LIST_PAGE).await?;
        let older = list.last().map(|r| r.id).filter(|_| list.len() as i64 == LIST_PAGE);
        (list, older)
    } else {
        let older = page
            .list
            .last()
            .copied()
            .filter(|_| page.list.len() as i64 == LIST_PAGE);
        (tx.rows_by_ids(filter.table(), &page.list).await?, older)
    };
    Ok(Some(QuestionNumbers {
        total: page.total,
        charted: page.charted,
        bars: page
            .top
            .into_iter()
            .map(|(label, n)| (label.unwrap_or_default(), n))
            .collect(),
        days: page
            .days
            .into_iter()
            .map(|(label, n)| Counted { label: Some(label), n })
            .collect(),
        older,
        list,
    }))
}

/// The page by SQL, in one snapshot (so the chart, the totals and the list agree).
async fn question_from_sql(state: &AppState, filter: &Filter, before: i64) -> anyhow::Result<QuestionNumbers> {
    let mut tx = state.0.source.read().await?;
    let whole = Filter {
        search: None,
        ..filter.clone()
    };
    let charted = Filter {
        charted_only: true,
        ..whole.clone()
    };
    let total = tx.count(&whole).await?;
    let charted_total = tx.count(&charted).await?;
    let top = top_answers(&mut tx, &charted, TOP_ANSWERS).await?;
    let days = per_day(&mut tx, &whole).await?;
    let list = tx.page(filter, Some((before, Order::Descending)), LIST_PAGE).await?;
    Ok(QuestionNumbers {
        total,
        charted: charted_total,
        bars: top.into_iter().map(|c| (c.label.unwrap_or_default(), c.n)).collect(),
        days,
        older: list.last().map(|r| r.id).filter(|_| list.len() as i64 == LIST_PAGE),
        list,
    })
}

async fn question(State(state): State<AppState>, Query(params): Query<Params>) -> Result<Response, Failure> {
    let filter = params.filter()?;
    let before = params.before.unwrap_or(i64::MAX);
    let (numbers, by) = match question_from_memory(&state, &filter, before).await? {
        Some(numbers) => (numbers, AnsweredBy::Memory),
        None => (question_from_sql(&state, &filter, before).await?, AnsweredBy::Database),
    };
    let QuestionNumbers {
        total,
        charted: charted_total,
        mut bars,
        days,
        list,
        older,
    } = numbers;
    let other = charted_total - bars.iter().map(|(_, n)| n).sum::<i64>();
    if other > 0 {
        bars.push(("(other answers)".to_string(), other));
    }
    let title = format!(
        "{} / {} / {}",
        filter.lesson.as_deref().unwrap_or("any lesson"),
        filter.level.as_deref().unwrap_or("any level"),
        filter.question.as_deref().unwrap_or("any question")
    );
    let hidden = [
        ("lesson", &params.lesson),
        ("level", &params.level),
        ("question", &params.question),
    ];
    Ok(([(HeaderName::from_static("x-question-from"), by.as_str())], page(
        &title,
        html! {
            (filter_form(&params, "/question", &hidden))
            p id="totals" { span id="total" { (total) } " answers; " span id="charted" { (charted_total) } " free-text answers charted, "
                span id="interactions" { (total - charted_total) } " interaction events (JSON) listed only." }
            p { a href=(params.link("/question.csv", &[])) { "Download these answers as CSV" } }
            h2 { "Most frequent answers (trimmed)" }
            (bar_chart(&bars))
            h2 { "Answers per day (UTC)" }
            (timeline(&days))
            h2 { "All answers, newest first" }
            form.f method="get" action="/question" {
                @for (name, value) in [("table", &params.table), ("lesson", &params.lesson), ("level", &params.level), ("question", &params.question), ("since", &params.since), ("until", &params.until)] {
                    @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
                }
                label { "Answers containing " input type="search" name="q" value=[params.q.as_deref()]; }
                " " button type="submit" { "Search" }
            }
            table id="answers" {
                thead { tr { th { "Received (UTC)" } th { "Client time" } th { "Learner" } th { "Answer" } } }
                tbody {
                    @for r in &list {
                        tr {
                            td { (r.received_at) }
                            td { (r.client_time.as_deref().unwrap_or("")) }
                            td { (r.learner_id.as_deref().map(|l| l.to_string()).unwrap_or_else(|| format!("user agent {}", r.user_agent.as_deref().unwrap_or("")))) }
                            td.answer { (r.answer.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if let Some(older) = older {
                p { a id="older" href=(params.link("/question", &[("before", Some(older.to_string()))])) { "Older answers" } }
            }
        },
    ))
    .into_response())
}

async fn question_csv(State(state): State<AppState>, Query(params): Query<Params>) -> Result<Response, Failure> {
    let filter = params.filter()?;
    let mut out = Vec::new();
    crate::export::export(&state.0.source, &filter, crate::export::Format::Csv, &mut out, false).await?;
    Ok(csv_response("answers.csv", out))
}

/// `GET /api/answers`: rows in id order after `cursor`, and the link to the next page
/// (`more`, empty at the end), like an xAPI LRS.
async fn api_answers(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Json<serde_json::Value>, Failure> {
    let filter = params.filter()?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let rows: Vec<AnswerRow> = state
        .0
        .source
        .read()
        .await?
        .page(&filter, Some((params.cursor.unwrap_or(0), Order::Ascending)), limit)
        .await?;
    let more = match rows.last() {
        Some(last) if rows.len() as i64 == limit => params.link(
            "/api/answers",
            &[
                ("cursor", Some(last.id.to_string())),
                ("limit", Some(limit.to_string())),
            ],
        ),
        _ => String::new(),
    };
    Ok(Json(serde_json::json!({ "answers": rows, "more": more })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
