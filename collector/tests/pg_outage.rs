//! PostgreSQL stopped while the collector runs: 503 + Retry-After (never a 2xx), and
//! recovery on its own once the database is back. Own cluster: the test stops it.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::PgCluster;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn database_down_gives_503_and_the_collector_recovers_by_itself() {
    let mut pg = PgCluster::start().expect("PostgreSQL is required for this test");
    let db = fresh_db(&pg).await;
    let app = spawn_app(&[
        "--database-url",
        &db.writer_url,
        "--db-timeout-ms",
        "2000",
        "--retry-after-secs",
        "3",
    ])
    .await;
    let path = format!("/{UA}/cyberinfrastructure/gateway/7G/before");
    let before = Uuid::new_v4();
    assert_eq!(app.post_event(&path, before, None).await.status(), 201);
    db.admin.close().await;

    pg.stop_server().unwrap();
    let during = Uuid::new_v4();
    let during_path = format!("/{UA}/cyberinfrastructure/gateway/7G/during");
    let res = app.post_event(&during_path, during, None).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "3");
    let body: Value = res.json().await.unwrap();
    assert!(
        ["unavailable", "timeout"].contains(&body["error"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(
        app.get(&format!("/{UA}/cyberinfrastructure/gateway/7G/legacy"))
            .await
            .status(),
        503
    );
    let batch = json!({"events": [{"id": Uuid::new_v4(), "user_agent": UA, "lesson": "gateway", "level": "beginner",
                                   "question": "1A", "answer": "b"}]});
    assert_eq!(app.post_batch("/batch", &batch).await.status(), 503);
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(app.metric("hourofci_db_errors_total").await >= 1.0);

    pg.start_server().unwrap();
    // Retry like the SDK does; the collector was not restarted.
    let mut status = 0;
    for _ in 0..50 {
        status = app.post_event(&during_path, during, None).await.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, 201, "the event refused during the outage is written after it");
    assert_eq!(
        app.post_event(&path, before, None).await.status(),
        200,
        "the row from before the outage is still there"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.admin_url)
        .await
        .unwrap();
    let answers: Vec<String> = rows(&admin, "loggingtable").await.into_iter().map(|r| r.4).collect();
    assert_eq!(
        answers,
        ["before", "during"],
        "no 2xx without a row, no row without a 2xx"
    );
    app.server.shutdown().await.unwrap();
}

/// A pooled connection that broke while the collector was busy (the database restarted,
/// a proxy or an administrator dropped it between two groups) costs no answer: the
/// collector does not ping a connection that was in use a moment ago, so the write
/// meets the broken connection and is repeated once on a new one, instead of 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_between_groups_is_replaced_without_a_503() {
    let db = fresh_db(&PG).await;
    let app = spawn_app(&[
        "--database-url",
        &db.writer_url,
        "--db-pool-size",
        "1",
        "--writers",
        "1",
    ])
    .await;
    let terminate = format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
         WHERE usename = '{}' AND datname = '{}') t",
        db.writer_role, db.name
    );
    let mut ids = Vec::new();
    for round in 0..5 {
        let id = Uuid::new_v4();
        let path = format!("/{UA}/cyberinfrastructure/gateway/7G/round-{round}");
        assert_eq!(app.post_event(&path, id, None).await.status(), 201, "round {round}");
        ids.push(id);
        // Drop the collector's only connection right after its write.
        assert_eq!(
            PG.psql(&db.name, &terminate).trim(),
            "1",
            "round {round}: one writer session to drop"
        );
    }
    let last = Uuid::new_v4();
    let path = format!("/{UA}/cyberinfrastructure/gateway/7G/after");
    assert_eq!(app.post_event(&path, last, None).await.status(), 201);
    assert_eq!(app.metric("hourofci_db_errors_total").await, 0.0, "no group failed");
    let stored: Vec<String> = rows(&db.admin, "loggingtable").await.into_iter().map(|r| r.4).collect();
    assert_eq!(stored.len(), 6, "{stored:?}");
    app.server.shutdown().await.unwrap();
}
