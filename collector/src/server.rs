//! Process lifecycle: build the store and the write path, bind, serve (HTTP or HTTPS),
//! and on SIGTERM/SIGINT fail /healthz for `--shutdown-drain-ms` while still serving
//! (balancers stop sending), then stop accepting, finish in-flight requests, commit what is
//! queued, and return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::app::{self, AppState, Inner};
use crate::config::{redact_url, ServeArgs};
use crate::group_commit::{GroupCommit, Writers};
use crate::metrics::{Listener, Metrics};
use crate::store::{PgStore, SqliteStore, Store};
use crate::validate::Rules;

/// A collector that is serving. Stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    https: bool,
    state: AppState,
    handle: axum_server::Handle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    writers: Writers,
    commit: GroupCommit,
    grace: Duration,
    reloader: Option<tokio::task::JoinHandle<()>>,
    admin: Option<crate::admin::AdminServer>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// `http://ADDR` of the `--admin-bind` listener, if any.
    pub fn admin_url(&self) -> Option<String> {
        self.admin.as_ref().map(|a| format!("http://{}", a.local_addr()))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// First step of a rolling restart: /healthz answers 503 from now on (everything
    /// else is served as before) so balancers take this collector out of rotation.
    pub fn begin_drain(&self) {
        self.state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Graceful stop: refuse new connections, let in-flight requests finish (their
    /// events get committed), then drain the write queue and stop the writers.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Commit queued events now rather than after their group's wait.
        self.commit.drain();
        self.handle.graceful_shutdown(Some(self.grace));
        let served = self.served.await;
        if let Some(admin) = self.admin {
            admin.shutdown().await?;
        }
        self.commit.close();
        self.writers.join().await;
        if let Some(r) = self.reloader {
            r.abort();
        }
        served.context("server task failed")?.context("server error")?;
        Ok(())
    }
}

/// Open the configured store: PostgreSQL when a URL is given, else the SQLite file.
async fn open_store(args: &ServeArgs) -> anyhow::Result<Store> {
    let timeout = Duration::from_millis(args.db_timeout_ms.max(1));
    match args.database.resolve()? {
        Some(url) => {
            let shown = redact_url(&url);
            let store = PgStore::connect_lazy(&url, args.pool_size(), timeout, args.database_pool_mode)
                .map_err(|e| anyhow::anyhow!("{e}"))?; // names the URL redacted, or not at all
            tracing::info!(
                "storing events in PostgreSQL at {shown} ({:?} pooling)",
                args.database_pool_mode
            );
            Ok(Store::Postgres(store))
        }
        None => {
            let store = SqliteStore::open(&args.sqlite_path, timeout)
                .await
                .with_context(|| format!("cannot open SQLite file {}", args.sqlite_path.display()))?;
            tracing::info!(
                "storing events in the embedded SQLite file {}",
                args.sqlite_path.display()
            );
            Ok(Store::Sqlite(store))
        }
    }
}

/// Build everything and start serving in the background.
pub async fn start(args: &ServeArgs) -> anyhow::Result<RunningServer> {
    let rules = match &args.lessons_file {
        Some(path) => Rules::from_file(path)?,
        None => Rules::original(),
    }
    .with_max_answer_bytes(args.max_answer_bytes);
    let cors = app::cors_origins(&args.allow_origins)?;
    let legacy_cors = app::legacy_cors_origins(&args.legacy_allow_origins)?;
    let proxies = args.trusted_proxies()?;
    if args.trust_proxy {
        tracing::warn!("--trust-proxy is deprecated: it now means --trusted-proxy 127.0.0.0/8 --trusted-proxy ::1; name your proxies with --trusted-proxy");
    }
    anyhow::ensure!(
        args.max_body_bytes_in_flight_per_client >= app::MAX_BATCH_BYTES
            && args.max_body_bytes_in_flight >= args.max_body_bytes_in_flight_per_client,
        "--max-body-bytes-in-flight-per-client must be at least {} (one full batch) and at most --max-body-bytes-in-flight",
        app::MAX_BATCH_BYTES
    );
    let store = Arc::new(open_store(args).await?);
    if let Err(e) = store.health().await {
        tracing::warn!("the database does not answer yet ({e}); requests get 503 until it does");
    }
    let metrics = Arc::new(Metrics::default());
    let group = args.group_config();
    let (commit, writers) = GroupCommit::start(store.clone(), group.clone(), metrics.clone());
    let state = AppState::new(Inner {
        rules,
        commit: commit.clone(),
        metrics,
        retry_after_secs: args.retry_after_secs,
        cors,
        legacy_cors,
        metrics_public: args.admin_bind.is_none(),
        sdk_dir: args.sdk_dir.clone(),
        limits: Arc::new(crate::limits::RequestLimits {
            rate: crate::limits::RateLimiter::new(args.rate_limit_config()),
            proxies: proxies.clone(),
            max_header_bytes: args.max_header_bytes,
            body_timeout: Duration::from_secs(args.body_timeout_secs),
            max_body_bytes: app::MAX_BATCH_BYTES,
            bodies: crate::limits::BodyBudget::new(
                args.max_body_bytes_in_flight,
                args.max_body_bytes_in_flight_per_client,
            ),
            body_routes: app::BODY_ROUTES,
            retry_after_secs: args.retry_after_secs,
        }),
        draining: std::sync::atomic::AtomicBool::new(false),
    });
    let router = app::router(state.clone());
    let service = router.into_make_service_with_connect_info::<SocketAddr>();

    let listener = std::net::TcpListener::bind(args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let admin = match args.admin_bind {
        Some(addr) => Some(crate::admin::AdminServer::start(addr, state.clone(), args)?),
        None => None,
    };
    let handle = axum_server::Handle::new();
    let admin_connections = admin.as_ref().map_or(0, |_| crate::admin::MAX_CONNECTIONS);
    crate::limits::raise_open_files_limit(args.max_connections as usize + admin_connections);
    let connections = crate::limits::ConnectionLimit::new(
        crate::limits::ConnectionConfig {
            max: args.max_connections as usize,
            max_per_client: args.max_connections_per_client as usize,
            head_timeout: Duration::from_secs(args.header_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            proxies,
            global_flag: "--max-connections",
            per_client_flag: "--max-connections-per-client",
        },
        state.metrics.clone(),
        Listener::Public,
    );
    let (served, https, reloader) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::load(cert, key).await?;
            let reloader = crate::tls::spawn_reloader(
                tls.clone(),
                cert.clone(),
                key.clone(),
                Duration::from_secs(args.tls_reload_secs),
            );
            let acceptor = connections.acceptor(axum_server::tls_rustls::RustlsAcceptor::new(tls));
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            slow_client_timeouts(server.http_builder(), args);
            (tokio::spawn(server.serve(service)), true, Some(reloader))
        }
        _ => {
            let acceptor = connections.acceptor(axum_server::accept::DefaultAcceptor::new());
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            slow_client_timeouts(server.http_builder(), args);
            (tokio::spawn(server.serve(service)), false, None)
        }
    };
    Ok(RunningServer {
        addr,
        https,
        state,
        handle,
        served,
        writers,
        commit,
        grace: Duration::from_secs(args.shutdown_grace_secs),
        reloader,
        admin,
    })
}

/// Cut off clients that dribble their request headers (slowloris): hyper enforces
/// the header read timeout only when it has a timer. Bound what one connection may
/// make hyper hold: its read buffer (the largest head we accept, no more: hyper's
/// default is ~400 KiB), and for HTTP/2 the streams at once and the header list;
/// ping HTTP/2 peers so a vanished one is noticed. (The head deadline for the HTTP/2
/// preface and the idle timeout live in [`crate::limits::Guarded`].)
pub(crate) fn slow_client_timeouts(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    args: &ServeArgs,
) {
    let largest_head = (args.max_answer_bytes * 3 + 4096) + args.max_header_bytes + 8 * 1024;
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(args.header_timeout_secs))
        .max_buf_size(largest_head.max(128 * 1024));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(args.http2_max_streams)
        .max_header_list_size(u32::try_from(args.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(HTTP2_PING_EVERY))
        .keep_alive_timeout(HTTP2_PING_EVERY);
}

/// HTTP/2 keep-alive: ping this often; no answer within as long closes the connection.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(20);

/// Serve until SIGTERM or SIGINT, then shut down gracefully.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = start(&args).await?;
    tracing::info!("hourofci-collector listening on {}", server.url());
    if let Some(admin) = server.admin_url() {
        tracing::info!("/metrics and /healthz also on {admin} (--admin-bind)");
    }
    shutdown_signal().await;
    if args.shutdown_drain_ms > 0 {
        server.begin_drain();
        tracing::info!(
            "draining for {} ms: /healthz answers 503, requests are still served",
            args.shutdown_drain_ms
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.shutdown_drain_ms)) => {}
            // A second signal cuts the drain short.
            _ = shutdown_signal() => {}
        }
    }
    tracing::info!("shutting down: finishing in-flight requests and committing queued events");
    server.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
