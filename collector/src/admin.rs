//! `--admin-bind`: a second, plain-HTTP listener for `/metrics` and `/healthz`, meant
//! for an address only the monitoring network reaches (loopback, a private interface).
//! With it, the public listener no longer serves `/metrics` (request counts, queue
//! depth and database errors are nobody else's business); `/healthz` stays public
//! too, because load balancers and uptime checks in front of the public port use it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;

use crate::app::{self, AppState};
use crate::error::ApiError;

/// The admin listener, serving in the background.
pub struct AdminServer {
    addr: SocketAddr,
    handle: axum_server::Handle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `/metrics` and `/healthz`, nothing else.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(app::metrics))
        .route("/healthz", get(app::healthz))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state);
    app::with_response_headers(routes)
}

impl AdminServer {
    /// Bind `addr` and serve [`router`] on it.
    pub fn start(addr: SocketAddr, state: AppState, header_timeout: Duration) -> anyhow::Result<AdminServer> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on --admin-bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp(listener).handle(handle.clone());
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        let served = tokio::spawn(server.serve(router(state).into_make_service()));
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
