//! Shared test harness: one throwaway PostgreSQL cluster per test binary, a fresh
//! database + writer role per test, and the collector served on a random port,
//! connected AS THE WRITER (after `migrate` ran as the admin).
#![allow(dead_code)]

use std::sync::LazyLock;

use clap::Parser;
use hourofci_collector::config::Cli;
use hourofci_collector::RunningServer;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use testkit::PgCluster;

/// One cluster for the whole test binary. A missing PostgreSQL fails the tests (never skips).
pub static PG: LazyLock<PgCluster> =
    LazyLock::new(|| PgCluster::start().expect("PostgreSQL is required for these tests (testkit::PgCluster::start)"));

pub const WRITER_PASSWORD: &str = "writer-pw";

/// A migrated database with its writer role.
pub struct TestDb {
    pub name: String,
    pub admin_url: String,
    pub writer_role: String,
    pub writer_url: String,
    /// Pool connected as the admin (owner), for reading rows back.
    pub admin: PgPool,
}

pub async fn fresh_db(cluster: &PgCluster) -> TestDb {
    let (name, admin_url) = cluster.fresh_database("coll");
    let writer_role = format!("{name}_writer");
    cluster.create_login_role(&writer_role, WRITER_PASSWORD);
    hourofci_collector::migrate::run(&admin_url, &writer_role).await.expect("migrate");
    let writer_url = cluster.url_for(&writer_role, WRITER_PASSWORD, &name);
    let admin = PgPoolOptions::new().max_connections(2).connect(&admin_url).await.expect("admin pool");
    TestDb { name, admin_url, writer_role, writer_url, admin }
}

pub struct TestApp {
    pub server: RunningServer,
    pub url: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.url)).send().await.expect("GET")
    }

    /// POST an event path with an Idempotency-Key (and optional client time).
    pub async fn post_event(&self, path: &str, id: uuid::Uuid, client_time: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.url)).header("Idempotency-Key", id.to_string());
        if let Some(t) = client_time {
            req = req.header("X-Client-Time", t);
        }
        req.send().await.expect("POST")
    }

    pub async fn post_batch(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.url)).json(body).send().await.expect("POST batch")
    }

    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        hourofci_collector::metrics::sample(&text, series).unwrap_or(0.0)
    }
}

/// Start a collector with command-line style arguments (as the binary parses them).
pub async fn spawn_app(args: &[&str]) -> TestApp {
    let mut argv = vec!["hourofci-collector", "--bind", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments");
    let server = hourofci_collector::start(&cli.serve).await.expect("start collector");
    let url = server.url();
    TestApp { server, url, client: reqwest::Client::new() }
}

/// A collector on a fresh PostgreSQL database of the shared cluster, as the writer role.
pub async fn spawn_pg_app(extra: &[&str]) -> (TestApp, TestDb) {
    let db = fresh_db(&PG).await;
    let mut args = vec!["--database-url", db.writer_url.as_str()];
    args.extend_from_slice(extra);
    (spawn_app(&args).await, db)
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

/// JavaScript's `encodeURIComponent`.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// MD5-hex-looking user agent, as lessons send.
pub const UA: &str = "3b5d5c3712955042212316173ccf37be";

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
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap()
}
