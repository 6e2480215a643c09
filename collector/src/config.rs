//! Command line and environment. Every flag can also be set by the environment
//! variable shown in `--help` (the flag wins).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::group_commit::GroupConfig;

/// Records Hour of CI learners' answers (legacy lesson URLs, idempotent POSTs, batches).
///
/// With no subcommand it serves (same as `serve`). With no --database-url it stores
/// events in the embedded SQLite file `hourofci-log.db` in the working directory.
#[derive(Parser, Debug)]
#[command(name = "hourofci-collector", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Serve HTTP(S) (the default).
    Serve(ServeArgs),
    /// Apply the sql/ migrations as the admin role, then grant the writer role
    /// CONNECT on the database and EXECUTE on the write functions (nothing else).
    ///
    /// Revokes CREATE on schema public and TEMPORARY on the database from PUBLIC, and
    /// refuses to finish while the writer role could create or owns objects.
    ///
    /// The writer role must already exist; a DBA creates it once, e.g.
    /// `psql -v pw="$HOURCI_WRITER_PASSWORD" -c "CREATE ROLE hourofciuser LOGIN PASSWORD :'pw'"`.
    Migrate(MigrateArgs),
    /// Serve the insights pages (answers, charts, CSV) on an internal address: runs
    /// `hourofci-insights serve ARGS` (see `hourofci-collector insights --help`).
    #[command(disable_help_flag = true)]
    Insights(ReadSideArgs),
    /// Export answers for analysis as CSV or JSON lines: runs `hourofci-insights export ARGS`.
    #[command(disable_help_flag = true)]
    Export(ReadSideArgs),
    /// Delete one pseudonymous learner's rows: runs `hourofci-insights forget ARGS`.
    #[command(disable_help_flag = true)]
    Forget(ReadSideArgs),
    /// Delete old test traffic: runs `hourofci-insights prune ARGS`.
    #[command(disable_help_flag = true)]
    Prune(ReadSideArgs),
}

/// The read side's subcommands are the `hourofci-insights` binary's (its own crate, so
/// the write service never links it): their arguments are handed over unread.
#[derive(Args, Debug, Clone)]
pub struct ReadSideArgs {
    /// Arguments of the hourofci-insights subcommand (--help lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
    pub args: Vec<std::ffi::OsString>,
}

impl Command {
    /// For a read-side subcommand: its name here, the `hourofci-insights` subcommand
    /// it runs, and the arguments.
    pub fn read_side(&self) -> Option<(&'static str, &'static str, &[std::ffi::OsString])> {
        match self {
            Command::Insights(a) => Some(("insights", "serve", &a.args)),
            Command::Export(a) => Some(("export", "export", &a.args)),
            Command::Forget(a) => Some(("forget", "forget", &a.args)),
            Command::Prune(a) => Some(("prune", "prune", &a.args)),
            Command::Serve(_) | Command::Migrate(_) => None,
        }
    }
}

/// Where the database URL comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://hourofciuser:PASSWORD@db.example.org/hourofci?sslmode=require.
    /// Prefer --database-url-file so the password is not visible in the process list.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the PostgreSQL URL (with its password) on its first line.
    #[arg(long, env = "HOURCI_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The URL from the flag, the environment or the file; `None` when none is given.
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        if let Some(url) = &self.database_url {
            return Ok(Some(url.trim().to_string()));
        }
        if let Some(path) = &self.database_url_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --database-url-file {}: {e}", path.display()))?;
            let url = text.lines().next().unwrap_or_default().trim().to_string();
            anyhow::ensure!(!url.is_empty(), "--database-url-file {} is empty", path.display());
            return Ok(Some(url));
        }
        Ok(None)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "HOURCI_BIND", default_value = "127.0.0.1:4000")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// SQLite file used when no PostgreSQL URL is given.
    #[arg(long, env = "HOURCI_SQLITE_PATH", default_value = "hourofci-log.db")]
    pub sqlite_path: PathBuf,

    /// Origin whose pages may use the SDK routes from a browser (CORS: POST events,
    /// /batch, /sdk/ files), e.g. https://jupyter.example.org, or a pattern
    /// https://*.mybinder.org (`*.` = one or more labels; scheme and port must match).
    /// Repeat the flag, or separate with commas. `*` allows every origin. With none,
    /// these routes send no CORS headers. The legacy GET routes follow
    /// --legacy-allow-origin instead.
    #[arg(long = "allow-origin", env = "HOURCI_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origins: Vec<String>,

    /// Origins whose pages may read the answers of the legacy GET routes
    /// (/{ua}/{lesson}/{level}/{question}/{answer}, /test/...), same syntax as
    /// --allow-origin. Default `*`, as the original service: old lessons show
    /// alert("Error") when the browser hides the answer, and a simple GET is sent (and
    /// written) whatever CORS says, so restricting it protects nothing but the answer.
    #[arg(
        long = "legacy-allow-origin",
        env = "HOURCI_LEGACY_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub legacy_allow_origins: Vec<String>,

    /// Address of a second, plain-HTTP listener serving /metrics and /healthz only,
    /// e.g. 127.0.0.1:9400 or an internal address. When set, the public listener no
    /// longer serves /metrics (it keeps /healthz for load balancers). It holds at most
    /// 32 connections (8 per client address) and 20 requests/s per client, under the
    /// same header and idle timeouts as the public listener.
    #[arg(long, env = "HOURCI_ADMIN_BIND")]
    pub admin_bind: Option<SocketAddr>,

    /// PEM certificate chain for HTTPS. Re-read when the file changes (certbot renewals
    /// need no restart). Requires --tls-key.
    #[arg(long, env = "HOURCI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS. Requires --tls-cert.
    #[arg(long, env = "HOURCI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often to check the TLS files for changes, in seconds.
    #[arg(long, env = "HOURCI_TLS_RELOAD_SECS", default_value_t = 30)]
    pub tls_reload_secs: u64,

    /// JSON file {"lessons":[...],"levels":[...]} replacing the original lists of
    /// allowed lessons and levels.
    #[arg(long, env = "HOURCI_LESSONS_FILE")]
    pub lessons_file: Option<PathBuf>,
    /// Largest accepted answer, in bytes (after percent-decoding).
    #[arg(long, env = "HOURCI_MAX_ANSWER_BYTES", default_value_t = crate::validate::DEFAULT_MAX_ANSWER_BYTES)]
    pub max_answer_bytes: usize,

    /// Directory of the built browser SDK (js/dist), served under /sdk/.
    #[arg(long, env = "HOURCI_SDK_DIR")]
    pub sdk_dir: Option<PathBuf>,

    /// Group commit: most events committed in one transaction.
    #[arg(long, env = "HOURCI_GROUP_MAX_EVENTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub group_max_events: u32,
    /// Group commit: how long a writer waits for more events before committing, in ms.
    /// 0 (default): commit whatever has queued at once; under load, groups fill by
    /// themselves while the other writers commit (measured faster and with lower p99
    /// than 2 ms on the benchmark). A wait only helps a trickle of open-loop traffic.
    #[arg(long, env = "HOURCI_GROUP_MAX_WAIT_MS", default_value_t = 0)]
    pub group_max_wait_ms: u64,
    /// Group commit: writers committing groups in parallel.
    #[arg(long, env = "HOURCI_WRITERS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub writers: u32,
    /// Most events waiting for a commit; beyond that requests get 503 at once.
    #[arg(long, env = "HOURCI_QUEUE_CAPACITY", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// A request whose event is not committed within this many ms gets 503
    /// (also the limit for one database call and for a pool checkout).
    #[arg(long, env = "HOURCI_DB_TIMEOUT_MS", default_value_t = 5000)]
    pub db_timeout_ms: u64,
    /// PostgreSQL connections (default: writers + 1, for /healthz).
    #[arg(long, env = "HOURCI_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// What --database-url points at: `session` (PostgreSQL itself, or PgBouncer with
    /// pool_mode=session) or `transaction` (PgBouncer with pool_mode=transaction).
    /// In transaction pooling a server connection is the collector's only while a
    /// transaction is open, so a statement prepared on it may be gone (or another
    /// client's) at the next message: `transaction` uses unnamed statements, no
    /// statement cache, and wraps each write in BEGIN/COMMIT so its Parse and Bind
    /// reach the same server connection. See docs/SCALING.md.
    #[arg(long, env = "HOURCI_DATABASE_POOL_MODE", value_enum, default_value_t = PoolMode::Session)]
    pub database_pool_mode: PoolMode,
    /// Seconds advertised in Retry-After on 503.
    #[arg(long, env = "HOURCI_RETRY_AFTER_SECS", default_value_t = 2)]
    pub retry_after_secs: u64,
    /// On SIGTERM/SIGINT, first answer /healthz with 503 and keep serving for this many
    /// ms, so a load balancer's health checks take the collector out of rotation
    /// before it stops accepting (rolling restarts lose no request). Set it above the
    /// balancer's check interval times its fall count (examples/scale-out/haproxy.cfg:
    /// 2 x 500 ms, so e.g. 3000). 0: stop accepting at once.
    #[arg(long, env = "HOURCI_SHUTDOWN_DRAIN_MS", default_value_t = 0)]
    pub shutdown_drain_ms: u64,
    /// On SIGTERM/SIGINT, after the drain, how long to wait for in-flight requests, in seconds.
    #[arg(long, env = "HOURCI_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Requests per second one client (IP address, IPv6 /64) may make, sustained;
    /// over it: 429 with Retry-After. 0 turns the limit off (benchmarks).
    #[arg(long, env = "HOURCI_RATE_LIMIT_PER_SECOND", default_value_t = 100.0)]
    pub rate_limit_per_second: f64,
    /// Requests one client may make in a burst after being idle.
    #[arg(long, env = "HOURCI_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,
    /// Deprecated: use --trusted-proxy. Kept working: the same as
    /// `--trusted-proxy 127.0.0.0/8 --trusted-proxy ::1` (a reverse proxy on this host).
    #[arg(long, env = "HOURCI_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// Address or CIDR of a reverse proxy whose X-Forwarded-For names the client, e.g.
    /// 10.0.0.0/8 or ::1 (repeat the flag, or separate with commas in the environment
    /// variable). The client is the right-most X-Forwarded-For hop that is not itself
    /// such a proxy. From any other peer the header is ignored: clients could choose
    /// their own address. Trusted proxies are exempt from --max-connections-per-client.
    #[arg(long = "trusted-proxy", env = "HOURCI_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Most open connections, all clients together; more are closed at once (see also
    /// --max-connections-per-client).
    #[arg(long, env = "HOURCI_MAX_CONNECTIONS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a client has to send a whole request head (slow senders are cut off); for
    /// a new connection counted from when it connects, and for HTTP/2 covering the
    /// connection preface and first SETTINGS frame.
    #[arg(long, env = "HOURCI_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body; 408 after that.
    #[arg(long, env = "HOURCI_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,
    /// Largest total size of a request's headers, in bytes; 431 over it.
    #[arg(long, env = "HOURCI_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Most open connections from one client address (IPv6: one /64); more are closed
    /// at once, before taking one of --max-connections. 0: no per-client cap.
    #[arg(long, env = "HOURCI_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128)]
    pub max_connections_per_client: u32,
    /// Seconds a connection may stay open with no request in flight (HTTP/1 keep-alive
    /// and HTTP/2 alike), and a peer may take no byte of an answer, before it is closed.
    #[arg(long, env = "HOURCI_IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Most concurrent requests (streams) on one HTTP/2 connection.
    #[arg(long, env = "HOURCI_HTTP2_MAX_STREAMS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
    /// Most bytes of request bodies held in memory at once, all clients together; a
    /// body that would go over it gets 503 + Retry-After (`busy`) unread. Only /batch
    /// takes a body; its Content-Length (or 1 MiB when none is declared) is reserved
    /// before the first byte is read.
    #[arg(long, env = "HOURCI_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes_in_flight: usize,
    /// The same, for one client address (IPv6: one /64); over it: 429 + Retry-After.
    /// At least 1 MiB (one full batch).
    #[arg(long, env = "HOURCI_MAX_BODY_BYTES_IN_FLIGHT_PER_CLIENT", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes_in_flight_per_client: usize,
    /// Most clients the rate limiter tracks. When full, clients whose bucket has
    /// refilled are forgotten; if all are still being limited, new clients get 503
    /// (never let through unlimited).
    #[arg(long, env = "HOURCI_RATE_LIMIT_MAX_CLIENTS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_limit_max_clients: u64,
}

/// How the connections of `--database-url` are pooled (`--database-pool-mode`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolMode {
    /// Each connection is one PostgreSQL backend for its whole life: named prepared
    /// statements are cached per connection (the fastest).
    #[default]
    Session,
    /// PgBouncer `pool_mode = transaction` (1.18 keeps no prepared statements).
    Transaction,
}

impl ServeArgs {
    pub fn group_config(&self) -> GroupConfig {
        GroupConfig {
            max_events: self.group_max_events as usize,
            max_wait: Duration::from_millis(self.group_max_wait_ms),
            writers: self.writers as usize,
            queue_capacity: self.queue_capacity as usize,
            db_timeout: Duration::from_millis(self.db_timeout_ms.max(1)),
        }
    }

    pub fn pool_size(&self) -> u32 {
        self.db_pool_size.unwrap_or(self.writers + 1)
    }

    pub fn rate_limit_config(&self) -> crate::limits::RateLimitConfig {
        crate::limits::RateLimitConfig {
            per_second: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
            max_clients: self.rate_limit_max_clients as usize,
        }
    }

    /// `--trusted-proxy` values, plus loopback for the deprecated `--trust-proxy`.
    pub fn trusted_proxies(&self) -> anyhow::Result<crate::limits::TrustedProxies> {
        let mut proxies = crate::limits::TrustedProxies::parse(&self.trusted_proxies)?;
        if self.trust_proxy {
            proxies.extend(crate::limits::TrustedProxies::loopback());
        }
        Ok(proxies)
    }
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Connect as the ADMIN role (owner of the database), not the writer.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The existing login role the collector connects as; gets CONNECT and EXECUTE only.
    #[arg(long, env = "HOURCI_WRITER_ROLE", default_value = "hourofciuser")]
    pub writer_role: String,
    /// An existing login role for the read side (`hourofci-insights`, analysts): gets
    /// CONNECT and SELECT on the two tables and the deletion log only. Must not be the writer role.
    #[arg(long, env = "HOURCI_READER_ROLE")]
    pub reader_role: Option<String>,
}

/// A database URL as it may appear in logs and errors: the password (in the user
/// info or as a `password`-like query parameter) replaced by `***`, e.g.
/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
///
/// A URL that does not parse, or whose user info cannot be told apart (an `@` after
/// the host, as an unencoded `/` in the password makes), is not shown at all: any
/// part of it could be the password.
pub fn redact_url(text: &str) -> String {
    const HIDDEN: &str = "<URL not shown: it does not parse>";
    let Ok(mut url) = url::Url::parse(text) else {
        return HIDDEN.to_string();
    };
    let after_host = format!(
        "{}{}{}",
        url.path(),
        url.query().unwrap_or(""),
        url.fragment().unwrap_or("")
    );
    if after_host.contains('@') || url.cannot_be_a_base() {
        return HIDDEN.to_string();
    }
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return HIDDEN.to_string();
    }
    let is_secret = |key: &str| key.to_ascii_lowercase().contains("pass");
    if url.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:p%40ss@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("postgres:///db?host=/run/postgresql"),
            "postgres:///db?host=/run/postgresql"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=verify-full&password=s3cret&sslpassword=k3y"),
            "postgres://u@h/db?sslmode=verify-full&password=***&sslpassword=***"
        );
    }

    #[test]
    fn never_shows_a_password_whatever_the_url_form() {
        let secrets = ["s3cr/et", "12/34", "a@b", "p%40ss", "s3cret", "s3:cret", "9/x@y"];
        for secret in secrets {
            for url in [
                format!("postgres://u:{secret}@h:5432/db"),
                format!("postgres://u:{secret}@h/db?sslmode=require"),
                format!("postgresql://u@h/db?password={secret}"),
                format!("postgres://u@h/db?sslmode=require&PassWord={secret}"),
                format!("postgres://u:{secret}@/db?host=/run/postgresql"),
                format!("u:{secret}@h/db"),
                format!("host=h user=u password={secret}"),
            ] {
                let shown = redact_url(&url);
                for part in secret.split(['/', '@', ':', '%']).filter(|p| p.len() > 1) {
                    assert!(!shown.contains(part), "{url:?} shown as {shown:?} leaks {part:?}");
                }
            }
        }
        assert!(redact_url("postgres://u:pa/ss@h/db").starts_with("<URL not shown"));
        assert!(
            redact_url("postgres://u:12/x@h/db").starts_with("<URL not shown"),
            "host u, port 12, @ in the path"
        );
    }

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["hourofci-collector", "--writers", "2"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.writers, 2);
        assert_eq!(cli.serve.pool_size(), 3);
        assert_eq!(cli.serve.group_max_events, 256);
        let cli = Cli::try_parse_from(["hourofci-collector", "migrate", "--database-url", "postgres://a@b/c"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate(m)) if m.writer_role == "hourofciuser"));
    }

    #[test]
    fn allow_origin_repeats_and_splits_on_commas() {
        let cli = Cli::try_parse_from([
            "x",
            "--allow-origin",
            "https://a.org,https://b.org",
            "--allow-origin",
            "http://c",
        ])
        .unwrap();
        assert_eq!(cli.serve.allow_origins, ["https://a.org", "https://b.org", "http://c"]);
        let cli = Cli::try_parse_from([
            "x",
            "--legacy-allow-origin",
            "https://a.org,https://*.b.org",
            "--admin-bind",
            "127.0.0.1:9400",
        ])
        .unwrap();
        assert_eq!(cli.serve.legacy_allow_origins, ["https://a.org", "https://*.b.org"]);
        assert_eq!(cli.serve.admin_bind, Some("127.0.0.1:9400".parse().unwrap()));
    }

    #[test]
    fn trusted_proxy_repeats_and_the_old_switch_means_loopback() {
        let cli =
            Cli::try_parse_from(["x", "--trusted-proxy", "10.0.0.0/8,::1", "--trusted-proxy", "192.0.2.1"]).unwrap();
        let p = cli.serve.trusted_proxies().unwrap();
        assert!(p.contains("10.9.9.9".parse().unwrap()) && p.contains("192.0.2.1".parse().unwrap()));
        assert!(!p.contains("127.0.0.1".parse().unwrap()));
        let cli = Cli::try_parse_from(["x", "--trust-proxy"]).unwrap();
        let p = cli.serve.trusted_proxies().unwrap();
        assert!(p.contains("127.0.0.1".parse().unwrap()) && p.contains("::1".parse().unwrap()));
        assert!(!p.contains("10.0.0.1".parse().unwrap()));
        assert!(Cli::try_parse_from(["x"])
            .unwrap()
            .serve
            .trusted_proxies()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn database_url_file_is_read() {
        let dir = std::env::temp_dir().join(format!("hourofci-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("url");
        std::fs::write(&f, "postgres://w:pw@h/db\n").unwrap();
        let args = DatabaseArgs {
            database_url: None,
            database_url_file: Some(f),
        };
        assert_eq!(args.resolve().unwrap().as_deref(), Some("postgres://w:pw@h/db"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
