//! `--admin-bind`: a second, plain-HTTP listener for `/metrics` and `/healthz`, meant
//! for an address only the monitoring network reaches (loopback, a private interface).
//! With it, the public listener no longer serves `/metrics` (request counts, queue
//! depth and database errors are nobody else's business); `/healthz` stays public
//! too, because load balancers and uptime checks in front of the public port use it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;

use crate::app::{self, AppState};
use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::limits::{self, BodyBudget, ConnectionConfig, ConnectionLimit, RateLimitConfig, RateLimiter, RequestLimits};
use crate::metrics::Listener;

/// Connections the admin listener holds at once, in all and per client address. A
/// scraper or health check needs one or two; the caps are there for the day the
/// address is reachable by more than it should be: its connections share the
/// process's open files with the public listener and must not use them up.
pub const MAX_CONNECTIONS: usize = 32;
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;

/// Requests per second per client on the admin listener (a burst of twice as many):
/// scrapes come every few seconds; nobody needs more.
const REQUESTS_PER_SECOND: f64 = 20.0;
const CLIENTS_TRACKED: usize = 1024;

/// The admin listener, serving in the background.
pub struct AdminServer {
    addr: SocketAddr,
    handle: axum_server::Handle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `/metrics` and `/healthz`, nothing else; every client rate limited, no body read.
pub fn router(state: AppState, max_header_bytes: usize) -> Router {
    let limits = Arc::new(RequestLimits {
        rate: RateLimiter::new(RateLimitConfig {
            per_second: REQUESTS_PER_SECOND,
            burst: (REQUESTS_PER_SECOND * 2.0) as u32,
            max_clients: CLIENTS_TRACKED,
        }),
        // No proxy stands in front of a monitoring port: the peer is the client.
        proxies: limits::TrustedProxies::default(),
        max_header_bytes,
        body_timeout: Duration::from_secs(1),
        max_body_bytes: 0,
        bodies: BodyBudget::new(0, 0),
        body_routes: &[],
        retry_after_secs: 1,
    });
    let routes = Router::new()
        .route("/metrics", get(app::metrics))
        .route("/healthz", get(app::healthz))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(limits, limits::guard))
        .with_state(state);
    app::with_response_headers(routes)
}

impl AdminServer {
    /// Bind `addr` and serve [`router`] on it, under the same deadlines as the public
    /// listener and caps of its own ([`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_CLIENT`]).
    pub fn start(addr: SocketAddr, state: AppState, args: &ServeArgs) -> anyhow::Result<AdminServer> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on --admin-bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let connections = ConnectionLimit::new(
            ConnectionConfig {
                max: MAX_CONNECTIONS,
                max_per_client: MAX_CONNECTIONS_PER_CLIENT,
                head_timeout: Duration::from_secs(args.header_timeout_secs),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                proxies: limits::TrustedProxies::default(),
                global_flag: "the admin listener's connection cap (admin::MAX_CONNECTIONS)",
                per_client_flag: "the admin listener's per-client connection cap (admin::MAX_CONNECTIONS_PER_CLIENT)",
            },
            state.metrics.clone(),
            Listener::Admin,
        );
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp(listener)
            .acceptor(connections.acceptor(axum_server::accept::DefaultAcceptor::new()))
            .handle(handle.clone());
        crate::server::slow_client_timeouts(server.http_builder(), args);
        let service = router(state, args.max_header_bytes).into_make_service_with_connect_info::<SocketAddr>();
        let served = tokio::spawn(server.serve(service));
        Ok(AdminServer { addr, handle, served })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and finish the requests in flight (they are short).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        self.served
            .await
            .context("admin listener task failed")?
            .context("admin listener error")?;
        Ok(())
    }
}
