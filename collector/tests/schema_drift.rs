//! One schema, written down once per language, and tests that fail when the copies
//! drift apart: PostgreSQL's tables (`sql/`) against SQLite's (`collector/sqlite/`),
//! both against the written columns the stores bind from (`event::Column::WRITTEN`) and
//! `log_events_v5`'s arguments, the SDK's batch body against the collector's parser
//! (one fixture, also checked byte for byte by sdk-wasm's
//! `queue::tests::batch_body_is_the_shared_wire_fixture`), and old SQLite files
//! against the migrations that upgrade them in place.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{fresh_db, PG};
use hourofci_collector::event::{parse_batch, BatchItem, Column, ColumnValue, NewEvent, Table};
use hourofci_collector::store::{Outcome, SqliteStore};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

const TABLES: [&str; 2] = ["loggingtable", "loggingtable_test"];

/// An event with every optional column filled, to read the column kinds from.
fn full_event() -> NewEvent {
    NewEvent {
        id: Some(Uuid::new_v4()),
        table: Table::Production,
        user_agent: "ua".into(),
        lesson: "gateway".into(),
        level: "beginner".into(),
        question: "1A".into(),
        answer: "a".into(),
        client_time: Some(Utc::now()),
        learner_id: Some(Uuid::new_v4()),
    }
}

/// The SQLite type a PostgreSQL column type is stored as (see collector/sqlite/0001).
fn sqlite_type_of(pg_type: &str) -> &'static str {
    match pg_type {
        "bigint" => "INTEGER",
        "text" | "character varying" | "uuid" | "timestamp with time zone" | "date" | "time without time zone" => {
            "TEXT"
        }
        other => {
            panic!("no SQLite type mapped for the PostgreSQL type {other:?}: add it here and in collector/sqlite/")
        }
    }
}

/// The PostgreSQL type a written column's values are bound as (`log_events_v5`'s array element type).
fn pg_argument_type(value: ColumnValue<'_>) -> &'static str {
    match value {
        ColumnValue::Text(_) => "text",
        ColumnValue::Uuid(_) => "uuid",
        ColumnValue::Instant(_) => "timestamp with time zone",
    }
}

/// (name, declared type) of a SQLite table's columns, in order.
async fn sqlite_columns(pool: &SqlitePool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn open_store(path: &Path) -> SqliteStore {
    tokio::time::timeout(
        Duration::from_secs(60),
        SqliteStore::open(path, Duration::from_secs(10)),
    )
    .await
    .expect("open within a minute")
    .expect("open the SQLite store")
}

#[tokio::test]
async fn postgres_and_sqlite_tables_and_the_written_columns_agree() {
    let db = fresh_db(&PG).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("fresh.db")).await;
    let event = full_event();
    for table in TABLES {
        let pg: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&db.admin)
        .await
        .unwrap();
        assert!(!pg.is_empty(), "{table} exists in PostgreSQL");
        let pg_as_sqlite: Vec<(String, String)> = pg
            .iter()
            .map(|(name, pg_type)| (name.clone(), sqlite_type_of(pg_type).to_string()))
            .collect();
        assert_eq!(
            sqlite_columns(store.pool(), table).await,
            pg_as_sqlite,
            "{table}: SQLite columns = PostgreSQL columns, in order"
        );

        // Every column is written from an event, or filled by the database / the write instant.
        let filled_by_the_store = ["id", "received_at", "date_log", "time_log"];
        let written: BTreeSet<&str> = Column::WRITTEN.iter().map(|c| c.name).collect();
        assert_eq!(written.len(), Column::WRITTEN.len(), "no column written twice");
        let table_columns: BTreeSet<&str> = pg.iter().map(|(name, _)| name.as_str()).collect();
        let expected: BTreeSet<&str> = written.iter().copied().chain(filled_by_the_store).collect();
        assert_eq!(
            table_columns, expected,
            "{table}: the written columns (event::Column) cover the table"
        );
        for column in Column::WRITTEN {
            let pg_type = &pg.iter().find(|(name, _)| name == column.name).unwrap().1;
            let bound = pg_argument_type((column.value)(&event));
            let compatible = pg_type == bound || (bound == "text" && pg_type == "character varying");
            assert!(
                compatible,
                "{table}.{}: column type {pg_type}, bound as {bound}",
                column.name
            );
        }
    }

    // log_events_v5's arrays: p_tests, then one per written column, in that order and type.
    let arguments: String =
        sqlx::query_scalar("SELECT pg_catalog.pg_get_function_identity_arguments('public.log_events_v5'::regproc)")
            .fetch_one(&db.admin)
            .await
            .unwrap();
    let expected: Vec<String> = std::iter::once("p_tests boolean[]".to_string())
        .chain(
            Column::WRITTEN
                .iter()
                .map(|c| format!("{} {}[]", c.pg_argument, pg_argument_type((c.value)(&event)))),
        )
        .collect();
    assert_eq!(arguments, expected.join(", "));
}

/// A written event reads back the same from both stores' rows (the values each column
/// description gives, in each database's types).
#[tokio::test]
async fn both_stores_write_every_column_from_the_description() {
    let db = fresh_db(&PG).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_store(&dir.path().join("w.db")).await;
    let pg = hourofci_collector::store::PgStore::connect_lazy(
        &db.writer_url,
        2,
        Duration::from_secs(30),
        hourofci_collector::config::PoolMode::Session,
    )
    .unwrap();
    let mut event = full_event();
    event.client_time = Some("2026-11-28T07:35:44.123456Z".parse::<DateTime<Utc>>().unwrap());
    let mut test_event = NewEvent {
        id: Some(Uuid::new_v4()),
        table: Table::Test,
        learner_id: None,
        ..event.clone()
    };
    test_event.answer = "b".into();
    let events = [event, test_event];
    assert_eq!(
        pg.write_group(&events).await.unwrap(),
        [Outcome::Written, Outcome::Written]
    );
    assert_eq!(
        sqlite.write_group(&events).await.unwrap(),
        [Outcome::Written, Outcome::Written]
    );
    for e in &events {
        let table = e.table.sql_name();
        for column in Column::WRITTEN {
            let name = column.name;
            let in_pg: Option<String> = sqlx::query_scalar(&format!(
                "SELECT CASE WHEN {name} IS NULL THEN NULL
                        ELSE to_json({name})#>>'{{}}' END FROM {table} WHERE event_id = $1"
            ))
            .bind(e.id)
            .fetch_one(&db.admin)
            .await
            .unwrap();
            let in_sqlite: Option<String> =
                sqlx::query_scalar(&format!("SELECT {name} FROM {table} WHERE event_id = ?"))
                    .bind(e.id.unwrap().to_string())
                    .fetch_one(sqlite.pool())
                    .await
                    .unwrap();
            let expected: Option<String> = match (column.value)(e) {
                ColumnValue::Text(text) => Some(text.to_string()),
                ColumnValue::Uuid(id) => id.map(|id| id.to_string()),
                ColumnValue::Instant(t) => t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            };
            // PostgreSQL's JSON text of a timestamptz (session time zone UTC in the test cluster or not).
            let pg_value = in_pg.map(|text| match (column.value)(e) {
                ColumnValue::Instant(_) => DateTime::parse_from_rfc3339(&text)
                    .unwrap()
                    .with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                _ => text,
            });
            assert_eq!(pg_value, expected, "PostgreSQL {table}.{name}");
            assert_eq!(in_sqlite, expected, "SQLite {table}.{name}");
        }
    }
}

/// The SDK's batch body as it sends it (sdk-wasm checks its own output against the same file).
const SDK_BATCH: &str = include_str!("fixtures/sdk_batch.json");

#[test]
fn the_collector_reads_every_field_the_sdk_sends_and_nothing_is_missing() {
    let fixture: Value = serde_json::from_str(SDK_BATCH).unwrap();
    let sent_events = fixture["events"].as_array().unwrap();
    let batch = parse_batch(SDK_BATCH.as_bytes(), 500, Table::Production).unwrap();
    assert_eq!(batch.dropped, fixture["dropped"].as_u64().unwrap());
    assert_eq!(batch.events.len(), sent_events.len());
    let mut every_field_filled_once = false;
    for (item, sent) in batch.events.iter().zip(sent_events) {
        let BatchItem::Event(event) = item else {
            panic!("the SDK's event was refused: {item:?}")
        };
        // Every field of the collector's event, by name: a new one fails to compile here
        // until the fixture (and so the SDK) carries it.
        let NewEvent {
            id,
            table: _,
            user_agent,
            lesson,
            level,
            question,
            answer,
            client_time,
            learner_id,
        } = event;
        let text = |key: &str| {
            sent[key]
                .as_str()
                .unwrap_or_else(|| panic!("the SDK sends {key}"))
                .to_string()
        };
        assert_eq!(id.map(|id| id.to_string()), Some(text("id")));
        assert_eq!(*user_agent, text("user_agent"));
        assert_eq!(*lesson, text("lesson"));
        assert_eq!(*level, text("level"));
        assert_eq!(*question, text("question"));
        assert_eq!(*answer, text("answer"));
        assert_eq!(
            *client_time,
            Some(text("client_time").parse::<DateTime<Utc>>().unwrap())
        );
        assert_eq!(
            learner_id.map(|l| l.to_string()),
            sent.get("learner_id").map(|_| text("learner_id"))
        );
        every_field_filled_once |= learner_id.is_some();
    }
    assert!(
        every_field_filled_once,
        "the fixture has an event with every optional field"
    );

    // Nothing the SDK sends is ignored: without any one of its fields, the batch reads differently.
    let reparse = |body: &Value| parse_batch(body.to_string().as_bytes(), 500, Table::Production).unwrap();
    for key in fixture.as_object().unwrap().keys() {
        let mut without = fixture.clone();
        without.as_object_mut().unwrap().remove(key);
        let changed = parse_batch(without.to_string().as_bytes(), 500, Table::Production)
            .map(|b| b != batch)
            .unwrap_or(true);
        assert!(changed, "the collector ignores the batch's {key:?}");
    }
    for (i, sent) in sent_events.iter().enumerate() {
        for key in sent.as_object().unwrap().keys() {
            let mut without = fixture.clone();
            without["events"][i].as_object_mut().unwrap().remove(key);
            assert_ne!(
                reparse(&without).events[i],
                batch.events[i],
                "the collector ignores event {i}'s {key:?}"
            );
        }
    }
}

/// Statements of the SQLite schema before `collector/sqlite/` existed, frozen here: the
/// tables without `learner_id` (the oldest files) ...
const OLDEST_TABLE: &str = "CREATE TABLE IF NOT EXISTS {table} (
        user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
        question TEXT, answer TEXT,
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT UNIQUE,
        client_time TEXT,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))";
/// ... and what the collector then added (sql/0004's column and indexes, the last two
/// dropped again when sql/0005 came).
const LEARNER_UPGRADE: [&str; 4] = [
    "ALTER TABLE {table} ADD COLUMN learner_id TEXT",
    "CREATE INDEX IF NOT EXISTS {table}_question_idx ON {table} (lesson, lesson_level, question, id)",
    "CREATE INDEX IF NOT EXISTS {table}_learner_idx ON {table} (learner_id) WHERE learner_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS {table}_received_idx ON {table} (received_at)",
];

/// Make a file as an older collector did: `statements` per table, then one row each.
async fn legacy_file(path: &Path, tables: &[&str], statements: &[&str]) {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    for (n, table) in tables.iter().enumerate() {
        for statement in statements {
            sqlx::query(&statement.replace("{table}", table))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
             VALUES ('ua', '2026-01-05', '10:00:00.000000', 'gateway', 'beginner', '1A', 'old row', ?, '2026-01-05T10:00:00.000000Z')"
        ))
        .bind(old_id(n).to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

/// The id of the old row in the `n`th table (ids are unique across both tables).
fn old_id(n: usize) -> Uuid {
    Uuid::from_u128(7 + n as u128)
}

/// Columns of both tables and the indexes (beyond SQLite's own), to compare files by.
async fn shape(pool: &SqlitePool) -> (Vec<Vec<(String, String)>>, Vec<String>) {
    let mut columns = Vec::new();
    for table in TABLES {
        columns.push(sqlite_columns(pool, table).await);
    }
    let indexes = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (columns, indexes)
}

async fn applied_migrations(pool: &SqlitePool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_files_of_every_age_upgrade_in_place_to_one_shape() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    let store = open_store(&fresh).await;
    let want = shape(store.pool()).await;
    let migrations = applied_migrations(store.pool()).await;
    assert!(!migrations.is_empty());
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600,
        "a new file is private"
    );
    let expected_columns: Vec<(String, String)> = [
        "user_agent",
        "date_log",
        "time_log",
        "lesson",
        "lesson_level",
        "question",
        "answer",
        "id",
        "event_id",
        "client_time",
        "received_at",
        "learner_id",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            if *name == "id" { "INTEGER" } else { "TEXT" }.to_string(),
        )
    })
    .collect();
    assert_eq!(want.0, [expected_columns.clone(), expected_columns]);
    assert!(
        want.1.is_empty(),
        "no index beyond the keys (collector/sqlite/0002): {:?}",
        want.1
    );
    drop(store);

    let with_learner: Vec<&str> = std::iter::once(OLDEST_TABLE).chain(LEARNER_UPGRADE).collect();
    let today = [OLDEST_TABLE, LEARNER_UPGRADE[0], LEARNER_UPGRADE[1]];
    let cases: [(&str, &[&str], &[&str]); 4] = [
        // (a) the oldest files: no learner_id; some even without the test table.
        ("oldest.db", &TABLES, &[OLDEST_TABLE]),
        ("oldest-production-only.db", &TABLES[..1], &[OLDEST_TABLE]),
        // learner_id and all of sql/0004's indexes (collectors before sql/0005).
        ("learner-indexes.db", &TABLES, &with_learner),
        // (b) as the collector made it just before the migrations: only the question index.
        ("today.db", &TABLES, &today),
    ];
    for (name, tables, statements) in cases {
        let path = dir.path().join(name);
        legacy_file(&path, tables, statements).await;
        for reopen in 0..2 {
            let store = open_store(&path).await;
            assert_eq!(
                shape(store.pool()).await,
                want,
                "{name} (open #{}) has today's shape",
                reopen + 1
            );
            assert_eq!(
                applied_migrations(store.pool()).await,
                migrations,
                "{name}: each migration applied once"
            );
            for (n, table) in tables.iter().enumerate() {
                let old: (String, String, Option<String>) = sqlx::query_as(&format!(
                    "SELECT answer, date_log, learner_id FROM {table} WHERE event_id = ?"
                ))
                .bind(old_id(n).to_string())
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert_eq!(
                    old,
                    ("old row".to_string(), "2026-01-05".to_string(), None),
                    "{name}: {table}'s old row kept"
                );
            }
            // The old row's id is known (duplicate), and new events go in with their learner.
            let mut again = full_event();
            (again.id, again.answer, again.lesson, again.level, again.question) = (
                Some(old_id(0)),
                "old row".into(),
                "gateway".into(),
                "beginner".into(),
                "1A".into(),
            );
            let new = NewEvent {
                id: Some(Uuid::new_v4()),
                table: Table::Test,
                ..full_event()
            };
            let outcomes = store.write_group(&[again, new.clone()]).await.unwrap();
            assert_eq!(outcomes, [Outcome::Duplicate, Outcome::Written], "{name}");
            let learner: Option<String> =
                sqlx::query_scalar("SELECT learner_id FROM loggingtable_test WHERE event_id = ?")
                    .bind(new.id.unwrap().to_string())
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(learner, new.learner_id.map(|l| l.to_string()), "{name}");
        }
    }
}
