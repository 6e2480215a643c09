//! The collector's test harness, in the style of zero-to-production's `spawn_app`: one
//! function starts the real collector on a loopback port against the store a test
//! chooses, and returns a handle with its address, an HTTP client and access to the
//! database behind it.
//!
//! - [`spawn_app`]: the collector in-process with command-line flags, as the binary parses
//!   them; [`spawn_pg_app`] and [`spawn_sqlite_app`] create the store first (a fresh
//!   PostgreSQL database migrated by its admin, the collector connected AS THE WRITER; or
//!   a SQLite file in a temporary directory).
//! - Databases: [`PG`], one PostgreSQL cluster shared by a test binary's tests;
//!   [`TestDb`], a migrated database with its writer role; [`Pg`], a cluster of a test's
//!   own, for tests that stop and restart the server.
//! - [`raw_http`]: requests no client library would send, read off the wire.
//! - [`process`]: the built `hourofci-collector` binary as a child process (signals, RSS).
//! - [`fleet`]: clients that retry like the SDK, and the exactly-once check.
//!
//! It is a library crate (so each test binary links what it uses, with no dead-code
//! warnings); a test file reaches it with `mod common; use common::*;`. Every server it
//! starts dies with the test process, however that ends (testkit's watchdog).

pub mod fleet;
pub mod process;
pub mod raw_http;

pub use fleet::{assert_exactly_once, Fleet, FleetReport};
pub use process::CollectorProc;
pub use raw_http::{parse_response, raw_get, raw_request, wait_for_status, RawResponse};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use hourofci_collector::config::{Cli, ServeArgs};
use hourofci_collector::RunningServer;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use testkit::PgCluster;

/// A 32-hex user agent, as lessons and the SDK send (MD5 of `navigator.userAgent`).
pub const UA: &str = "3b5d5c3712955042212316173ccf37be";

/// Password of the login roles tests create by hand (a [`TestDb`]'s writer has its own).
pub const WRITER_PASSWORD: &str = "writer-pw";

/// `CI=true`: a missing prerequisite must fail the test, never skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Characters `encodeURIComponent` leaves alone: A-Z a-z 0-9 - _ . ! ~ * ' ( )
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// JavaScript's `encodeURIComponent`, as the SDK encodes each path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// `[/test]/{UA}/gateway/beginner/1A/{answer}`, the answer percent-encoded.
pub fn event_path(test: bool, answer: &str) -> String {
    format!(
        "{}/{UA}/gateway/beginner/1A/{}",
        if test { "/test" } else { "" },
        enc(answer)
    )
}

// ---------------------------------------------------------------------------------
// Databases

/// The test binary's shared PostgreSQL cluster ([`PgCluster::shared`]), started on first
/// use. A missing PostgreSQL fails the tests (never skips).
pub static PG: SharedPg = SharedPg;

/// See [`PG`].
pub struct SharedPg;

impl std::ops::Deref for SharedPg {
    type Target = PgCluster;
    fn deref(&self) -> &PgCluster {
        PgCluster::shared()
    }
}

/// A fresh database as production has it: owned and migrated by its admin role, with a
/// writer role that has exactly what `migrate` grants.
pub struct TestDb {
    pub name: String,
    pub admin_url: String,
    pub writer_role: String,
    /// Unlike anything else in the logs, so a leaked password is easy to spot.
    pub writer_password: String,
    /// The writer over TCP to the cluster's port.
    pub writer_url: String,
    /// Pool connected as the admin (owner), for reading rows back.
    pub admin: PgPool,
}

impl TestDb {
    /// The writer's URL through another port (a proxy's, PgBouncer's).
    pub fn writer_url_via(&self, port: u16) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{port}/{}",
            self.writer_role, self.writer_password, self.name
        )
    }
}

/// A migrated database with its writer role on `cluster` (usually `&PG`).
pub async fn fresh_db(cluster: &PgCluster) -> TestDb {
    let (name, admin_url) = cluster.fresh_database("coll");
    let writer_role = format!("{name}_writer");
    let writer_password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    cluster.create_login_role(&writer_role, &writer_password);
    hourofci_collector::migrate::run(&admin_url, &writer_role)
        .await
        .expect("migrate");
    let writer_url = cluster.url_for(&writer_role, &writer_password, &name);
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&admin_url)
        .await
        .expect("admin pool");
    TestDb {
        name,
        admin_url,
        writer_role,
        writer_password,
        writer_url,
        admin,
    }
}

/// A cluster of the test's own (it may stop and restart it) with one [`TestDb`].
pub struct Pg {
    pub cluster: PgCluster,
    pub db: TestDb,
}

impl Pg {
    pub async fn start() -> Pg {
        let cluster = tokio::task::spawn_blocking(|| PgCluster::start().expect("start PostgreSQL (testkit)"))
            .await
            .unwrap();
        let db = fresh_db(&cluster).await;
        Pg { cluster, db }
    }

    /// Run SQL as the superuser in the test database (Unix socket, blocking).
    pub fn sql(&self, q: &str) -> String {
        self.cluster.psql(&self.db.name, q)
    }

    /// Every stored event id of a table, with how many rows hold it.
    pub fn stored_ids(&self, table: &str) -> BTreeMap<String, u64> {
        let out = self.sql(&format!(
            "SELECT coalesce(event_id::text, 'NULL'), count(*) FROM {table} GROUP BY 1 ORDER BY 1"
        ));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (id, n) = l.rsplit_once('|').expect("id|count");
                (id.to_string(), n.parse().unwrap())
            })
            .collect()
    }
}

/// Rows of a table as (user_agent, lesson, lesson_level, question, answer, event_id).
pub type Row = (String, String, String, String, String, Option<uuid::Uuid>);

pub async fn rows(pool: &PgPool, table: &str) -> Vec<Row> {
    assert!(table == "loggingtable" || table == "loggingtable_test");
    sqlx::query_as(&format!(
        "SELECT user_agent, lesson, lesson_level, question, answer, event_id FROM {table} ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .expect("read rows")
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    assert!(table == "loggingtable" || table == "loggingtable_test");
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------
// The collector in-process

/// Serve arguments as the command line would give them (`args` without the program name).
pub fn serve_args(args: &[&str]) -> ServeArgs {
    let mut argv = vec!["hourofci-collector"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("valid collector flags").serve
}

/// A running collector and a client for it.
pub struct TestApp {
    pub server: RunningServer,
    /// `http://127.0.0.1:PORT` (https with TLS flags).
    pub url: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }

    /// POST an event path with an Idempotency-Key (and optional client time).
    pub async fn post_event(&self, path: &str, id: uuid::Uuid, client_time: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("Idempotency-Key", id.to_string());
        if let Some(t) = client_time {
            req = req.header("X-Client-Time", t);
        }
        req.send().await.expect("POST")
    }

    pub async fn post_batch(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("POST batch")
    }

    /// A sample of `/metrics` (0 when the series is absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        hourofci_collector::metrics::sample(&text, series).unwrap_or(0.0)
    }
}

/// Start a collector on `127.0.0.1:0` with these flags (the store's among them).
pub async fn spawn_app(args: &[&str]) -> TestApp {
    let mut argv = vec!["--bind", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let server = hourofci_collector::start(&serve_args(&argv))
        .await
        .expect("start collector");
    let url = server.url();
    let addr = server.local_addr();
    TestApp {
        server,
        url,
        addr,
        client: reqwest::Client::new(),
    }
}

/// A collector on a fresh database of the shared cluster, connected as the writer role.
pub async fn spawn_pg_app(extra: &[&str]) -> (TestApp, TestDb) {
    let db = fresh_db(&PG).await;
    let mut args = vec!["--database-url", db.writer_url.as_str()];
    args.extend_from_slice(extra);
    (spawn_app(&args).await, db)
}

/// A SQLite database file in a temporary directory, removed on drop.
pub struct SqliteDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// A collector on a fresh SQLite file.
pub async fn spawn_sqlite_app(extra: &[&str]) -> (TestApp, SqliteDb) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("events.db");
    let mut args = vec!["--sqlite-path", path.to_str().expect("UTF-8 temporary path")];
    args.extend_from_slice(extra);
    let app = spawn_app(&args).await;
    (app, SqliteDb { dir, path })
}
