//! The collector against a real PostgreSQL cluster, connected as the least-privileged
//! writer role: every route and status, legacy compatibility, dedupe, batches,
//! byte-for-byte round trips, the writer role's privileges, and group commit.

mod common;

use chrono::{NaiveDate, NaiveTime, Utc};
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn liveness_health_and_metrics() {
    let (app, _db) = spawn_pg_app(&[]).await;
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "Hello World!");
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("# TYPE hourofci_events_written_total counter"), "{text}");
    assert!(
        text.contains(r#"hourofci_http_requests_total{route="healthz",method="GET",status="200"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn legacy_url_of_an_old_lesson_stores_the_original_seven_values() {
    let (app, db) = spawn_pg_app(&[]).await;
    let before = Utc::now().naive_utc();
    // As an HTML animation built it: url_pre + answer.
    let res = app.get(&format!("/{UA}/geospatial-data/beginner/2C/true")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "null");
    // As a notebook's requests.get() sent a typed answer (spaces encoded by requests).
    let res = app.get(&format!("/{UA}/gateway/advanced/9Z/my%20answer")).await;
    assert_eq!(res.status(), 200);
    let after = Utc::now().naive_utc();

    type LegacyRow = (
        String,
        NaiveDate,
        NaiveTime,
        String,
        String,
        String,
        String,
        Option<Uuid>,
        bool,
    );
    let got: Vec<LegacyRow> = sqlx::query_as(
        "SELECT user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id,
                (date_log + time_log) = (received_at AT TIME ZONE 'UTC')
         FROM loggingtable ORDER BY id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(got.len(), 2);
    let (ua, date, time, lesson, level, question, answer, event_id, same_instant) = &got[0];
    assert_eq!(
        (
            ua.as_str(),
            lesson.as_str(),
            level.as_str(),
            question.as_str(),
            answer.as_str()
        ),
        (UA, "geospatial-data", "beginner", "2C", "true")
    );
    assert_eq!(*event_id, None, "legacy requests carry no event id");
    assert!(
        same_instant,
        "date_log and time_log are the UTC date and time of one instant"
    );
    let logged = date.and_time(*time);
    assert!(
        before <= logged && logged <= after,
        "{before} <= {logged} <= {after} (UTC)"
    );
    assert_eq!(got[1].6, "my answer");
    assert_eq!(count(&db.admin, "loggingtable_test").await, 0);
}

#[tokio::test]
async fn legacy_invalid_values_get_404_with_a_json_reason_and_write_nothing() {
    let (app, db) = spawn_pg_app(&[]).await;
    for (path, field) in [
        (format!("/{UA}/cooking/beginner/1A/x"), "lesson"),
        (format!("/{UA}/gateway/expert/1A/x"), "level"),
        (format!("/{UA}/gateway/beginner/1a/x"), "question"),
        (format!("/{UA}/gateway/beginner/10/x"), "question"),
        (format!("/{UA}/gateway/beginner/1A/a%00b"), "answer"),
        (format!("/{UA}/gateway/beginner/1A/%FF"), "answer"),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{path}: {body}");
        assert!(body["error"].is_string() && body["rule"].is_string(), "{body}");
    }
    // An unencoded slash makes a sixth segment: no such route, as in Flask.
    let res = app.get(&format!("/{UA}/gateway/beginner/1A/a/b")).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    assert_eq!(count(&db.admin, "loggingtable").await, 0);
}

#[tokio::test]
async fn old_injection_guard_is_gone_and_answers_are_verbatim() {
    let (app, db) = spawn_pg_app(&[]).await;
    let answer = "print(x); ); DROP TABLE loggingtable;--";
    let res = app.get(&format!("/{UA}/gateway/beginner/1A/{}", enc(answer))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(rows(&db.admin, "loggingtable").await[0].4, answer);
}

#[tokio::test]
async fn post_is_written_once_then_reported_duplicate() {
    let (app, db) = spawn_pg_app(&[]).await;
    let id = Uuid::new_v4();
    let path = format!("/{UA}/big-data/beginner/3B/{}", enc("42"));
    let res = app.post_event(&path, id, Some("2026-11-28T07:31:02.123Z")).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"id": id.to_string(), "status": "written"})
    );
    let res = app.post_event(&path, id, Some("2026-11-28T07:31:02.123Z")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"id": id.to_string(), "status": "duplicate"})
    );

    let got: Vec<(Option<Uuid>, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT event_id, client_time FROM loggingtable")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(got.len(), 1, "one row for one event id");
    assert_eq!(got[0].0, Some(id));
    assert_eq!(got[0].1.unwrap().to_rfc3339(), "2026-11-28T07:31:02.123+00:00");
    assert_eq!(app.metric("hourofci_events_duplicate_total").await, 1.0);
}

#[tokio::test]
async fn post_errors_have_the_documented_statuses() {
    let (app, db) = spawn_pg_app(&[]).await;
    let ok_path = format!("/{UA}/gateway/beginner/1A/x");
    let url = format!("{}{ok_path}", app.url);

    let res = app.client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 400, "missing Idempotency-Key");
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "Idempotency-Key");
    let res = app
        .client
        .post(&url)
        .header("Idempotency-Key", "not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app.post_event(&ok_path, Uuid::new_v4(), Some("yesterday")).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "X-Client-Time");

    let res = app
        .post_event(&format!("/{UA}/cooking/beginner/1A/x"), Uuid::new_v4(), None)
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({
            "error": "invalid", "field": "lesson",
            "rule": "must be one of: big-data, computational-thinking, cyberinfrastructure, gateway, geospatial-data, interdisciplinary-communication, parallel-computation, spatial-modeling-analytics, spatial-thinking, template"
        })
    );
    let res = app
        .post_event(&format!("/{UA}/gateway/beginner/1A/%FF%FE"), Uuid::new_v4(), None)
        .await;
    assert_eq!(res.status(), 422, "invalid UTF-8 after decoding");

    let big = "x".repeat(16 * 1024 + 1);
    let res = app
        .post_event(&format!("/{UA}/gateway/beginner/1A/{big}"), Uuid::new_v4(), None)
        .await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "answer");
    let huge = "%41".repeat(20_000);
    let res = app
        .post_event(&format!("/{UA}/gateway/beginner/1A/{huge}"), Uuid::new_v4(), None)
        .await;
    assert_eq!(res.status(), 414);

    let res = app.client.put(&url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "method_not_allowed");
    let res = app.get("/no/such").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        count(&db.admin, "loggingtable").await,
        0,
        "no refused request wrote a row"
    );
}

#[tokio::test]
async fn what_learners_type_round_trips_byte_for_byte() {
    let (app, db) = spawn_pg_app(&[]).await;
    let answers = [
        "');DROP TABLE loggingtable;--",
        "a/b?c#d%e+f g",
        "%2F stays %2F",
        "line one\nline two\r\n\ttabbed",
        "emoji 😀👩🏽‍🔬 and 中文, العربية, हिन्दी",
        "quotes \" ' ` and <tag> & entities &amp;",
        "   ",
        "\u{7f}\u{1}\u{fffd}",
    ];
    let mut expected = Vec::new();
    for a in answers {
        let id = Uuid::new_v4();
        let res = app
            .post_event(&format!("/{}/gateway/beginner/1A/{}", enc(UA), enc(a)), id, None)
            .await;
        assert_eq!(res.status(), 201, "{a:?}");
        expected.push((
            UA.to_string(),
            "gateway".into(),
            "beginner".into(),
            "1A".into(),
            a.to_string(),
            Some(id),
        ));
    }
    assert_eq!(rows(&db.admin, "loggingtable").await, expected);
}

/// "", "." and ".." cannot be a path segment from a browser (WHATWG URL parsing drops
/// dot segments, even `%2e%2e`), so such answers travel in a batch; check they round-trip.
#[tokio::test]
async fn answers_a_path_cannot_carry_round_trip_through_batch() {
    let (app, db) = spawn_pg_app(&[]).await;
    let answers = ["", ".", "..", "%2e%2e", "a\nb", "😀/../.."];
    let events: Vec<Value> = answers
        .iter()
        .map(|a| event(&Uuid::new_v4().to_string(), "gateway", a))
        .collect();
    let res = app.post_batch("/batch", &json!({"events": events})).await;
    let body: Value = res.json().await.unwrap();
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "written"),
        "{body}"
    );
    let stored: Vec<String> = rows(&db.admin, "loggingtable").await.into_iter().map(|r| r.4).collect();
    assert_eq!(stored, answers);
}

#[test]
fn any_unicode_string_round_trips_through_encode_uri_component() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, db) = rt.block_on(spawn_pg_app(&["--group-max-wait-ms", "0"]));
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(answer in "\\PC*|[^\\x00]{1,40}".prop_filter("a path segment a browser keeps: not empty, not a dot segment, no NUL", |s| {
        !s.is_empty() && s != "." && s != ".." && !s.contains('\0')
    }))| {
        let id = Uuid::new_v4();
        let status = rt.block_on(async {
            app.post_event(&format!("/{UA}/gateway/beginner/1A/{}", enc(&answer)), id, None).await.status()
        });
        prop_assert_eq!(status.as_u16(), 201);
        let stored: String = rt.block_on(
            sqlx::query_scalar("SELECT answer FROM loggingtable WHERE event_id = $1").bind(id).fetch_one(&db.admin),
        ).unwrap();
        prop_assert_eq!(stored.as_bytes(), answer.as_bytes());
    });
}

fn event(id: &str, lesson: &str, answer: &str) -> Value {
    json!({"id": id, "user_agent": UA, "lesson": lesson, "level": "beginner", "question": "4D",
           "answer": answer, "client_time": "2026-11-28T07:00:00.000Z"})
}

#[tokio::test]
async fn batch_answers_in_order_and_commits_in_one_transaction() {
    let (app, db) = spawn_pg_app(&[]).await;
    let known = Uuid::new_v4();
    assert_eq!(
        app.post_event(&format!("/{UA}/gateway/beginner/1A/first"), known, None)
            .await
            .status(),
        201
    );
    let commits_before = app.metric("hourofci_group_commits_total").await;

    let ids: Vec<String> = (0..50).map(|_| Uuid::new_v4().to_string()).collect();
    let mut events: Vec<Value> = ids
        .iter()
        .map(|id| event(id, "spatial-thinking", &format!("a {id}")))
        .collect();
    // Stored earlier with other content: a conflict. Repeated identically: a duplicate.
    events.insert(3, event(&known.to_string(), "gateway", "again"));
    events.insert(7, event(&ids[0], "spatial-thinking", &format!("a {}", ids[0])));
    events.insert(9, event(&Uuid::new_v4().to_string(), "cooking", "x"));
    events.insert(11, json!({"id": "not-a-uuid", "user_agent": UA}));
    let res = app.post_batch("/batch", &json!({"events": events, "dropped": 5})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 54);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["id"], events[i]["id"], "result {i} answers event {i}");
        let expected = match i {
            3 => "conflict",
            7 => "duplicate",
            9 | 11 => "invalid",
            _ => "written",
        };
        assert_eq!(r["status"], expected, "result {i}: {r}");
        assert_eq!(
            r.get("reason").is_some(),
            expected == "invalid" || expected == "conflict",
            "{r}"
        );
    }
    assert!(
        results[9]["reason"].as_str().unwrap().starts_with("lesson:"),
        "{}",
        results[9]
    );

    assert_eq!(count(&db.admin, "loggingtable").await, 1 + 50);
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM loggingtable WHERE lesson = 'spatial-thinking'")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(transactions, 1, "the whole batch is written by one transaction");
    assert_eq!(app.metric("hourofci_group_commits_total").await - commits_before, 1.0);
    assert_eq!(app.metric("hourofci_client_dropped_events_total").await, 5.0);

    // Sending the same batch again: nothing new.
    let res = app.post_batch("/batch", &json!({"events": events})).await;
    let body: Value = res.json().await.unwrap();
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "written"),
        "{body}"
    );
    assert_eq!(count(&db.admin, "loggingtable").await, 51);
}

#[tokio::test]
async fn batch_refusals() {
    let (app, db) = spawn_pg_app(&[]).await;
    let url = format!("{}/batch", app.url);
    let res = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_json");
    let res = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let too_many: Vec<Value> = (0..501)
        .map(|_| event(&Uuid::new_v4().to_string(), "gateway", "x"))
        .collect();
    let res = app.post_batch("/batch", &json!({"events": too_many})).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "events");
    let fat = json!({"events": [event(&Uuid::new_v4().to_string(), "gateway", &"x".repeat(1024 * 1024))]});
    let res = app.post_batch("/batch", &fat).await;
    assert_eq!(res.status(), 413);

    let exactly_500: Vec<Value> = (0..500)
        .map(|_| event(&Uuid::new_v4().to_string(), "gateway", "x"))
        .collect();
    let res = app.post_batch("/batch", &json!({"events": exactly_500})).await;
    assert_eq!(res.status(), 200);
    let res = app.post_batch("/batch", &json!({"events": []})).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"results": []}));
    assert_eq!(count(&db.admin, "loggingtable").await, 500);
}

#[tokio::test]
async fn test_traffic_goes_only_to_the_test_table() {
    let (app, db) = spawn_pg_app(&[]).await;
    assert_eq!(
        app.get(&format!("/test/{UA}/template/template/1A/t1")).await.status(),
        200
    );
    assert_eq!(
        app.post_event(&format!("/test/{UA}/template/template/1A/t2"), Uuid::new_v4(), None)
            .await
            .status(),
        201
    );
    let res = app
        .post_batch(
            "/test/batch",
            &json!({"events": [event(&Uuid::new_v4().to_string(), "template", "t3")]}),
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["results"][0]["status"], "written");
    let answers: Vec<String> = rows(&db.admin, "loggingtable_test")
        .await
        .into_iter()
        .map(|r| r.4)
        .collect();
    assert_eq!(answers, ["t1", "t2", "t3"]);
    assert_eq!(count(&db.admin, "loggingtable").await, 0);
    // An event id belongs to one table: the same event sent to the other is a conflict.
    let id = Uuid::new_v4();
    assert_eq!(
        app.post_event(&format!("/test/{UA}/gateway/beginner/1A/x"), id, None)
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post_event(&format!("/{UA}/gateway/beginner/1A/x"), id, None)
            .await
            .status(),
        409
    );
    assert_eq!(count(&db.admin, "loggingtable").await, 0);
}

#[tokio::test]
async fn encoded_slash_stays_inside_its_segment() {
    let (app, db) = spawn_pg_app(&[]).await;
    let res = app
        .post_event(&format!("/{UA}/gateway/beginner/1A/a%2Fb%2F%2Fc"), Uuid::new_v4(), None)
        .await;
    assert_eq!(res.status(), 201);
    let res = app.get(&format!("/test/{UA}/gateway/beginner/1A/%2Ftest%2F")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(rows(&db.admin, "loggingtable").await[0].4, "a/b//c");
    assert_eq!(rows(&db.admin, "loggingtable_test").await[0].4, "/test/");
}

#[tokio::test]
async fn writer_role_can_only_call_the_functions() {
    let db = fresh_db(&PG).await;
    let writer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.writer_url)
        .await
        .unwrap();
    for table in ["loggingtable", "loggingtable_test"] {
        for sql in [
            format!("SELECT * FROM {table}"),
            format!("INSERT INTO {table} (user_agent) VALUES ('x')"),
            format!("UPDATE {table} SET answer = 'x'"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let err = sqlx::query(&sql).execute(&writer).await.expect_err(&sql);
            let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
            assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
        }
    }
    // What it may do: call the four functions.
    let id = Uuid::new_v4();
    let call = "SELECT log_event(false, $1, now(), 'ua', 'gateway', 'beginner', '1A', 'a')";
    assert!(sqlx::query_scalar::<_, bool>(call)
        .bind(id)
        .fetch_one(&writer)
        .await
        .unwrap());
    assert!(
        !sqlx::query_scalar::<_, bool>(call)
            .bind(id)
            .fetch_one(&writer)
            .await
            .unwrap(),
        "second call: already stored"
    );
    sqlx::query("SELECT logging('ua', current_date, localtime, 'gateway', 'beginner', '1A', 'old')")
        .execute(&writer)
        .await
        .unwrap();
    sqlx::query("SELECT logging2('ua', current_date, localtime, 'gateway', 'beginner', '1A', 'old test')")
        .execute(&writer)
        .await
        .unwrap();
    assert_eq!(count(&db.admin, "loggingtable").await, 2);
    assert_eq!(count(&db.admin, "loggingtable_test").await, 1);
    // Another login role gets nothing: EXECUTE is not granted to PUBLIC.
    let other = format!("{}_other", db.name);
    PG.create_login_role(&other, "pw");
    PG.psql(&db.name, &format!("GRANT CONNECT ON DATABASE {} TO {other}", db.name));
    let stranger = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&PG.url_for(&other, "pw", &db.name))
        .await
        .unwrap();
    let err = sqlx::query(call)
        .bind(Uuid::new_v4())
        .execute(&stranger)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
}

#[tokio::test]
async fn log_events_reports_new_ids_once() {
    let db = fresh_db(&PG).await;
    let writer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.writer_url)
        .await
        .unwrap();
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let ids = vec![Some(a), Some(a), None, Some(b)];
    let call = || {
        sqlx::query_scalar::<_, Option<Uuid>>("SELECT * FROM log_events(true, $1, $2, $3, $4, $5, $6, $7)")
            .bind(ids.clone())
            .bind(vec![None::<chrono::DateTime<Utc>>; 4])
            .bind(vec!["ua"; 4])
            .bind(vec!["gateway"; 4])
            .bind(vec!["beginner"; 4])
            .bind(vec!["1A"; 4])
            .bind(vec!["x"; 4])
    };
    let mut new: Vec<Option<Uuid>> = call().fetch_all(&writer).await.unwrap();
    new.sort();
    let mut expected = vec![None, Some(a), Some(b)];
    expected.sort();
    assert_eq!(new, expected);
    assert_eq!(
        call().fetch_all(&writer).await.unwrap(),
        vec![None],
        "only the id-less row is new the second time"
    );
    assert_eq!(count(&db.admin, "loggingtable_test").await, 4);
    let err = sqlx::query("SELECT * FROM log_events(true, $1, '{}', '{}', '{}', '{}', '{}', '{}')")
        .bind(vec![Some(a)])
        .execute(&writer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("arrays must all have"), "{err}");
}

#[tokio::test]
async fn migrate_is_repeatable_and_explains_a_missing_role() {
    let db = fresh_db(&PG).await;
    hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .expect("second migrate is a no-op");
    let err = hourofci_collector::migrate::run(&db.admin_url, "nobody_here")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("CREATE ROLE nobody_here"),
        "{err}"
    );
    let err = hourofci_collector::migrate::run(&db.admin_url, "bad\"role")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lower-case identifier"), "{err}");
}

#[tokio::test]
async fn migrate_upgrades_an_original_database_in_place() {
    let (name, admin_url) = PG.fresh_database("orig");
    let role = format!("{name}_writer");
    PG.create_login_role(&role, "pw");
    // The original notebook's objects, owned by the admin, with its INSERT grant.
    PG.psql(&name, &format!(
        "SET ROLE {name}_admin;
         CREATE TABLE loggingTable (user_agent TEXT, date_log DATE, time_log TIME, lesson VARCHAR(35), lesson_level VARCHAR(10), question VARCHAR(3), answer TEXT);
         INSERT INTO loggingtable VALUES ('old-ua', '2023-05-01', '12:00:00', 'gateway', 'beginner', '1A', 'old answer');
         GRANT INSERT ON loggingtable TO {role};"
    ));
    hourofci_collector::migrate::run(&admin_url, &role)
        .await
        .expect("migrate an original database");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    let old: (String, Option<Uuid>, i64) = sqlx::query_as("SELECT answer, event_id, id FROM loggingtable")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!((old.0.as_str(), old.1), ("old answer", None));
    let writer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&PG.url_for(&role, "pw", &name))
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO loggingtable (answer) VALUES ('x')")
        .execute(&writer)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "the old INSERT grant is revoked"
    );
}

#[tokio::test]
async fn concurrent_posts_are_written_exactly_once_and_coalesced() {
    // One client IP sends 400 requests at once (on up to 400 connections): lift the
    // per-client rate limit and connection cap.
    let (app, db) = spawn_pg_app(&[
        "--group-max-wait-ms",
        "20",
        "--writers",
        "2",
        "--rate-limit-per-second",
        "0",
        "--max-connections-per-client",
        "0",
    ])
    .await;
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    // Every id twice, all at once: one of each pair is written, the other a duplicate.
    for (i, id) in ids.iter().chain(ids.iter()).enumerate() {
        let client = app.client.clone();
        let url = format!(
            "{}/{UA}/parallel-computation/advanced/5E/{}",
            app.url,
            enc(&format!("answer {}", i % 200))
        );
        let id = *id;
        tasks.spawn(async move {
            let res = client
                .post(url)
                .header("Idempotency-Key", id.to_string())
                .send()
                .await
                .unwrap();
            (id, res.status().as_u16())
        });
    }
    let mut written = std::collections::HashMap::<Uuid, (u32, u32)>::new();
    while let Some(r) = tasks.join_next().await {
        let (id, status) = r.unwrap();
        let e = written.entry(id).or_default();
        match status {
            201 => e.0 += 1,
            200 => e.1 += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(written.values().all(|&c| c == (1, 1)), "each id: one 201 and one 200");
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM loggingtable")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    let unique: std::collections::HashSet<_> = stored.into_iter().collect();
    assert_eq!(unique, ids.into_iter().collect());
    let commits = app.metric("hourofci_group_commits_total").await;
    assert!(
        commits < 400.0,
        "{commits} commits for 400 events: requests were coalesced"
    );
    assert_eq!(app.metric("hourofci_group_events_total").await, 400.0);
}
