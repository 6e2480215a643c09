//! The embedded SQLite store (the zero-setup default) through HTTP, plus what does not
//! depend on the store: CORS, the SDK files, lessons file, limits, graceful shutdown.

mod common;

use common::*;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

struct SqliteApp {
    app: TestApp,
    db: SqliteDb,
}

impl SqliteApp {
    async fn start(extra: &[&str]) -> Self {
        let (app, db) = spawn_sqlite_app(extra).await;
        SqliteApp { app, db }
    }

    async fn reader(&self) -> SqlitePool {
        reader_at(&self.db.path).await
    }

    async fn answers(&self, table: &str) -> Vec<(String, Option<String>)> {
        assert!(table == "loggingtable" || table == "loggingtable_test");
        sqlx::query_as(&format!("SELECT answer, event_id FROM {table} ORDER BY id"))
            .fetch_all(&self.reader().await)
            .await
            .unwrap()
    }
}

async fn reader_at(path: &std::path::Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_legacy_get_stores_the_seven_values() {
    let s = SqliteApp::start(&[]).await;
    assert_eq!(s.app.get("/healthz").await.status(), 200);
    let res = s.app.get(&format!("/{UA}/spatial-thinking/advanced/6F/true")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "null");
    let row: (String, String, String, String, String, String, String, Option<String>) = sqlx::query_as(
        "SELECT user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id FROM loggingtable",
    )
    .fetch_one(&s.reader().await)
    .await
    .unwrap();
    assert_eq!(
        (
            row.0.as_str(),
            row.3.as_str(),
            row.4.as_str(),
            row.5.as_str(),
            row.6.as_str()
        ),
        (UA, "spatial-thinking", "advanced", "6F", "true")
    );
    assert!(
        chrono::NaiveDate::parse_from_str(&row.1, "%Y-%m-%d").is_ok(),
        "{}",
        row.1
    );
    assert!(
        chrono::NaiveTime::parse_from_str(&row.2, "%H:%M:%S%.f").is_ok(),
        "{}",
        row.2
    );
    assert_eq!(row.7, None);
}

#[tokio::test]
async fn sqlite_dedupes_and_round_trips_like_postgres() {
    let s = SqliteApp::start(&[]).await;
    let answer = "');DROP TABLE loggingtable;-- 😀 a/b?c#d%e+f\nnext line";
    let id = Uuid::new_v4();
    let path = format!("/{UA}/gateway/beginner/1A/{}", enc(answer));
    assert_eq!(
        s.app.post_event(&path, id, Some("2026-11-28T07:00:00Z")).await.status(),
        201
    );
    assert_eq!(s.app.post_event(&path, id, None).await.status(), 200);
    let events = json!({"events": [
        {"id": id, "user_agent": UA, "lesson": "gateway", "level": "beginner", "question": "1A", "answer": "again"},
        {"id": "7d2c0b38-1c7e-4d7e-9a4f-3b2b8f0c1d00", "user_agent": UA, "lesson": "gateway", "level": "beginner", "question": "1A", "answer": ".."},
        {"id": "7d2c0b38-1c7e-4d7e-9a4f-3b2b8f0c1d00", "user_agent": UA, "lesson": "gateway", "level": "beginner", "question": "1A", "answer": ".."},
        {"id": "7d2c0b38-1c7e-4d7e-9a4f-3b2b8f0c1d01", "user_agent": UA, "lesson": "nope", "level": "beginner", "question": "1A", "answer": "x"}
    ]});
    let body: Value = s.app.post_batch("/batch", &events).await.json().await.unwrap();
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    // Same id, other answer than stored: conflict; the same event again: duplicate.
    assert_eq!(statuses, ["conflict", "written", "duplicate", "invalid"]);
    let stored = s.answers("loggingtable").await;
    assert_eq!(
        stored,
        vec![
            (answer.to_string(), Some(id.to_string())),
            (
                "..".to_string(),
                Some("7d2c0b38-1c7e-4d7e-9a4f-3b2b8f0c1d00".to_string())
            ),
        ]
    );
    assert_eq!(
        s.app
            .post_event(&format!("/test/{UA}/gateway/beginner/1A/t"), Uuid::new_v4(), None)
            .await
            .status(),
        201
    );
    assert_eq!(s.answers("loggingtable_test").await.len(), 1);
    assert_eq!(s.answers("loggingtable").await.len(), 2);
}

#[tokio::test]
async fn cors_only_for_allowed_origins() {
    let s = SqliteApp::start(&["--allow-origin", "https://lab.example.org"]).await;
    let url = format!("{}/{UA}/gateway/beginner/1A/x", s.app.url);
    let preflight = |origin: &'static str| {
        s.app
            .client
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "idempotency-key,x-client-time,content-type",
            )
            .send()
    };
    let res = preflight("https://lab.example.org").await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], "https://lab.example.org");
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("idempotency-key") && allowed.contains("x-client-time"),
        "{allowed}"
    );
    let res = preflight("https://evil.example.com").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));

    let res = s
        .app
        .client
        .post(&url)
        .header("Origin", "https://lab.example.org")
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://lab.example.org");
    // The legacy GET routes follow --legacy-allow-origin (default `*`, as the original:
    // old lessons alert("Error") on any answer they cannot read), not --allow-origin.
    let res = s
        .app
        .client
        .get(format!("{}/{UA}/gateway/beginner/1A/y", s.app.url))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn wildcard_origin_behaves_like_the_original_service() {
    let s = SqliteApp::start(&["--allow-origin", "*"]).await;
    let res = s
        .app
        .client
        .get(format!("{}/{UA}/gateway/beginner/1A/y", s.app.url))
        .header("Origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn sdk_files_are_served_with_types_and_cors() {
    let sdk = tempfile::tempdir().unwrap();
    std::fs::write(sdk.path().join("hourofci-log.js"), "export const x = 1;\n").unwrap();
    std::fs::write(sdk.path().join("hourofci_sdk_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let s = SqliteApp::start(&[
        "--sdk-dir",
        sdk.path().to_str().unwrap(),
        "--allow-origin",
        "http://127.0.0.1:8888",
    ])
    .await;
    let get = |file: &str| {
        s.app
            .client
            .get(format!("{}/sdk/{file}", s.app.url))
            .header("Origin", "http://127.0.0.1:8888")
            .send()
    };
    let res = get("hourofci-log.js").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(res.headers()["access-control-allow-origin"], "http://127.0.0.1:8888");
    assert_eq!(res.text().await.unwrap(), "export const x = 1;\n");
    let res = get("hourofci_sdk_bg.wasm").await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/wasm");
    assert_eq!(res.headers()["access-control-allow-origin"], "http://127.0.0.1:8888");
    assert_eq!(get("missing.js").await.unwrap().status(), 404);
    assert_eq!(get("../Cargo.toml").await.unwrap().status(), 404);
}

#[tokio::test]
async fn lessons_file_and_answer_limit_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let lessons = dir.path().join("lessons.json");
    std::fs::write(&lessons, r#"{"lessons":["new-lesson"],"levels":["expert"]}"#).unwrap();
    let s = SqliteApp::start(&["--lessons-file", lessons.to_str().unwrap(), "--max-answer-bytes", "10"]).await;
    assert_eq!(s.app.get(&format!("/{UA}/new-lesson/expert/1A/ok")).await.status(), 200);
    assert_eq!(s.app.get(&format!("/{UA}/gateway/beginner/1A/ok")).await.status(), 404);
    let res = s
        .app
        .post_event(
            &format!("/{UA}/new-lesson/expert/1A/{}", "x".repeat(11)),
            Uuid::new_v4(),
            None,
        )
        .await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        s.app
            .post_event(
                &format!("/{UA}/new-lesson/expert/1A/{}", "é".repeat(5)),
                Uuid::new_v4(),
                None
            )
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn router_works_in_process_with_oneshot() {
    use tower::ServiceExt;
    let s = SqliteApp::start(&[]).await;
    let router = hourofci_collector::app::router(s.app.server.state().clone());
    // Five segments starting with "test" is a production row whose user agent is "test".
    let req = axum::http::Request::get("/test/gateway/beginner/1A/a%2Fb")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT user_agent, answer FROM loggingtable")
        .fetch_all(&s.reader().await)
        .await
        .unwrap();
    assert_eq!(rows, vec![("test".to_string(), "a/b".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_commits_queued_events_before_returning() {
    // Writers wait up to 3 s to fill a group, so the events are still queued at shutdown.
    let s = SqliteApp::start(&["--group-max-wait-ms", "3000", "--writers", "1"]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = s.app.client.clone();
        let url = format!("{}/{UA}/gateway/beginner/1A/queued-{i}", s.app.url);
        tasks.spawn(async move {
            client
                .post(url)
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let mut queued = 0.0;
    for _ in 0..200 {
        queued = s.app.metric("hourofci_queued_events").await;
        if queued >= 20.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(queued, 20.0, "all 20 events are waiting for a commit");
    let SqliteApp { app, db } = s;
    app.server.shutdown().await.unwrap();
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 201);
    }
    let reader = reader_at(&db.path).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable")
        .fetch_one(&reader)
        .await
        .unwrap();
    assert_eq!(n, 20, "every answered event was committed before shutdown returned");
}
