//! Abuse limits for a public, unauthenticated write endpoint: a per-client token
//! bucket (429 + `Retry-After`), caps on header and body size, deadlines for slow
//! clients, and a cap on concurrent connections.
//!
//! The client is the peer IP address. `X-Forwarded-For` is honoured only with
//! `--trust-proxy` (otherwise any client could pick its own bucket), and then only its
//! right-most entry, the one our own reverse proxy appended: entries to its left were
//! written by the client. IPv6 clients are bucketed by their /64, since one host
//! usually owns a whole /64.
//!
//! Slowloris: hyper's `header_read_timeout` (set where the server is built) closes
//! connections that dribble their headers, [`guard`] gives a body a deadline, and
//! [`ConnectionLimit`] bounds how many sockets anyone can hold open at once and how
//! long a silent one may stay.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::event::Invalid;

/// Rate-limit settings (`--rate-limit-per-second`, `--rate-limit-burst`, `--trust-proxy`).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client; 0 turns the limiter off.
    pub per_second: f64,
    /// Requests a client may make at once after being idle (bucket size).
    pub burst: u32,
    /// Take the client address from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_proxy: bool,
    /// Most clients tracked at once; bounds the limiter's memory.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { per_second: 100.0, burst: 200, trust_proxy: false, max_clients: 100_000 }
    }
}

impl RateLimitConfig {
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0 && self.burst > 0
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Buckets {
    map: HashMap<IpAddr, Bucket>,
    last_prune: Instant,
}

/// Token buckets keyed by client address. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RateLimiter {
    config: Arc<RateLimitConfig>,
    buckets: Arc<Mutex<Buckets>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config: Arc::new(config),
            buckets: Arc::new(Mutex::new(Buckets { map: HashMap::new(), last_prune: Instant::now() })),
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Take one token for `client` at `now`: `Ok` to proceed, or `Err(wait)` with how
    /// long until the next token.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let cfg = &*self.config;
        if !cfg.enabled() {
            return Ok(());
        }
        let burst = f64::from(cfg.burst);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !b.map.contains_key(&client) && b.map.len() >= cfg.max_clients {
            // Forget clients whose bucket has refilled: they are indistinguishable
            // from new ones. At most once a second, so a flood of new addresses does
            // not make every request scan the map.
            if now.duration_since(b.last_prune) >= Duration::from_secs(1) {
                let refill = Duration::from_secs_f64(burst / cfg.per_second);
                b.map.retain(|_, v| now.duration_since(v.last) < refill);
                b.last_prune = now;
            }
            if b.map.len() >= cfg.max_clients {
                // Still full: fail open for this untracked client rather than refuse
                // real learners; the existing buckets keep limiting their owners.
                tracing::warn!(tracked = b.map.len(), "rate limiter full; request from an untracked client let through");
                return Ok(());
            }
        }
        let bucket = b.map.entry(client).or_insert(Bucket { tokens: burst, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * cfg.per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / cfg.per_second))
        }
    }

    /// How many clients are tracked now (for tests and metrics).
    pub fn tracked_clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }
}

/// The bucket key for a request: the peer address, or with `trust_proxy` the
/// right-most parseable `X-Forwarded-For` entry; IPv6 reduced to its /64.
pub fn client_key(peer: Option<IpAddr>, headers: &HeaderMap, trust_proxy: bool) -> IpAddr {
    let forwarded = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
    };
    let ip = if trust_proxy { forwarded().or(peer) } else { peer };
    match ip.unwrap_or(IpAddr::from([0, 0, 0, 0])) {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = Invalid::with_code(
        "rate_limited",
        None,
        format!("too many requests from this address; retry after {secs} s with the same event id"),
    );
    let mut res = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// Per-request limits applied by [`guard`]: the rate limit, the size of the headers,
/// and a deadline for the whole body (a body that trickles in is cut off with 408).
#[derive(Clone)]
pub struct RequestLimits {
    pub rate: RateLimiter,
    /// Total bytes of header names and values (`--max-header-bytes`); 431 over it.
    pub max_header_bytes: usize,
    /// Time allowed for the whole request body (`--body-timeout-secs`).
    pub body_timeout: Duration,
    /// Largest body accepted (the `/batch` limit); 413 over it.
    pub max_body_bytes: usize,
}

/// axum middleware: rate limit, then header size, then read the body against a
/// deadline. The body is read here, whole, so no handler ever waits on a slow client.
pub async fn guard(State(limits): State<RequestLimits>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let key = client_key(peer, req.headers(), limits.rate.config.trust_proxy);
    if let Err(wait) = limits.rate.check(key, Instant::now()) {
        return too_many_requests(wait);
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        let body = Invalid::too_large(
            Some("headers"),
            format!("the request headers are larger than {} bytes", limits.max_header_bytes),
        );
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Json(body)).into_response();
    }
    use axum::body::HttpBody as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limits.body_timeout, read_body(body, limits.max_body_bytes)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(BodyError::TooLarge)) => {
            let body = Invalid::too_large(Some("body"), format!("the request body is larger than {} bytes", limits.max_body_bytes));
            (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
        }
        Ok(Err(BodyError::Broken)) => {
            let body = Invalid::with_code("bad_body", Some("body"), "the request body could not be read");
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(_) => {
            let body = Invalid::with_code(
                "timeout",
                Some("body"),
                format!("the request body did not arrive within {} s", limits.body_timeout.as_secs()),
            );
            let mut res = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// The whole body, refusing as soon as it grows past `max` (nothing larger is kept).
async fn read_body(mut body: axum::body::Body, max: usize) -> Result<axum::body::Bytes, BodyError> {
    use axum::body::HttpBody as _;
    let mut buf: Vec<u8> = Vec::new();
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

/// Caps open connections (`--max-connections`) and gives each new connection
/// `first_byte_timeout` to send its first byte. A connection over the cap is closed at
/// once instead of waiting, so the client sees a failure it can retry and the server
/// holds no socket for it.
///
/// The first-byte deadline closes a gap hyper leaves: its header read timeout starts
/// only once the connection is known to speak HTTP/1, and the automatic HTTP/1-or-2
/// detection waits for the first bytes with no limit, so a silent socket would hold
/// a connection slot forever.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    first_byte_timeout: Duration,
}

impl ConnectionLimit {
    pub fn new(max: usize, first_byte_timeout: Duration) -> Self {
        ConnectionLimit { permits: Arc::new(Semaphore::new(max)), max, first_byte_timeout }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// An `axum_server` acceptor around `inner` (the default acceptor, or the TLS one:
    /// the permit is taken before the TLS handshake, the first-byte deadline applies to
    /// the decrypted stream).
    pub fn acceptor<A>(&self, inner: A) -> GuardedAcceptor<A> {
        GuardedAcceptor { inner, limit: self.clone() }
    }
}

/// See [`ConnectionLimit::acceptor`].
#[derive(Clone, Debug)]
pub struct GuardedAcceptor<A> {
    inner: A,
    limit: ConnectionLimit,
}

impl<A, I, S> axum_server::accept::Accept<I, S> for GuardedAcceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.limit.permits.clone().try_acquire_owned() else {
            tracing::warn!(max = self.limit.max, "connection refused: --max-connections reached");
            drop(stream); // closes the socket
            return Box::pin(std::future::ready(Err(io::Error::other("too many connections"))));
        };
        let timeout = self.limit.first_byte_timeout;
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let first_byte = Some(Box::pin(tokio::time::sleep(timeout)));
            Ok((Guarded { inner: stream, _permit: permit, first_byte }, service))
        })
    }
}

/// A connection that holds one [`ConnectionLimit`] permit until it is dropped, and
/// fails its reads if no byte arrived before the first-byte deadline.
#[derive(Debug)]
pub struct Guarded<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.first_byte.as_mut() {
            if std::future::Future::poll(deadline.as_mut(), cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the header timeout")));
            }
        }
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_ready() {
            self.first_byte = None;
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { per_second, burst, trust_proxy: false, max_clients: 3 })
    }

    #[test]
    fn bucket_allows_burst_then_refills_at_the_rate() {
        let l = limiter(2.0, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(ip, t0), Ok(()));
        }
        let wait = l.check(ip, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Half a second at 2/s gives one token back.
        assert_eq!(l.check(ip, t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.check(ip, t0 + Duration::from_millis(500)).is_err());
        // Another client has its own bucket.
        assert_eq!(l.check("192.0.2.2".parse().unwrap(), t0), Ok(()));
    }

    #[test]
    fn zero_rate_disables_the_limiter() {
        let l = limiter(0.0, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..1000).all(|_| l.check(ip, t0).is_ok()));
        assert_eq!(l.tracked_clients(), 0);
    }

    #[test]
    fn memory_is_bounded_by_max_clients() {
        let l = limiter(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..3u8 {
            l.check(IpAddr::from([10, 0, 0, i]), t0).unwrap();
        }
        // Full, and nobody has refilled yet: a fourth client is let through untracked.
        assert_eq!(l.check(IpAddr::from([10, 0, 0, 9]), t0), Ok(()));
        assert_eq!(l.tracked_clients(), 3);
        // Two seconds later all buckets are full again and get pruned.
        l.check(IpAddr::from([10, 0, 0, 10]), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(l.tracked_clients(), 1);
    }

    #[test]
    fn forwarded_for_only_with_trust_proxy_and_only_its_last_entry() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(client_key(Some(peer), &h, false), peer);
        assert_eq!(client_key(Some(peer), &h, true), "203.0.113.7".parse::<IpAddr>().unwrap());
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_key(Some(peer), &h, true), peer);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let h = HeaderMap::new();
        let a = client_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap()), &h, false);
        let b = client_key(Some("2001:db8:1:2:bbbb::2".parse().unwrap()), &h, false);
        assert_eq!(a, b);
        let mapped = client_key(Some("::ffff:192.0.2.5".parse().unwrap()), &h, false);
        assert_eq!(mapped, "192.0.2.5".parse::<IpAddr>().unwrap());
    }
}
