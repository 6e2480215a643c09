//! Shared by the insights tests: one real PostgreSQL cluster per test binary (testkit's
//! shared cluster, stopped with the test process), a fresh
//! database migrated by the collector with its writer and reader roles, rows written
//! through the collector's own stores, and the `hourofci-insights` binary run as a
//! process (bounded in time).
use std::path::Path;
use std::time::Duration;

use hourofci_collector::event::{NewEvent, Table};
use hourofci_collector::store::{Outcome, PgStore, SqliteStore};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use testkit::PgCluster;
use uuid::Uuid;

pub struct Db {
    /// The owner's URL (only `forget` needs it).
    #[allow(dead_code)]
    pub admin_url: String,
    pub writer_url: String,
    pub reader_url: String,
    pub admin: PgPool,
}

/// A database as production has it: migrated, a writer role, a reader role.
pub async fn fresh_db() -> Db {
    let pg = PgCluster::shared();
    let (name, admin_url) = pg.fresh_database("ins");
    let writer = format!("{name}_writer");
    let reader = format!("{name}_reader");
    pg.create_login_role(&writer, "writer-pw");
    pg.create_login_role(&reader, "reader-pw");
    hourofci_collector::migrate::run(&admin_url, &writer)
        .await
        .expect("migrate");
    hourofci_collector::migrate::grant_reader(&admin_url, &reader, &writer)
        .await
        .expect("reader role");
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&admin_url)
        .await
        .expect("admin pool");
    Db {
        writer_url: pg.url_for(&writer, "writer-pw", &name),
        reader_url: pg.url_for(&reader, "reader-pw", &name),
        admin_url,
        admin,
    }
}

pub fn event(table: Table, user_agent: &str, question: &str, answer: &str, learner: Option<Uuid>) -> NewEvent {
    NewEvent {
        id: Some(Uuid::new_v4()),
        table,
        user_agent: user_agent.to_string(),
        lesson: "gateway".to_string(),
        level: "beginner".to_string(),
        question: question.to_string(),
        answer: answer.to_string(),
        client_time: Some("2026-11-28T07:31:02.123456Z".parse().unwrap()),
        learner_id: learner,
    }
}

/// Write through the collector's PostgreSQL store, as the writer role.
pub async fn write_pg(db: &Db, events: &[NewEvent]) {
    let store = PgStore::connect_lazy(
        &db.writer_url,
        1,
        Duration::from_secs(30),
        hourofci_collector::config::PoolMode::Session,
    )
    .unwrap();
    let outcomes = store.write_group(events).await.expect("write as the writer");
    assert!(outcomes.iter().all(|o| *o == Outcome::Written), "{outcomes:?}");
}

/// Write through the collector's SQLite store (which creates the file).
#[allow(dead_code)]
pub async fn write_sqlite(path: &Path, events: &[NewEvent]) {
    let store = SqliteStore::open(path, Duration::from_secs(10)).await.unwrap();
    let outcomes = store.write_group(events).await.expect("write to SQLite");
    assert!(outcomes.iter().all(|o| *o == Outcome::Written), "{outcomes:?}");
    store.pool().close().await;
}

/// What one `hourofci-insights` run printed (export.rs and forget.rs; server.rs serves in-process).
#[allow(dead_code)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `hourofci-insights ARGS` (at most two minutes).
#[allow(dead_code)]
pub async fn insights(args: &[&str]) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hourofci-insights"))
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("hourofci-insights within 2 minutes")
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
