//! The pseudonymous learner id (sql/0004, `X-Learner-Id`, a batch event's `learner_id`)
//! in both stores, the upgrade of a database from 0001-0003 with rows, and the reader
//! role of `migrate --reader-role`: it can SELECT the two tables and nothing else, and
//! the writer still cannot read. Every right is tried as the role itself, over its own
//! connection.

mod common;

use common::*;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const READER_PASSWORD: &str = "reader-pw";

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string())
}

async fn learner_of(pool: &sqlx::PgPool, table: &str, answer: &str) -> Option<Uuid> {
    assert!(table == "loggingtable" || table == "loggingtable_test");
    sqlx::query_scalar(&format!("SELECT learner_id FROM {table} WHERE answer = $1"))
        .bind(answer)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{answer}: {e}"))
}

#[tokio::test]
async fn postgres_stores_the_learner_id_of_posts_and_batches() {
    let (app, db) = spawn_pg_app(&[]).await;
    let learner = Uuid::new_v4();
    let res = app
        .client
        .post(format!("{}/{UA}/gateway/beginner/1A/with-learner", app.url))
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .header("X-Learner-Id", learner.to_string().to_uppercase())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        app.post_event(
            &format!("/{UA}/gateway/beginner/1A/without-learner"),
            Uuid::new_v4(),
            None
        )
        .await
        .status(),
        201
    );
    for bad in ["bob", "00000000-0000-0000-0000-000000000000"] {
        let res = app
            .client
            .post(format!("{}/{UA}/gateway/beginner/1A/bad-learner", app.url))
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .header("X-Learner-Id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["field"], "X-Learner-Id");
    }
    assert_eq!(
        app.get(&format!("/{UA}/gateway/beginner/1A/legacy")).await.status(),
        200
    );
    let other = Uuid::new_v4();
    let event = |answer: &str, learner: serde_json::Value| {
        json!({"id": Uuid::new_v4(), "user_agent": UA, "lesson": "gateway", "level": "beginner", "question": "2B",
               "answer": answer, "learner_id": learner})
    };
    let reply: serde_json::Value = app
        .post_batch(
            "/test/batch",
            &json!({"events": [event("batch-learner", json!(other)), event("batch-null", json!(null)), event("batch-bad", json!("x"))]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["written", "written", "invalid"]);

    assert_eq!(
        learner_of(&db.admin, "loggingtable", "with-learner").await,
        Some(learner)
    );
    assert_eq!(learner_of(&db.admin, "loggingtable", "without-learner").await, None);
    assert_eq!(learner_of(&db.admin, "loggingtable", "legacy").await, None);
    assert_eq!(
        learner_of(&db.admin, "loggingtable_test", "batch-learner").await,
        Some(other)
    );
    assert_eq!(learner_of(&db.admin, "loggingtable_test", "batch-null").await, None);
    assert_eq!(
        count(&db.admin, "loggingtable").await,
        3,
        "the refused learner ids wrote nothing"
    );
    assert_eq!(count(&db.admin, "loggingtable_test").await, 2);

    // A retry with another (or no) learner id is still a duplicate: the id is not content.
    let id = Uuid::new_v4();
    let path = format!("/{UA}/gateway/beginner/1A/retried");
    let first = app
        .client
        .post(format!("{}{path}", app.url))
        .header("Idempotency-Key", id.to_string());
    assert_eq!(
        first
            .header("X-Learner-Id", learner.to_string())
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(app.post_event(&path, id, None).await.status(), 200);
    assert_eq!(learner_of(&db.admin, "loggingtable", "retried").await, Some(learner));
    app.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn upgrade_from_0003_keeps_rows_with_a_null_learner_and_writes_with_v3() {
    let (name, admin_url) = PG.fresh_database("lrn");
    let mut admin_conn = PgConnection::connect(&admin_url).await.unwrap();
    let mut old = sqlx::migrate!("../sql");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 3)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(old.migrations.len(), 3);
    old.run(&mut admin_conn).await.expect("0001-0003");
    sqlx::query(
        "SELECT * FROM log_events_v2(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
         ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['before 0004'])",
    )
    .execute(&mut admin_conn)
    .await
    .unwrap();
    let writer_role = format!("{name}_writer");
    PG.create_login_role(&writer_role, WRITER_PASSWORD);
    hourofci_collector::migrate::run(&admin_url, &writer_role)
        .await
        .expect("upgrade");
    let learner = Uuid::new_v4();
    let mut writer = PgConnection::connect(&PG.url_for(&writer_role, WRITER_PASSWORD, &name))
        .await
        .unwrap();
    let verdicts: Vec<(i32, String)> = sqlx::query_as(
        "SELECT * FROM public.log_events_v3(ARRAY[false, true], ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[now(), now()], ARRAY['ua', 'ua'], ARRAY['gateway', 'gateway'], ARRAY['beginner', 'beginner'],
         ARRAY['1A', '1A'], ARRAY['after 0004', 'after 0004 test'], ARRAY[$1, NULL]::uuid[])",
    )
    .bind(learner)
    .fetch_all(&mut writer)
    .await
    .unwrap();
    assert_eq!(verdicts, [(1, "written".to_string()), (2, "written".to_string())]);
    // The old function keeps working for older collectors (NULL learner).
    sqlx::query(
        "SELECT * FROM public.log_events_v2(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
         ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['v2 after 0004'])",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    assert_eq!(learner_of(&admin, "loggingtable", "before 0004").await, None);
    assert_eq!(learner_of(&admin, "loggingtable", "after 0004").await, Some(learner));
    assert_eq!(learner_of(&admin, "loggingtable_test", "after 0004 test").await, None);
    assert_eq!(learner_of(&admin, "loggingtable", "v2 after 0004").await, None);
    // v3 has the same search_path rule as every other write function.
    let configs: Vec<String> = sqlx::query_scalar(
        "SELECT array_to_string(proconfig, ',') FROM pg_proc WHERE proname = 'log_events_v3' AND prosecdef",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(configs, ["search_path=pg_catalog, pg_temp"]);
    let public_may_execute: bool = sqlx::query_scalar(
        "SELECT has_function_privilege('public', 'public.log_events_v3(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[], uuid[])', 'EXECUTE')",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(!public_may_execute, "only the writer may call log_events_v3");
}

#[tokio::test]
async fn the_reader_can_select_and_nothing_else_and_the_writer_still_cannot_read() {
    let db = fresh_db(&PG).await;
    let reader_role = format!("{}_reader", db.name);
    PG.create_login_role(&reader_role, READER_PASSWORD);
    let refused = hourofci_collector::migrate::grant_reader(&db.admin_url, &db.writer_role, &db.writer_role).await;
    assert!(refused.unwrap_err().to_string().contains("must not be the writer"));
    let missing = hourofci_collector::migrate::grant_reader(&db.admin_url, "no_such_reader", &db.writer_role).await;
    assert!(missing.unwrap_err().to_string().contains("does not exist"));
    let owner_member = format!("{}_owner_member", db.name);
    PG.create_login_role(&owner_member, READER_PASSWORD);
    PG.psql("postgres", &format!("GRANT {}_admin TO {owner_member}", db.name));
    let refused = hourofci_collector::migrate::grant_reader(&db.admin_url, &owner_member, &db.writer_role).await;
    assert!(
        refused.unwrap_err().to_string().contains("could write"),
        "a member of the owner is no reader"
    );
    // The role once had more (the original set-up's habits): migrate takes it back.
    PG.psql(
        &db.name,
        &format!("GRANT INSERT, DELETE ON loggingtable TO {reader_role}"),
    );
    hourofci_collector::migrate::grant_reader(&db.admin_url, &reader_role, &db.writer_role)
        .await
        .expect("grant reader");

    let mut writer = PgConnection::connect(&db.writer_url).await.unwrap();
    let learner = Uuid::new_v4();
    sqlx::query(
        "SELECT * FROM public.log_events_v3(ARRAY[false, true], ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[now(), now()], ARRAY['ua', 'ua'], ARRAY['gateway', 'gateway'], ARRAY['beginner', 'beginner'],
         ARRAY['1A', '1A'], ARRAY['p', 't'], ARRAY[$1, $1]::uuid[])",
    )
    .bind(learner)
    .execute(&mut writer)
    .await
    .unwrap();

    let mut reader = PgConnection::connect(&PG.url_for(&reader_role, READER_PASSWORD, &db.name))
        .await
        .unwrap();
    for table in ["loggingtable", "loggingtable_test"] {
        let seen: Vec<(String, Option<Uuid>)> =
            sqlx::query_as(&format!("SELECT answer, learner_id FROM public.{table}"))
                .fetch_all(&mut reader)
                .await
                .unwrap_or_else(|e| panic!("the reader reads {table}: {e}"));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, Some(learner));
        for write in [
            format!("INSERT INTO public.{table} (answer) VALUES ('reader wrote')"),
            format!("UPDATE public.{table} SET answer = 'reader changed'"),
            format!("DELETE FROM public.{table}"),
            format!("TRUNCATE public.{table}"),
        ] {
            let err = sqlx::query(&write).execute(&mut reader).await.expect_err(&write);
            assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{write}: {err}");
        }
        let err = sqlx::query(&format!("SELECT answer FROM public.{table}"))
            .fetch_all(&mut writer)
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("42501"),
            "the writer reads {table}: {err}"
        );
    }
    let err = sqlx::query(
        "SELECT * FROM public.log_events_v3(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
         ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['reader wrote'], ARRAY[NULL]::uuid[])",
    )
    .execute(&mut reader)
    .await
    .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "the reader cannot call the write function: {err}"
    );
    let err = sqlx::query("CREATE TEMPORARY TABLE t (x int)")
        .execute(&mut reader)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "nor create objects: {err}");
    assert_eq!(count(&db.admin, "loggingtable").await, 1);
    assert_eq!(count(&db.admin, "loggingtable_test").await, 1);
}

#[tokio::test]
async fn sqlite_stores_the_learner_id_and_upgrades_an_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A file as the collector made it before learner ids, with one row.
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query(
            "CREATE TABLE loggingtable (user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
             question TEXT, answer TEXT, id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, client_time TEXT,
             received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer) VALUES ('ua', 'gateway', 'beginner', '1A', 'old row')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let app = spawn_app(&["--sqlite-path", path.to_str().unwrap()]).await;
    let learner = Uuid::new_v4();
    let res = app
        .client
        .post(format!("{}/{UA}/gateway/beginner/1A/new%20row", app.url))
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .header("X-Learner-Id", learner.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let batch = json!({"events": [{"id": Uuid::new_v4(), "user_agent": UA, "lesson": "gateway", "level": "beginner",
        "question": "1A", "answer": "batch row", "learner_id": learner}]});
    assert_eq!(app.post_batch("/batch", &batch).await.status(), 200);
    app.server.shutdown().await.expect("shutdown");
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true),
    )
    .await
    .unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT answer, learner_id FROM loggingtable ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let l = Some(learner.to_string());
    assert_eq!(
        rows,
        [
            ("old row".to_string(), None),
            ("new row".to_string(), l.clone()),
            ("batch row".to_string(), l)
        ]
    );
}

/// A browser may send `X-Learner-Id` from an allowed origin: the preflight allows it.
#[tokio::test]
async fn the_cors_preflight_allows_the_learner_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cors.db");
    let app = spawn_app(&[
        "--sqlite-path",
        path.to_str().unwrap(),
        "--allow-origin",
        "https://lab.example.org",
    ])
    .await;
    let res = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/{UA}/gateway/beginner/1A/x", app.url),
        )
        .header("Origin", "https://lab.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "idempotency-key,x-client-time,x-learner-id",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("x-learner-id"), "{allowed}");
    app.server.shutdown().await.expect("shutdown");
}

/// The binary's `migrate --reader-role` makes the same grants (and only with the flag).
#[tokio::test]
async fn migrate_reader_role_flag_grants_select() {
    let (name, admin_url) = PG.fresh_database("lrncli");
    let (writer, reader) = (format!("{name}_writer"), format!("{name}_reader"));
    PG.create_login_role(&writer, WRITER_PASSWORD);
    PG.create_login_role(&reader, READER_PASSWORD);
    let migrate = |extra: &'static [&'static str]| {
        let admin_url = admin_url.clone();
        let (writer, reader) = (writer.clone(), reader.clone());
        async move {
            let mut args = vec![
                "migrate".to_string(),
                "--database-url".into(),
                admin_url,
                "--writer-role".into(),
                writer,
            ];
            if !extra.is_empty() {
                args.extend(["--reader-role".to_string(), reader]);
            }
            let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
                .args(&args)
                .env_remove("DATABASE_URL")
                .output();
            let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
                .await
                .expect("migrate within 2 minutes")
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    let can_select = || async {
        sqlx::query_scalar::<_, bool>("SELECT has_table_privilege($1, 'public.loggingtable_test', 'SELECT')")
            .bind(&reader)
            .fetch_one(&admin)
            .await
            .unwrap()
    };
    migrate(&[]).await;
    assert!(!can_select().await, "no reader grants without the flag");
    migrate(&["--reader-role"]).await;
    assert!(can_select().await);
}
