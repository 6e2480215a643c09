//! An event id is one event: the same id with other content is a `conflict` (409 /
//! batch status), never silently a duplicate, in both stores. One event the database
//! cannot store (an emoji in a LATIN1 database) is refused alone (422 `invalid`) while
//! the events committed with it are written; an outage stays 503 for everyone. The
//! SQLite files are private to their owner.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

/// Where to read the rows back from.
enum Rows {
    Pg(sqlx::PgPool),
    Sqlite(std::path::PathBuf),
}

impl Rows {
    /// (user_agent, lesson, level, question, answer, event_id as text), in insertion order.
    async fn of(&self, table: &str) -> Vec<(String, String, String, String, String, Option<String>)> {
        assert!(table == "loggingtable" || table == "loggingtable_test");
        match self {
            Rows::Pg(pool) => sqlx::query_as(&format!(
                "SELECT user_agent, lesson, lesson_level, question, answer, event_id::text FROM {table} ORDER BY id"
            ))
            .fetch_all(pool)
            .await
            .unwrap(),
            Rows::Sqlite(path) => {
                let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
                    .await
                    .unwrap();
                sqlx::query_as(&format!(
                    "SELECT user_agent, lesson, lesson_level, question, answer, event_id FROM {table} ORDER BY id"
                ))
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        }
    }
}

fn batch_event(id: &str, ua: &str, lesson: &str, level: &str, question: &str, answer: &str) -> Value {
    json!({"id": id, "user_agent": ua, "lesson": lesson, "level": level, "question": question, "answer": answer})
}

async fn post_with_key(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.url))
        .header("Idempotency-Key", key)
        .send()
        .await
        .unwrap()
}

/// The whole conflict contract against one running collector.
async fn conflicts_are_reported_and_the_stored_row_is_kept(app: &TestApp, stored: &Rows) {
    const OTHER_UA: &str = "00000000000000000000000000000000";
    let id = Uuid::new_v4();
    let original = format!("/{UA}/gateway/beginner/1A/first");
    assert_eq!(app.post_event(&original, id, None).await.status(), 201);

    // Each field changed in turn, and the other table: 409 on the single route.
    let changed = [
        format!("/{OTHER_UA}/gateway/beginner/1A/first"),
        format!("/{UA}/big-data/beginner/1A/first"),
        format!("/{UA}/gateway/advanced/1A/first"),
        format!("/{UA}/gateway/beginner/2A/first"),
        format!("/{UA}/gateway/beginner/1A/second"),
        format!("/test/{UA}/gateway/beginner/1A/first"),
    ];
    let upper = id.to_string().to_uppercase();
    let simple = id.simple().to_string();
    for (i, path) in changed.iter().enumerate() {
        // The id in another spelling of the same UUID is the same id.
        let key = [id.to_string(), upper.clone(), simple.clone()][i % 3].clone();
        let res = post_with_key(app, path, &key).await;
        assert_eq!(res.status(), 409, "{path} with key {key}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "conflict", "{body}");
        assert_eq!(body["field"], Value::Null, "{body}");
        assert!(
            body["rule"].as_str().is_some_and(|r| r.contains("already stored")),
            "{body}"
        );
    }
    // The same content again, in any spelling of the id: a duplicate.
    let res = post_with_key(app, &original, &upper).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"id": id.to_string(), "status": "duplicate"})
    );

    // In a batch: per-event status `conflict` with a reason; the identical event is a duplicate.
    let events = vec![
        batch_event(&simple, OTHER_UA, "gateway", "beginner", "1A", "first"),
        batch_event(&upper, UA, "big-data", "beginner", "1A", "first"),
        batch_event(&id.to_string(), UA, "gateway", "advanced", "1A", "first"),
        batch_event(&id.to_string(), UA, "gateway", "beginner", "2A", "first"),
        batch_event(&id.to_string(), UA, "gateway", "beginner", "1A", "second"),
        batch_event(&id.to_string(), UA, "gateway", "beginner", "1A", "first"),
    ];
    let body: Value = app
        .post_batch("/batch", &json!({"events": events}))
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["conflict", "conflict", "conflict", "conflict", "conflict", "duplicate"],
        "{body}"
    );
    assert!(
        body["results"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already stored")),
        "{body}"
    );
    let body: Value = app
        .post_batch("/test/batch", &json!({"events": [events[5].clone()]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["results"][0]["status"], "conflict",
        "the same event sent to the test table: {body}"
    );

    // A new id, then the same id with other content inside one batch.
    let fresh = Uuid::new_v4().to_string();
    let body: Value = app
        .post_batch(
            "/batch",
            &json!({"events": [
                batch_event(&fresh, UA, "gateway", "beginner", "3C", "one"),
                batch_event(&fresh, UA, "gateway", "beginner", "3C", "two"),
                batch_event(&fresh.to_uppercase(), UA, "gateway", "beginner", "3C", "one"),
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["written", "conflict", "duplicate"], "{body}");

    // The nil UUID is no event id.
    let nil = Uuid::nil();
    let res = post_with_key(app, &format!("/{UA}/gateway/beginner/1A/nil"), &nil.to_string()).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["field"].as_str()),
        (Some("invalid"), Some("id")),
        "{body}"
    );
    let body: Value = app
        .post_batch(
            "/batch",
            &json!({"events": [batch_event(&nil.to_string(), UA, "gateway", "beginner", "1A", "nil")]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"][0]["status"], "invalid", "{body}");

    // Nothing of the conflicting events was stored; the first content is kept.
    let production = stored.of("loggingtable").await;
    assert_eq!(production.len(), 2, "{production:?}");
    assert_eq!(
        production[0],
        (
            UA.into(),
            "gateway".into(),
            "beginner".into(),
            "1A".into(),
            "first".into(),
            Some(id.to_string())
        )
    );
    assert_eq!(
        (production[1].4.as_str(), production[1].5.as_deref()),
        ("one", Some(fresh.as_str()))
    );
    assert!(stored.of("loggingtable_test").await.is_empty());
    assert_eq!(
        app.metric("hourofci_events_conflict_total").await,
        6.0 + 5.0 + 1.0 + 1.0
    );
}

#[tokio::test]
async fn postgres_conflicts_are_reported_and_the_stored_row_is_kept() {
    let (app, db) = spawn_pg_app(&["--rate-limit-per-second", "0"]).await;
    conflicts_are_reported_and_the_stored_row_is_kept(&app, &Rows::Pg(db.admin.clone())).await;
}

#[tokio::test]
async fn sqlite_conflicts_are_reported_and_the_stored_row_is_kept() {
    let (app, db) = spawn_sqlite_app(&["--rate-limit-per-second", "0"]).await;
    conflicts_are_reported_and_the_stored_row_is_kept(&app, &Rows::Sqlite(db.path.clone())).await;
}

/// Many requests for one id at once, with two different answers: one is written, the
/// requests carrying the same answer are duplicates, the others conflicts.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sends_of_one_id_write_one_row_and_the_rest_are_judged_against_it() {
    let (app, db) = spawn_pg_app(&["--rate-limit-per-second", "0", "--writers", "4"]).await;
    let id = Uuid::new_v4();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (client, url) = (
            app.client.clone(),
            format!("{}/{UA}/gateway/beginner/1A/{}", app.url, ["A", "B"][i % 2]),
        );
        tasks.spawn(async move {
            let res = client
                .post(url)
                .header("Idempotency-Key", id.to_string())
                .send()
                .await
                .unwrap();
            (["A", "B"][i % 2], res.status().as_u16())
        });
    }
    let mut by_answer: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (answer, status) = r.unwrap();
        by_answer.entry(answer).or_default().push(status);
    }
    let stored = rows(&db.admin, "loggingtable").await;
    assert_eq!(stored.len(), 1, "one row for one id");
    let winner = stored[0].4.as_str();
    for (answer, statuses) in &by_answer {
        let allowed: &[u16] = if *answer == winner { &[200, 201] } else { &[409] };
        assert!(
            statuses.iter().all(|s| allowed.contains(s)),
            "answer {answer} (stored {winner}): {statuses:?}"
        );
    }
    assert_eq!(
        by_answer[winner].iter().filter(|&&s| s == 201).count(),
        1,
        "{by_answer:?}"
    );
}

/// A database created with ENCODING 'LATIN1' (as some original deployments were), migrated,
/// with its writer role.
async fn latin1_db() -> TestDb {
    let name = format!("latin_{}", Uuid::new_v4().simple());
    PG.psql("postgres", &format!("CREATE ROLE {name}_admin LOGIN PASSWORD '{name}'"));
    PG.psql(
        "postgres",
        &format!("CREATE DATABASE {name} OWNER {name}_admin ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"),
    );
    PG.psql("postgres", &format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"));
    let admin_url = PG.url_for(&format!("{name}_admin"), &name, &name);
    let writer_role = format!("{name}_writer");
    PG.create_login_role(&writer_role, WRITER_PASSWORD);
    hourofci_collector::migrate::run(&admin_url, &writer_role)
        .await
        .expect("migrate the LATIN1 database");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&admin_url)
        .await
        .unwrap();
    let encoding: String =
        sqlx::query_scalar("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(encoding, "LATIN1");
    let writer_url = PG.url_for(&writer_role, WRITER_PASSWORD, &name);
    TestDb {
        name,
        admin_url,
        writer_role,
        writer_password: WRITER_PASSWORD.into(),
        writer_url,
        admin,
    }
}

const ENCODING_RULE: &str = "the database cannot store this text in its encoding";

#[tokio::test(flavor = "multi_thread")]
async fn one_event_the_database_cannot_store_is_refused_alone_and_the_others_are_written() {
    let db = latin1_db().await;
    // One writer that waits for more: the concurrent requests share groups with the bad ones.
    let app = spawn_app(&[
        "--database-url",
        &db.writer_url,
        "--writers",
        "1",
        "--group-max-wait-ms",
        "200",
        "--rate-limit-per-second",
        "0",
    ])
    .await;
    let app = std::sync::Arc::new(app);

    let mut batch = Vec::new();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for i in 0..20 {
        let answer = if i == 7 {
            "emoji 😀".to_string()
        } else {
            format!("café {i}")
        };
        if i != 7 {
            expected.insert(answer.clone());
        }
        batch.push(batch_event(
            &Uuid::new_v4().to_string(),
            UA,
            "gateway",
            "beginner",
            "1A",
            &answer,
        ));
    }
    let mut singles = tokio::task::JoinSet::new();
    for i in 0..12 {
        let app = app.clone();
        let answer = if i % 4 == 3 {
            format!("👩🏽‍🔬 {i}")
        } else {
            format!("naïve {i}")
        };
        if i % 4 != 3 {
            expected.insert(answer.clone());
        }
        singles.spawn(async move {
            let res = app
                .post_event(
                    &format!("/{UA}/big-data/advanced/2B/{}", enc(&answer)),
                    Uuid::new_v4(),
                    None,
                )
                .await;
            let status = res.status().as_u16();
            (answer, status, res.json::<Value>().await.ok())
        });
    }
    expected.insert("legacy ok".into());
    let (ok_path, bad_path) = (
        format!("/{UA}/gateway/beginner/1A/{}", enc("legacy ok")),
        format!("/{UA}/gateway/beginner/1A/{}", enc("legacy 😀")),
    );
    let batch_body = json!({"events": batch});
    let (legacy_ok, legacy_bad, batch_res) = tokio::join!(
        app.get(&ok_path),
        app.get(&bad_path),
        app.post_batch("/batch", &batch_body)
    );

    assert_eq!(batch_res.status(), 200);
    let body: Value = batch_res.json().await.unwrap();
    for (i, r) in body["results"].as_array().unwrap().iter().enumerate() {
        if i == 7 {
            assert_eq!(
                (r["status"].as_str(), r["reason"].as_str()),
                (Some("invalid"), Some(ENCODING_RULE)),
                "{r}"
            );
        } else {
            assert_eq!(r["status"], "written", "result {i}: {r}");
        }
    }
    while let Some(r) = singles.join_next().await {
        let (answer, status, body) = r.unwrap();
        if answer.starts_with("naïve") {
            assert_eq!(status, 201, "{answer}: {body:?}");
        } else {
            assert_eq!(status, 422, "{answer}: {body:?}");
            assert_eq!(
                body.unwrap(),
                json!({"error": "invalid", "field": null, "rule": ENCODING_RULE})
            );
        }
    }
    assert_eq!(legacy_ok.status(), 200);
    assert_eq!(legacy_bad.status(), 404, "every invalid legacy GET is 404");
    assert_eq!(legacy_bad.json::<Value>().await.unwrap()["rule"], ENCODING_RULE);

    // The good ones are stored once each, the bad ones not at all.
    let stored: Vec<String> = rows(&db.admin, "loggingtable").await.into_iter().map(|r| r.4).collect();
    assert_eq!(stored.len(), expected.len(), "{stored:?}");
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        app.metric("hourofci_db_errors_total").await,
        0.0,
        "a refused value is not a database outage"
    );

    // The verdict is final, not a 503 to retry forever: the same event again is 422 again.
    let id = Uuid::new_v4();
    let path = format!("/{UA}/gateway/beginner/1A/{}", enc("again 😀"));
    for _ in 0..2 {
        assert_eq!(app.post_event(&path, id, None).await.status(), 422);
    }
    assert_eq!(
        app.post_event(&format!("/{UA}/gateway/beginner/1A/after"), Uuid::new_v4(), None)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn a_database_outage_is_503_for_every_event_never_a_verdict() {
    // Nothing listens on this port: every commit fails with a connection error.
    let url = format!("postgres://writer:pw@127.0.0.1:{}/nothing", testkit::free_port());
    let app = spawn_app(&[
        "--database-url",
        &url,
        "--db-timeout-ms",
        "1500",
        "--rate-limit-per-second",
        "0",
    ])
    .await;
    for answer in ["fine", "emoji 😀"] {
        let res = app
            .post_event(
                &format!("/{UA}/gateway/beginner/1A/{}", enc(answer)),
                Uuid::new_v4(),
                None,
            )
            .await;
        assert_eq!(res.status(), 503, "{answer}");
        assert!(res.headers().contains_key("retry-after"));
    }
    let batch = json!({"events": [
        batch_event(&Uuid::new_v4().to_string(), UA, "gateway", "beginner", "1A", "fine"),
        batch_event(&Uuid::new_v4().to_string(), UA, "gateway", "beginner", "1A", "emoji 😀"),
    ]});
    assert_eq!(app.post_batch("/batch", &batch).await.status(), 503);
}

#[tokio::test]
async fn sqlite_database_and_its_wal_and_shm_are_created_owner_only() {
    // A common umask, which would leave new files readable by everyone (0644).
    unsafe { libc::umask(0o022) };
    let (app, db) = spawn_sqlite_app(&[]).await;
    let path = &db.path;
    assert_eq!(
        app.post_event(&format!("/{UA}/gateway/beginner/1A/private"), Uuid::new_v4(), None)
            .await
            .status(),
        201
    );
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    app.server.shutdown().await.unwrap();
}
