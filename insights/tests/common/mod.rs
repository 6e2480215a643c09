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

/// The bearer token of [`serve`]'s service.
#[allow(dead_code)]
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The insights service on a random loopback port, over `target` (a database URL or a
/// SQLite file); stopped when dropped.
#[allow(dead_code)]
pub struct Service {
    pub url: String,
    pub state: hourofci_insights::server::AppState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(dead_code)]
pub async fn serve(target: &str) -> Service {
    use hourofci_insights::server::{router, AppState};
    let source = hourofci_insights::source::Source::open_read(target, 3)
        .await
        .expect("open the store");
    let state = AppState::new(source, TOKEN).unwrap();
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Service { url, state, task }
}
