//! Abuse limits for a public, unauthenticated write endpoint. Every limit is per
//! client as well as global, so one client cannot take what the others need:
//!
//! | resource | per client | global |
//! |---|---|---|
//! | requests | token bucket, 429 + `Retry-After` ([`RateLimiter`]) | clients tracked (`--rate-limit-max-clients`): beyond it stale clients are evicted, else newcomers get 503 |
//! | connections | `--max-connections-per-client` | `--max-connections` ([`ConnectionLimit`]) |
//! | request bodies in memory | `--max-body-bytes-in-flight-per-client`, 429 | `--max-body-bytes-in-flight`, 503 ([`BodyBudget`]) |
//! | time | a whole request head within `--header-timeout-secs`, a body within `--body-timeout-secs`, idle connections closed after `--idle-timeout-secs`, a peer that stops reading likewise | |
//!
//! The client is the peer IP address ([`ClientKey`]): IPv4 as is, IPv6 by its /64,
//! since one host usually owns a whole /64. `X-Forwarded-For` is honoured only when
//! the peer is a `--trusted-proxy` (otherwise any client could pick its own address),
//! and then the client is the right-most hop that is not itself a trusted proxy: hops
//! to its left were written by the client.
//!
//! Only the routes that take a body (`/batch`) read one, into memory reserved from the
//! [`BodyBudget`] before the first byte is read; every other route refuses a body
//! unread (413), so a body is never buffered just because a route exists.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, MonotonicClock};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::Quota;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;
use crate::metrics::{CloseReason, ConnectionMetrics, Listener, Metrics};

// ---------------------------------------------------------------------------------
// Who is the client

/// A client as every limit counts it: an IPv4 address, or an IPv6 /64 (IPv4-mapped
/// IPv6 addresses count as their IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientKey(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
            }
            v4 => ClientKey(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// `::ffff:192.0.2.5` -> `192.0.2.5` (what a dual-stack listener reports for IPv4 peers).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse `--trusted-proxy` values: CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single
    /// addresses.
    pub fn parse(values: &[String]) -> anyhow::Result<Self> {
        values
            .iter()
            .map(|v| {
                let v = v.trim();
                v.parse::<IpNet>()
                    .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        anyhow::anyhow!("--trusted-proxy {v:?} is not an address or CIDR (e.g. 10.0.0.0/8, ::1)")
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(TrustedProxies)
    }

    /// What the deprecated `--trust-proxy` switch means: a proxy on this host.
    pub fn loopback() -> Self {
        TrustedProxies(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add `other`'s ranges (the deprecated switch alongside `--trusted-proxy`).
    pub fn extend(&mut self, other: TrustedProxies) {
        self.0.extend(other.0);
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer`: the peer itself unless it is a
    /// trusted proxy; then, walking `X-Forwarded-For` from the right, the first hop that
    /// is not a trusted proxy. An unreadable hop stops the walk at the last trusted one
    /// (the request counts as that proxy's, never as an address the client chose).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { return client };
            for hop in value.rsplit(',') {
                let Some(ip) = parse_hop(hop.trim()) else { return client };
                client = canonical(ip);
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, or an address with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Log a warning at most once a second: an attack must not also flood the journal.
fn throttled_warn(last: &AtomicU64, message: impl FnOnce()) {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_secs() + 1;
    let before = last.load(Ordering::Relaxed);
    if now > before
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        message();
    }
}

// ---------------------------------------------------------------------------------
// Requests per client

/// Rate-limit settings (`--rate-limit-per-second`, `--rate-limit-burst`,
/// `--rate-limit-max-clients`).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client; 0 turns the limiter off.
    pub per_second: f64,
    /// Requests a client may make at once after being idle (bucket size).
    pub burst: u32,
    /// Most clients tracked at once; bounds the limiter's memory.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 100.0,
            burst: 200,
            max_clients: 100_000,
        }
    }
}

impl RateLimitConfig {
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0 && self.per_second.is_finite() && self.burst > 0
    }
}

/// Why [`RateLimiter::check`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateRefusal {
    /// This client is over its rate: retry after this long.
    Wait(Duration),
    /// A client not tracked yet while the limiter is full of clients that are all
    /// actively limited: it is refused rather than let through unlimited.
    Full,
}

/// The DashMap behind governor's keyed limiter, shared so the limiter can ask whether
/// a client is new before governor adds it.
#[derive(Clone, Default)]
struct SharedStore(Arc<DashMapStateStore<ClientKey>>);

impl StateStore for SharedStore {
    type Key = ClientKey;
    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }
    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Governed {
    limiter: governor::RateLimiter<ClientKey, SharedStore, MonotonicClock>,
    store: SharedStore,
    max_clients: usize,
    /// When stale clients were last evicted; the eviction scans every client, so it
    /// runs at most every [`EVICT_EVERY`] however many newcomers arrive.
    last_evict: Mutex<Instant>,
    last_warn: AtomicU64,
    /// Whether the store was found full at the last sample: only then does a check
    /// pay for asking whether its client is new (see [`RateLimiter::check`]).
    full: std::sync::atomic::AtomicBool,
}

const EVICT_EVERY: Duration = Duration::from_millis(250);
/// Each thread samples the number of tracked clients every `max_clients / 64` checks
/// (at most this many), so the store may exceed `max_clients` by that many clients
/// per thread, and a check with room to spare costs one map lookup.
const SAMPLE_EVERY: usize = 256;

thread_local! {
    static CHECKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Per-client token buckets: governor's keyed GCRA limiter over a DashMap, bounded to
/// about `max_clients`. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RateLimiter {
    governed: Option<Arc<Governed>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let governed = config.enabled().then(|| {
            let period = Duration::from_secs_f64(1.0 / config.per_second).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(config.burst).expect("burst > 0"));
            let store = SharedStore::default();
            Arc::new(Governed {
                limiter: governor::RateLimiter::new(quota, store.clone(), MonotonicClock),
                store,
                max_clients: config.max_clients.max(1),
                last_evict: Mutex::new(Instant::now()),
                last_warn: AtomicU64::new(0),
                full: std::sync::atomic::AtomicBool::new(false),
            })
        });
        RateLimiter { governed }
    }

    /// Take one token for `client`.
    pub fn check(&self, client: ClientKey) -> Result<(), RateRefusal> {
        let Some(g) = &self.governed else { return Ok(()) };
        let sample = CHECKS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            (n as usize).is_multiple_of((g.max_clients / 64).clamp(1, SAMPLE_EVERY))
        });
        if sample {
            g.full.store(g.store.0.len() >= g.max_clients, Ordering::Relaxed);
        }
        if g.full.load(Ordering::Relaxed) && !g.store.0.contains_key(&client) && g.store.0.len() >= g.max_clients {
            // Full. Forget the clients whose bucket has refilled (they are
            // indistinguishable from new ones); if every tracked client is still
            // being limited, refuse the newcomer: letting it through untracked would
            // give anyone with many addresses unlimited requests.
            if let Ok(mut last) = g.last_evict.try_lock() {
                if last.elapsed() >= EVICT_EVERY {
                    g.limiter.retain_recent();
                    g.limiter.shrink_to_fit();
                    *last = Instant::now();
                }
            }
            let full = g.store.0.len() >= g.max_clients;
            g.full.store(full, Ordering::Relaxed);
            if full {
                throttled_warn(&g.last_warn, || {
                    tracing::warn!(
                        max = g.max_clients,
                        "rate limiter full of active clients; refusing new clients (--rate-limit-max-clients)"
                    )
                });
                return Err(RateRefusal::Full);
            }
        }
        g.limiter
            .check_key(&client)
            .map_err(|not_until| RateRefusal::Wait(not_until.wait_time_from(MonotonicClock.now())))
    }

    /// How many clients are tracked now.
    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.governed.as_ref().map_or(0, |g| g.store.0.len())
    }
}

// ---------------------------------------------------------------------------------
// Bytes of request bodies in memory

/// Bounds the bytes of request bodies held in memory, in all and per client. A body is
/// reserved (its `Content-Length`, or the route's maximum when none is declared) before
/// its first byte is read, and released when its request has been answered.
#[derive(Clone)]
pub struct BodyBudget(Arc<BudgetInner>);

struct BudgetInner {
    max_total: usize,
    max_per_client: usize,
    state: Mutex<BudgetState>,
    last_warn: AtomicU64,
}

#[derive(Default)]
struct BudgetState {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// Why [`BodyBudget::reserve`] said no.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BudgetRefusal {
    /// All clients together hold `--max-body-bytes-in-flight`.
    Global,
    /// This client holds `--max-body-bytes-in-flight-per-client`.
    Client,
}

/// Bytes of one request body; given back on drop.
pub struct BodyReservation {
    budget: BodyBudget,
    client: ClientKey,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        BodyBudget(Arc::new(BudgetInner {
            max_total,
            max_per_client,
            state: Mutex::new(BudgetState::default()),
            last_warn: AtomicU64::new(0),
        }))
    }

    pub fn reserve(&self, client: ClientKey, bytes: usize) -> Result<BodyReservation, BudgetRefusal> {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.total + bytes > self.0.max_total {
            drop(s);
            throttled_warn(&self.0.last_warn, || {
                tracing::warn!(
                    max = self.0.max_total,
                    "request bodies in flight at --max-body-bytes-in-flight; answering 503"
                )
            });
            return Err(BudgetRefusal::Global);
        }
        let mine = s.by_client.get(&client).copied().unwrap_or(0);
        if mine + bytes > self.0.max_per_client {
            return Err(BudgetRefusal::Client);
        }
        s.total += bytes;
        s.by_client.insert(client, mine + bytes);
        Ok(BodyReservation {
            budget: self.clone(),
            client,
            bytes,
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub fn max_per_client(&self) -> usize {
        self.0.max_per_client
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        let mut s = self.budget.0.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total -= self.bytes;
        if let Some(mine) = s.by_client.get_mut(&self.client) {
            *mine -= self.bytes;
            if *mine == 0 {
                s.by_client.remove(&self.client);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Per-request middleware

/// Per-request limits applied by [`guard`] (shared behind an `Arc`: the middleware
/// takes its state by value on every request).
pub struct RequestLimits {
    pub rate: RateLimiter,
    /// Whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub proxies: TrustedProxies,
    /// Total bytes of header names and values (`--max-header-bytes`); 431 over it.
    pub max_header_bytes: usize,
    /// Time allowed for the whole request body (`--body-timeout-secs`).
    pub body_timeout: Duration,
    /// Largest body accepted (the `/batch` limit); 413 over it.
    pub max_body_bytes: usize,
    /// Bytes of bodies in memory, in all and per client.
    pub bodies: BodyBudget,
    /// The routes (as matched, e.g. `/batch`) that take a body; every other route
    /// refuses one unread.
    pub body_routes: &'static [&'static str],
    /// Seconds advertised in `Retry-After` when the body budget is spent.
    pub retry_after_secs: u64,
}

/// Does this request come with a body (a non-zero `Content-Length`, chunked, or an
/// HTTP/2 stream left open)?
fn has_body(req: &Request) -> bool {
    use axum::body::HttpBody as _;
    !req.body().is_end_stream() && req.body().size_hint().upper() != Some(0)
}

/// axum middleware: rate limit, header size, then the body: read whole against a
/// deadline, within the body budget, on the routes that take one; refused unread on
/// the others. No handler ever waits on a slow client.
pub async fn guard(State(limits): State<Arc<RequestLimits>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let client = ClientKey::of(limits.proxies.client_ip(peer, req.headers()));
    // Retry-After is at least a second here: these refusals come in floods.
    let retry_after = limits.retry_after_secs.max(1);
    match limits.rate.check(client) {
        Ok(()) => {}
        Err(RateRefusal::Wait(wait)) => {
            let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
            return ApiError::RateLimited { retry_after }.into_response();
        }
        Err(RateRefusal::Full) => return ApiError::TooManyClients { retry_after }.into_response(),
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        return ApiError::HeadersTooLarge {
            max_bytes: limits.max_header_bytes,
        }
        .into_response();
    }
    if !has_body(&req) {
        return next.run(req).await;
    }
    let takes_body = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| limits.body_routes.contains(&p.as_str()));
    let http1 = req.version() <= Version::HTTP_11;
    if !takes_body {
        // Not read, not held: HTTP/1 closes the connection after this answer (hyper
        // would otherwise try to drain the body), HTTP/2 resets the stream.
        return close_after(ApiError::BodyNotTaken, http1);
    }
    let too_large = ApiError::BodyTooLarge {
        max_bytes: limits.max_body_bytes,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return close_after(too_large, http1);
    }
    let want = declared.unwrap_or(limits.max_body_bytes);
    let _reservation = match limits.bodies.reserve(client, want) {
        Ok(r) => r,
        Err(BudgetRefusal::Global) => return close_after(ApiError::BodyBytes { retry_after }, http1),
        Err(BudgetRefusal::Client) => {
            let max_bytes = limits.bodies.max_per_client();
            return close_after(ApiError::ClientBodyBytes { max_bytes, retry_after }, http1);
        }
    };
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limits.body_timeout, read_body(body, want, declared)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(BodyError::TooLarge)) => close_after(too_large, http1),
        Ok(Err(BodyError::Broken)) => ApiError::BodyUnreadable.into_response(),
        Err(_) => close_after(
            ApiError::BodyTimeout {
                after: limits.body_timeout,
            },
            true,
        ),
    }
}

/// `refusal`, asking HTTP/1 to close the connection after it (a body left unread must
/// not be drained at the client's pace). HTTP/2 has no such header.
fn close_after(refusal: ApiError, http1: bool) -> Response {
    let mut res = refusal.into_response();
    if http1 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

enum BodyError {
    TooLarge,
    Broken,
}

/// The whole body, refusing as soon as it grows past `max` (nothing larger is kept).
async fn read_body(
    mut body: axum::body::Body,
    max: usize,
    declared: Option<usize>,
) -> Result<axum::body::Bytes, BodyError> {
    use axum::body::HttpBody as _;
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(max));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.into())
}

// ---------------------------------------------------------------------------------
// Connections

/// Connection limits (`--max-connections`, `--max-connections-per-client`,
/// `--header-timeout-secs`, `--idle-timeout-secs`).
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub max: usize,
    /// 0: no per-client cap (only the global one).
    pub max_per_client: usize,
    /// Time for the first request head (HTTP/1), or the HTTP/2 preface and first
    /// SETTINGS frame, from the moment the connection is accepted.
    pub head_timeout: Duration,
    /// A connection with no request in flight for this long is closed; so is one
    /// whose peer has not taken a byte of our answer for this long.
    pub idle_timeout: Duration,
    /// Peers exempt from the per-client cap: a reverse proxy carries many clients.
    pub proxies: TrustedProxies,
    /// What the refusal warnings name as the caps (the flags that set them).
    pub global_flag: &'static str,
    pub per_client_flag: &'static str,
}

/// Caps open connections, in all and per client address, and closes connections that
/// send no complete request head in time, sit idle, or stop reading. A connection over
/// a cap is closed at once, before any TLS handshake, so the client sees a failure it
/// can retry and the server holds no socket or slot for it.
///
/// The head deadline closes a gap hyper leaves: its header read timeout starts only
/// once the connection is known to speak HTTP/1, and the automatic HTTP/1-or-2
/// detection waits for the 24-byte HTTP/2 preface with no limit; HTTP/2 itself has no
/// deadline for the preface and SETTINGS nor any idle timeout.
#[derive(Clone)]
pub struct ConnectionLimit(Arc<ConnInner>);

struct ConnInner {
    config: ConnectionConfig,
    counts: Mutex<ConnCounts>,
    last_warn: AtomicU64,
    metrics: Arc<Metrics>,
    listener: Listener,
}

#[derive(Default)]
struct ConnCounts {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// One open connection's place under the caps; given back on drop.
struct ConnectionSlot {
    limit: ConnectionLimit,
    client: Option<ClientKey>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limit.metrics().open.add(-1);
        let mut c = self.limit.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(client) = self.client {
            if let Some(n) = c.by_client.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    c.by_client.remove(&client);
                }
            }
        }
    }
}

impl ConnectionLimit {
    /// Caps for the connections of `listener`, counted in its [`ConnectionMetrics`].
    pub fn new(config: ConnectionConfig, metrics: Arc<Metrics>, listener: Listener) -> Self {
        ConnectionLimit(Arc::new(ConnInner {
            config,
            counts: Mutex::new(ConnCounts::default()),
            last_warn: AtomicU64::new(0),
            metrics,
            listener,
        }))
    }

    fn metrics(&self) -> &ConnectionMetrics {
        self.0.metrics.connections(self.0.listener)
    }

    /// A place for a connection from `peer`, or `None` when a cap is reached. The
    /// per-client cap is checked first, so a refused client takes no global slot.
    fn admit(&self, peer: Option<IpAddr>) -> Option<ConnectionSlot> {
        let cfg = &self.0.config;
        let client = peer
            .filter(|ip| cfg.max_per_client > 0 && !cfg.proxies.contains(*ip))
            .map(ClientKey::of);
        let mut c = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = client.map_or(0, |k| c.by_client.get(&k).copied().unwrap_or(0));
        let per_client = client.is_some() && mine >= cfg.max_per_client;
        if per_client || c.total >= cfg.max {
            drop(c);
            let metrics = self.metrics();
            let flag = if per_client {
                metrics.refused_per_client.inc();
                cfg.per_client_flag
            } else {
                metrics.refused_global.inc();
                cfg.global_flag
            };
            throttled_warn(
                &self.0.last_warn,
                || tracing::warn!(client = ?client.map(|k| k.to_string()), "connection refused: {flag} reached"),
            );
            return None;
        }
        c.total += 1;
        if let Some(k) = client {
            *c.by_client.entry(k).or_insert(0) += 1;
        }
        drop(c);
        self.metrics().open.add(1);
        Some(ConnectionSlot {
            limit: self.clone(),
            client,
        })
    }

    /// An `axum_server` acceptor around `inner` (the default acceptor, or the TLS one:
    /// the caps apply before the TLS handshake, the deadlines to the decrypted stream).
    pub fn acceptor<A>(&self, inner: A) -> GuardedAcceptor<A> {
        GuardedAcceptor {
            inner,
            limit: self.clone(),
        }
    }
}

/// See [`ConnectionLimit::acceptor`].
#[derive(Clone)]
pub struct GuardedAcceptor<A> {
    inner: A,
    limit: ConnectionLimit,
}

impl<A, S> axum_server::accept::Accept<tokio::net::TcpStream, S> for GuardedAcceptor<A>
where
    A: axum_server::accept::Accept<tokio::net::TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = Tracked<A::Service>;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let Some(slot) = self.limit.admit(stream.peer_addr().ok().map(|a| a.ip())) else {
            drop(stream); // closes the socket now
            return Box::pin(std::future::ready(Err(io::Error::other("connection over a cap"))));
        };
        let cfg = &self.limit.0.config;
        let (head_timeout, idle_timeout) = (cfg.head_timeout, cfg.idle_timeout);
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let activity = Arc::new(Activity::new());
            let guarded = Guarded {
                inner: stream,
                slot,
                closed: None,
                head: Some(HeadSniffer::default()),
                timer: Box::pin(tokio::time::sleep(head_timeout)),
                idle_timeout,
                activity: activity.clone(),
                write_stall: None,
            };
            Ok((
                guarded,
                Tracked {
                    inner: service,
                    activity,
                },
            ))
        })
    }
}

/// Requests in flight on one connection, and when the last one finished: what the
/// idle timeout looks at.
#[derive(Debug)]
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request finished (0: none yet).
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.born + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire)))
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.born.elapsed().as_millis() as u64;
        self.0.last_done_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's service, counting its requests in flight for the idle timeout.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        TrackedFuture {
            in_flight: Some(InFlight::start(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer; the request counts as in flight until it is ready.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: std::future::Future> std::future::Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.in_flight.take();
        Poll::Ready(out)
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Watches the first bytes of a connection until a whole first request head has
/// arrived: for HTTP/1 the blank line ending the head (CRLF CRLF, or bare LF LF as
/// hyper also accepts), for HTTP/2 the preface and the whole first frame (SETTINGS).
#[derive(Debug, Clone, Copy)]
enum HeadSniffer {
    /// This many bytes matched the HTTP/2 preface so far.
    Preface(usize),
    /// HTTP/1: 0 = in a line, 1 = just after LF, 2 = after LF CR.
    Http1(u8),
    /// HTTP/2: bytes of the 9-byte frame header seen, and the payload length read.
    FrameHeader {
        seen: u8,
        len: u32,
    },
    FramePayload {
        left: u32,
    },
}

impl Default for HeadSniffer {
    fn default() -> Self {
        HeadSniffer::Preface(0)
    }
}

impl HeadSniffer {
    /// Feed bytes read; `true` once the head is complete.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut i = 0;
        while i < bytes.len() {
            match self {
                HeadSniffer::Preface(n) => {
                    if bytes[i] == H2_PREFACE[*n] {
                        *n += 1;
                        i += 1;
                        if *n == H2_PREFACE.len() {
                            *self = HeadSniffer::FrameHeader { seen: 0, len: 0 };
                        }
                    } else {
                        // Not HTTP/2: replay what matched as HTTP/1, then go on.
                        let matched = *n;
                        *self = HeadSniffer::Http1(0);
                        if self.feed(&H2_PREFACE[..matched]) {
                            return true;
                        }
                    }
                }
                HeadSniffer::Http1(state) => {
                    let b = bytes[i];
                    i += 1;
                    *state = match (b, *state) {
                        (b'\n', 1 | 2) => return true,
                        (b'\n', _) => 1,
                        (b'\r', 1) => 2,
                        _ => 0,
                    };
                }
                HeadSniffer::FrameHeader { seen, len } => {
                    if *seen < 3 {
                        *len = (*len << 8) | u32::from(bytes[i]);
                    }
                    *seen += 1;
                    i += 1;
                    if *seen == 9 {
                        if *len == 0 {
                            return true;
                        }
                        *self = HeadSniffer::FramePayload { left: *len };
                    }
                }
                HeadSniffer::FramePayload { left } => {
                    let take = (*left as usize).min(bytes.len() - i);
                    *left -= take as u32;
                    i += take;
                    if *left == 0 {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// A connection under the [`ConnectionLimit`]: holds its slot until dropped; fails its
/// reads when the first request head has not arrived by the head deadline, or when no
/// request has been in flight for the idle timeout; fails its writes when the peer
/// has taken nothing for the idle timeout.
pub struct Guarded<I> {
    inner: I,
    slot: ConnectionSlot,
    /// Set once a deadline has closed the connection (counted once in the metrics).
    closed: Option<CloseReason>,
    /// `Some` until the first request head is complete.
    head: Option<HeadSniffer>,
    /// The head deadline, then the idle deadline.
    timer: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
    /// Set while a write is blocked on a peer that does not read.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Guarded<I> {
    /// The error that closes the connection for `reason`, counted the first time.
    fn close(&mut self, reason: CloseReason) -> io::Error {
        if self.closed.is_none() {
            self.closed = Some(reason);
            self.slot.limit.metrics().closed(reason);
        }
        let message = match reason {
            CloseReason::HeadTimeout => "no complete request head within the header timeout",
            CloseReason::IdleTimeout => "connection idle past the idle timeout",
            CloseReason::StoppedReading => "the peer stopped reading",
        };
        io::Error::new(io::ErrorKind::TimedOut, message)
    }

    /// `Ready(error)` when a deadline has passed; otherwise the timer is armed for the
    /// next check (so the task is woken then).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.head.is_some() {
                return Poll::Ready(self.close(CloseReason::HeadTimeout));
            }
            let now = tokio::time::Instant::now();
            let next = match self.activity.idle_since() {
                Some(since) => {
                    let until = tokio::time::Instant::from_std(since + self.idle_timeout);
                    if until <= now {
                        return Poll::Ready(self.close(CloseReason::IdleTimeout));
                    }
                    until
                }
                None => now + self.idle_timeout,
            };
            self.timer.as_mut().reset(next);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(e) = this.poll_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(sniffer)) = (&read, this.head.as_mut()) {
            if sniffer.feed(&buf.filled()[before..]) {
                this.head = None;
                // From now on the timer is the idle deadline.
                let next = tokio::time::Instant::now() + this.idle_timeout;
                this.timer.as_mut().reset(next);
            }
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> Guarded<I> {
    /// Fail a write that has been blocked for the idle timeout (a peer that stopped
    /// reading must not hold the connection forever).
    fn stalled<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stall = None;
            return poll;
        }
        let timeout = self.idle_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(self.close(CloseReason::StoppedReading)));
        }
        Poll::Pending
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(cx, poll)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(cx, poll)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(cx, poll)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raise the soft limit on open files to the hard limit (systemd's default soft limit
/// of 1024 would run out before `--max-connections`), and say so when it is still
/// too low for `max_connections` sockets (both listeners' caps) plus the database and
/// log files.
pub fn raise_open_files_limit(max_connections: usize) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let needed = max_connections as u64 + 64;
        if lim.rlim_cur < needed {
            tracing::warn!(
                open_files = lim.rlim_cur,
                "the open-files limit is below the connection caps + 64 ({needed}: --max-connections, plus the admin listener's when --admin-bind is set); raise LimitNOFILE or lower --max-connections"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_second,
            burst,
            max_clients,
        })
    }

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn bucket_allows_burst_then_refuses_with_the_wait() {
        let l = limiter(2.0, 3, 10);
        for _ in 0..3 {
            assert_eq!(l.check(key("192.0.2.1")), Ok(()));
        }
        match l.check(key("192.0.2.1")) {
            Err(RateRefusal::Wait(w)) => assert!(w > Duration::ZERO && w <= Duration::from_millis(500), "{w:?}"),
            other => panic!("expected a wait, got {other:?}"),
        }
        // Another client has its own bucket.
        assert_eq!(l.check(key("192.0.2.2")), Ok(()));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let l = limiter(50.0, 1, 10);
        assert_eq!(l.check(key("192.0.2.1")), Ok(()));
        assert!(l.check(key("192.0.2.1")).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.check(key("192.0.2.1")), Ok(()));
    }

    #[test]
    fn zero_rate_disables_the_limiter() {
        let l = limiter(0.0, 3, 10);
        assert!((0..1000).all(|_| l.check(key("192.0.2.1")).is_ok()));
        assert_eq!(l.tracked_clients(), 0);
    }

    #[test]
    fn at_capacity_newcomers_are_refused_never_let_through_unlimited() {
        // One token per 100 s: nobody refills during the test.
        let l = limiter(0.01, 1, 3);
        for i in 0..3u8 {
            l.check(ClientKey::of(IpAddr::from([10, 0, 0, i]))).unwrap();
        }
        for _ in 0..50 {
            assert_eq!(l.check(key("10.0.0.9")), Err(RateRefusal::Full));
        }
        assert_eq!(l.tracked_clients(), 3);
        // Tracked clients are still limited as before.
        assert!(matches!(
            l.check(ClientKey::of(IpAddr::from([10, 0, 0, 0]))),
            Err(RateRefusal::Wait(_))
        ));
    }

    #[test]
    fn at_capacity_stale_clients_are_evicted_for_newcomers() {
        // 100/s: a client that made one request is indistinguishable from a new one
        // after a few tens of ms.
        let l = limiter(100.0, 1, 3);
        for i in 0..3u8 {
            l.check(ClientKey::of(IpAddr::from([10, 0, 0, i]))).unwrap();
        }
        std::thread::sleep(EVICT_EVERY + Duration::from_millis(50));
        assert_eq!(l.check(key("10.0.0.9")), Ok(()));
        assert!(l.tracked_clients() <= 3, "{}", l.tracked_clients());
    }

    #[test]
    fn forwarded_for_only_from_a_trusted_proxy_and_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap());
        // Untrusted peer: its header is ignored.
        assert_eq!(proxies.client_ip(stranger, &h), stranger);
        // Trusted peer: skip trusted hops from the right; stop at the first other one.
        assert_eq!(proxies.client_ip(peer, &h), "203.0.113.7".parse::<IpAddr>().unwrap());
        // Several header lines are one list, in order.
        let mut two = HeaderMap::new();
        two.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        two.append("x-forwarded-for", "192.0.2.9:4711, 10.0.0.1".parse().unwrap());
        assert_eq!(proxies.client_ip(peer, &two), "192.0.2.9".parse::<IpAddr>().unwrap());
        // Garbage stops the walk at the last trusted hop, never a client's pick.
        h.insert("x-forwarded-for", "203.0.113.7, garbage, 10.1.2.3".parse().unwrap());
        assert_eq!(proxies.client_ip(peer, &h), "10.1.2.3".parse::<IpAddr>().unwrap());
        // Without trusted proxies nobody's header counts.
        assert_eq!(TrustedProxies::default().client_ip(peer, &h), peer);
        assert!(TrustedProxies::parse(&["not-a-net".into()]).is_err());
        assert!(TrustedProxies::loopback().contains("::ffff:127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.5"), key("192.0.2.5"));
    }

    #[test]
    fn body_budget_is_bounded_in_all_and_per_client() {
        let b = BodyBudget::new(10, 6);
        let a1 = b.reserve(key("192.0.2.1"), 4).unwrap();
        assert_eq!(b.reserve(key("192.0.2.1"), 3).err(), Some(BudgetRefusal::Client));
        let _b1 = b.reserve(key("192.0.2.2"), 6).unwrap();
        assert_eq!(b.reserve(key("192.0.2.3"), 1).err(), Some(BudgetRefusal::Global));
        drop(a1);
        assert_eq!(b.in_flight(), 6);
        assert!(b.reserve(key("192.0.2.3"), 4).is_ok());
        assert_eq!(b.in_flight(), 6, "a dropped reservation is given back");
    }

    #[test]
    fn head_sniffer_waits_for_a_whole_head() {
        let mut s = HeadSniffer::default();
        assert!(!s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(s.feed(b"\r\n"));
        let mut s = HeadSniffer::default();
        assert!(!s.feed(b"GET / HTTP/1.1\nHost: x\n"));
        assert!(s.feed(b"\n"));
        // A partial HTTP/2 preface is not a head (it contains CRLF CRLF, but is not HTTP/1).
        let mut s = HeadSniffer::default();
        assert!(!s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n"));
        assert!(!s.feed(b"\r\n"));
        // Preface + an empty SETTINGS frame.
        assert!(s.feed(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
        // Preface + SETTINGS with one setting, byte by byte.
        let mut s = HeadSniffer::default();
        let mut all = H2_PREFACE.to_vec();
        all.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        let done: Vec<bool> = all.iter().map(|b| s.feed(&[*b])).collect();
        assert_eq!(done.iter().position(|d| *d), Some(all.len() - 1));
        // Something that starts like the preface and then is not: HTTP/1 rules.
        let mut s = HeadSniffer::default();
        assert!(!s.feed(b"PRI * HTTP/1.1\r\n"));
        assert!(s.feed(b"\r\n"));
    }
}
