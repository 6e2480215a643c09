//! The overview kept in memory (insights/src/overview.rs) shows exactly what SQL over
//! every row shows, on PostgreSQL (as the reader role) and on SQLite, over real HTTP:
//! after the build; after more rows; after a row whose transaction commits after a
//! higher id was already read; after `forget`, `prune` and hand-written DELETEs (also
//! when their deletion-log rows commit out of id order); and
//! for ranges of whole days. Every comparison also checks that memory (not the SQL
//! fallback) answered. And the deletion log: counts only, the reader may read it, the
//! writer may neither read nor write it; its migration (sql/0006) upgrades a database
//! that the older migrations made and filled.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hourofci_collector::event::Table;
use hourofci_insights::forget::{forget, prune_test, Who};
use hourofci_insights::source::{parse_instant, Source};
use uuid::Uuid;

/// One overview line as the CSV shows it: lesson, level, question, answers, learners,
/// user agents, last answer.
type Line = [String; 7];

impl Service {
    async fn wait_in_memory(&self, table: Table) {
        assert!(
            self.state
                .overviews()
                .wait_until_ready(table, Duration::from_secs(120))
                .await,
            "overview built within 2 minutes"
        );
    }

    /// `/overview.csv?QUERY`: the lines, and which computed them.
    async fn overview(&self, query: &str) -> (Vec<Line>, String) {
        let res = reqwest::Client::new()
            .get(format!("{}/overview.csv?{query}", self.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{query}");
        let from = res
            .headers()
            .get("x-overview-from")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let body = res.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(body.as_bytes());
        let lines = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                std::array::from_fn(|i| r[i].to_string())
            })
            .collect();
        (lines, from)
    }

    /// The page from memory equals `expected` for every range in `ranges`.
    async fn assert_memory_equals<F, Fut>(&self, table: &str, ranges: &[(Option<&str>, Option<&str>)], expected: F)
    where
        F: Fn(Option<String>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Vec<Line>>,
    {
        for (since, until) in ranges {
            let mut query = format!("table={table}");
            for (k, v) in [("since", since), ("until", until)] {
                if let Some(v) = v {
                    query.push_str(&format!("&{k}={v}"));
                }
            }
            let (shown, from) = self.overview(&query).await;
            assert_eq!(from, "memory", "{query}: answered from memory");
            let want = expected(since.map(str::to_string), until.map(str::to_string)).await;
            assert_eq!(shown, want, "{query}");
        }
    }
}

/// Ranges of whole days that cut the data's ten days in different places.
const RANGES: &[(Option<&str>, Option<&str>)] = &[
    (None, None),
    (Some("2026-11-03"), None),
    (None, Some("2026-11-05")),
    (Some("2026-11-02"), Some("2026-11-04")),
    (Some("2026-11-09"), Some("2026-11-10")),
    (Some("2026-12-20"), None),
];

/// A line as SQL returns it.
type SqlLine = (
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    Option<String>,
);

fn line(r: SqlLine) -> Line {
    [
        r.0.unwrap_or_default(),
        r.1.unwrap_or_default(),
        r.2.unwrap_or_default(),
        r.3.to_string(),
        r.4.to_string(),
        r.5.to_string(),
        r.6.unwrap_or_default(),
    ]
}

/// The overview by plain `count(DISTINCT ..)` SQL as the admin (not the service's query).
async fn pg_expected(db: &Db, table: &str, since: Option<String>, until: Option<String>) -> Vec<Line> {
    let at = |s: Option<String>| s.map(|s| parse_instant(&s).unwrap());
    let sql = format!(
        "SELECT lesson::text, lesson_level::text, question::text, count(*), count(DISTINCT learner_id),
                count(DISTINCT user_agent) FILTER (WHERE learner_id IS NULL),
                to_char(max(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
         FROM {table} WHERE ($1::timestamptz IS NULL OR received_at >= $1) AND ($2::timestamptz IS NULL OR received_at < $2)
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let rows: Vec<SqlLine> = sqlx::query_as(&sql)
        .bind(at(since))
        .bind(at(until))
        .fetch_all(&db.admin)
        .await
        .unwrap();
    rows.into_iter().map(line).collect()
}

/// Rows over ten days, three lessons, five questions (one NULL), 30 learners and 7 user
/// agents (30 % of rows without learner id), ids `from..=to`.
fn pg_fill(table: &str, from: i64, to: i64) -> String {
    format!(
        "INSERT INTO {table} (user_agent, lesson, lesson_level, question, answer, learner_id, received_at)
         SELECT 'ua-' || (g % 7), 'lesson-' || (g % 3), 'beginner', CASE WHEN g % 5 = 4 THEN NULL ELSE (1 + g % 4)::text || 'A' END,
                'answer ' || g, CASE WHEN g % 10 < 7 THEN md5('learner' || (g % 30))::uuid END,
                timestamptz '2026-11-01' + (g % 10) * interval '1 day' + ((g * 7919) % 86400) * interval '1 second'
                + (g % 1000) * interval '1 millisecond'
         FROM generate_series({from}, {to}) g"
    )
}

#[tokio::test]
async fn postgres_overview_in_memory_equals_sql_through_writes_out_of_order_commits_and_deletions() {
    let db = fresh_db().await;
    sqlx::query(&pg_fill("loggingtable", 1, 3000))
        .execute(&db.admin)
        .await
        .unwrap();
    sqlx::query(&pg_fill("loggingtable_test", 1, 500))
        .execute(&db.admin)
        .await
        .unwrap();
    let service = serve(&db.reader_url).await;
    service.wait_in_memory(Table::Production).await;
    service.wait_in_memory(Table::Test).await;
    let expect = |table: &'static str| {
        let db = &db;
        move |since, until| pg_expected(db, table, since, until)
    };

    // (a) The build.
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;
    service
        .assert_memory_equals("test", RANGES, expect("loggingtable_test"))
        .await;

    // (b) More rows: by the admin (a new question, later days) and through the writer's functions.
    sqlx::query(&pg_fill("loggingtable", 3001, 3600).replace("'lesson-'", "'lesson-b'"))
        .execute(&db.admin)
        .await
        .unwrap();
    let learner = Uuid::new_v4();
    write_pg(
        &db,
        &[
            event(Table::Production, "ua-new", "7C", "via the writer", Some(learner)),
            event(Table::Production, "ua-new", "7C", "legacy", None),
        ],
    )
    .await;
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;

    // (c) A row committed out of id order: T1 draws an id, T2 draws a higher one and
    // commits first; the service reads T2's row, then T1 commits.
    let late_learner = Uuid::new_v4();
    let insert = "INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer, learner_id)
                  VALUES ('ua-late', 'gateway', 'beginner', '1A', $1, $2) RETURNING id";
    let mut t1 = db.admin.begin().await.unwrap();
    let id1: i64 = sqlx::query_scalar(insert)
        .bind("first drawn")
        .bind(late_learner)
        .fetch_one(&mut *t1)
        .await
        .unwrap();
    let mut t2 = db.admin.begin().await.unwrap();
    let id2: i64 = sqlx::query_scalar(insert)
        .bind("second drawn")
        .bind(Uuid::new_v4())
        .fetch_one(&mut *t2)
        .await
        .unwrap();
    assert!(id1 < id2);
    t2.commit().await.unwrap();
    service
        .assert_memory_equals("production", &[(None, None)], expect("loggingtable"))
        .await;
    let before_t1 = service.overview("").await.0;
    t1.commit().await.unwrap();
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;
    let after_t1 = service.overview("").await.0;
    assert_ne!(
        before_t1, after_t1,
        "T1's row (a new learner on gateway/1A) changed the counts"
    );

    // (d) forget (one learner's rows) and prune (old test rows): the counts drop; SQL
    // answers while memory is rebuilt, then memory again.
    let admin = Source::open_admin(&db.admin_url).await.unwrap();
    let forgotten = Uuid::parse_str(
        &sqlx::query_scalar::<_, String>("SELECT md5('learner' || 0)")
            .fetch_one(&db.admin)
            .await
            .unwrap(),
    )
    .unwrap();
    let counts = forget(&admin, &Who::Learner(forgotten), false).await.unwrap();
    assert!(counts.production > 0 && counts.test > 0);
    let (shown, from) = service.overview("").await;
    assert_eq!(
        from, "database",
        "the aggregate is stale: SQL answers while it is rebuilt"
    );
    assert_eq!(
        shown,
        pg_expected(&db, "loggingtable", None, None).await,
        "right after forget"
    );
    let learners = |lines: &[Line]| lines.iter().map(|l| l[4].parse::<i64>().unwrap()).sum::<i64>();
    assert!(
        learners(&shown) < learners(&after_t1),
        "the forgotten learner is no longer counted"
    );
    service.wait_in_memory(Table::Production).await;
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;

    let pruned = prune_test(&admin, parse_instant("2026-11-04").unwrap(), false)
        .await
        .unwrap();
    assert!(pruned > 0);
    service.overview("table=test").await;
    service.wait_in_memory(Table::Test).await;
    service
        .assert_memory_equals("test", RANGES, expect("loggingtable_test"))
        .await;

    // A hand-written DELETE is noticed too (sql/0006's trigger).
    sqlx::query("DELETE FROM loggingtable WHERE question = '2A' AND received_at < '2026-11-06'")
        .execute(&db.admin)
        .await
        .unwrap();
    service.overview("").await;
    service.wait_in_memory(Table::Production).await;
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;

    // Deletions whose log rows commit out of id order (the later id first) are noticed too.
    let mut ta = db.admin.begin().await.unwrap();
    sqlx::query("DELETE FROM loggingtable WHERE question = '3A' AND received_at < '2026-11-03'")
        .execute(&mut *ta)
        .await
        .unwrap();
    let mut tb = db.admin.begin().await.unwrap();
    sqlx::query("DELETE FROM loggingtable WHERE question = '4A' AND received_at < '2026-11-03'")
        .execute(&mut *tb)
        .await
        .unwrap();
    tb.commit().await.unwrap();
    service.overview("").await;
    service.wait_in_memory(Table::Production).await;
    service
        .assert_memory_equals("production", &[(None, None)], expect("loggingtable"))
        .await;
    ta.commit().await.unwrap();
    service.overview("").await;
    service.wait_in_memory(Table::Production).await;
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;

    // The deletion log says what and how many, never whose.
    let log: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT table_name, kind, row_count FROM deletion_log ORDER BY id")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert_eq!(
        log[0],
        (
            "loggingtable".to_string(),
            "forget".to_string(),
            Some(counts.production as i64)
        )
    );
    assert_eq!(
        log[1],
        (
            "loggingtable_test".to_string(),
            "forget".to_string(),
            Some(counts.test as i64)
        )
    );
    assert_eq!(
        log[2],
        (
            "loggingtable_test".to_string(),
            "prune".to_string(),
            Some(pruned as i64)
        )
    );
    assert_eq!(log[3].1, "DELETE");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'deletion_log' ORDER BY ordinal_position",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(columns, ["id", "at", "table_name", "kind", "row_count"]);

    // The reader may read the log and not write it; the writer may do neither.
    let reader = sqlx::PgPool::connect(&db.reader_url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM deletion_log")
        .fetch_one(&reader)
        .await
        .unwrap();
    assert_eq!(n, log.len() as i64);
    let writer = sqlx::PgPool::connect(&db.writer_url).await.unwrap();
    for (pool, role) in [(&reader, "reader"), (&writer, "writer")] {
        for sql in [
            "INSERT INTO deletion_log (table_name, kind, row_count) VALUES ('loggingtable', 'forget', 0)",
            "DELETE FROM deletion_log",
            "UPDATE deletion_log SET row_count = 0",
        ] {
            let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
            assert!(err.to_string().contains("permission denied"), "{role}: {sql}: {err}");
        }
    }
    let err = sqlx::query("SELECT count(*) FROM deletion_log")
        .execute(&writer)
        .await
        .expect_err("the writer reads nothing");
    assert!(err.to_string().contains("permission denied"), "{err}");
}

async fn sqlite_expected(path: &Path, table: &str, since: Option<String>, until: Option<String>) -> Vec<Line> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let at = |s: Option<String>| s.map(|s| hourofci_insights::source::sqlite_instant(parse_instant(&s).unwrap()));
    let sql = format!(
        "SELECT lesson, lesson_level, question, count(*), count(DISTINCT learner_id),
                count(DISTINCT CASE WHEN learner_id IS NULL THEN user_agent END),
                replace(substr(max(received_at), 1, 19), 'T', ' ')
         FROM {table} WHERE (?1 IS NULL OR received_at >= ?1) AND (?2 IS NULL OR received_at < ?2)
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let rows: Vec<SqlLine> = sqlx::query_as(&sql)
        .bind(at(since))
        .bind(at(until))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter().map(line).collect()
}

/// The SQLite twin of [`pg_fill`] (learner ids are text there).
fn sqlite_fill(table: &str, from: i64, to: i64) -> String {
    format!(
        "WITH RECURSIVE g(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM g WHERE n < {to})
         INSERT INTO {table} (user_agent, lesson, lesson_level, question, answer, learner_id, received_at)
         SELECT 'ua-' || (n % 7), 'lesson-' || (n % 3), 'beginner', CASE WHEN n % 5 = 4 THEN NULL ELSE (1 + n % 4) || 'A' END,
                'answer ' || n, CASE WHEN n % 10 < 7 THEN 'learner-' || (n % 30) END,
                strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-01', '+' || (n % 10) || ' days', '+' || ((n * 7919) % 86400) || ' seconds')
         FROM g"
    )
}

#[tokio::test]
async fn sqlite_overview_in_memory_equals_sql_through_writes_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    let store = hourofci_collector::store::SqliteStore::open(&path, Duration::from_secs(10))
        .await
        .unwrap();
    sqlx::query(&sqlite_fill("loggingtable", 1, 3000))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&sqlite_fill("loggingtable_test", 1, 500))
        .execute(store.pool())
        .await
        .unwrap();
    let service = serve(path.to_str().unwrap()).await;
    service.wait_in_memory(Table::Production).await;
    service.wait_in_memory(Table::Test).await;
    let expect = |table: &'static str| {
        let path = path.clone();
        move |since, until| {
            let path = path.clone();
            async move { sqlite_expected(&path, table, since, until).await }
        }
    };

    // (a) The build.
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;
    service
        .assert_memory_equals("test", RANGES, expect("loggingtable_test"))
        .await;

    // (b) More rows, through the collector's store too.
    sqlx::query(&sqlite_fill("loggingtable", 3001, 3600).replace("'lesson-'", "'lesson-b'"))
        .execute(store.pool())
        .await
        .unwrap();
    let learner = Uuid::new_v4();
    let outcomes = store
        .write_group(&[
            event(Table::Production, "ua-new", "7C", "via the store", Some(learner)),
            event(Table::Production, "ua-new", "7C", "legacy", None),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;
    let before = service.overview("").await.0;

    // (d) forget and prune: the counts drop; memory is rebuilt.
    let admin = Source::open_admin(path.to_str().unwrap()).await.unwrap();
    let counts = forget(&admin, &Who::Learner(learner), false).await.unwrap();
    assert_eq!(counts.production, 1);
    let (shown, from) = service.overview("").await;
    assert_eq!(
        from, "database",
        "the aggregate is stale: SQL answers while it is rebuilt"
    );
    assert_eq!(
        shown,
        sqlite_expected(&path, "loggingtable", None, None).await,
        "right after forget"
    );
    assert_ne!(shown, before, "the forgotten learner is no longer counted");
    service.wait_in_memory(Table::Production).await;
    service
        .assert_memory_equals("production", RANGES, expect("loggingtable"))
        .await;

    let pruned = prune_test(&admin, parse_instant("2026-11-04").unwrap(), false)
        .await
        .unwrap();
    assert!(pruned > 0);
    service.overview("table=test").await;
    service.wait_in_memory(Table::Test).await;
    service
        .assert_memory_equals("test", RANGES, expect("loggingtable_test"))
        .await;
    let log: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT table_name, kind, row_count FROM deletion_log ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        log,
        [
            ("loggingtable".into(), "forget".into(), 1),
            ("loggingtable_test".into(), "prune".into(), pruned as i64)
        ]
    );
}

#[tokio::test]
async fn the_deletion_log_migration_upgrades_a_database_the_older_migrations_made() {
    let (name, admin_url) = testkit::PgCluster::shared().fresh_database("upgrade");
    let (writer, reader) = (format!("{name}_writer"), format!("{name}_reader"));
    testkit::PgCluster::shared().create_login_role(&writer, "writer-pw");
    testkit::PgCluster::shared().create_login_role(&reader, "reader-pw");
    // sql/0001..0004 only, as the release before the deletion log applied them.
    let old = tempfile::tempdir().unwrap();
    let sql = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql");
    for entry in std::fs::read_dir(&sql).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if file.ends_with(".sql") && file.as_str() < "0005" {
            std::fs::copy(&path, old.path().join(&file)).unwrap();
        }
    }
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&admin)
        .await
        .unwrap();
    let has_log = "SELECT to_regclass('public.deletion_log') IS NOT NULL";
    assert!(!sqlx::query_scalar::<_, bool>(has_log).fetch_one(&admin).await.unwrap());
    sqlx::query(&pg_fill("loggingtable", 1, 200))
        .execute(&admin)
        .await
        .unwrap();

    hourofci_collector::migrate::run(&admin_url, &writer)
        .await
        .expect("migrate the old database");
    hourofci_collector::migrate::grant_reader(&admin_url, &reader, &writer)
        .await
        .expect("reader role");
    assert!(sqlx::query_scalar::<_, bool>(has_log).fetch_one(&admin).await.unwrap());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(rows, 200, "the rows survive the upgrade");
    sqlx::query("DELETE FROM loggingtable WHERE question = '1A'")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("UPDATE loggingtable SET answer = 'changed' WHERE question = '2A'")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("DELETE FROM loggingtable WHERE false")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("TRUNCATE loggingtable_test").execute(&admin).await.unwrap();
    let reader_pool = sqlx::PgPool::connect(&testkit::PgCluster::shared().url_for(&reader, "reader-pw", &name))
        .await
        .unwrap();
    let log: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT table_name, kind, row_count FROM deletion_log ORDER BY id")
            .fetch_all(&reader_pool)
            .await
            .unwrap();
    assert_eq!(
        log,
        [
            ("loggingtable".into(), "DELETE".into(), Some(40)),
            ("loggingtable".into(), "UPDATE".into(), Some(40)),
            ("loggingtable_test".into(), "TRUNCATE".into(), None),
        ],
        "every deleting or changing statement that touched rows, with its count"
    );
}

#[tokio::test]
async fn a_sqlite_file_from_before_learner_ids_is_counted_by_user_agent_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    // The collector's table before learner ids (no learner_id column).
    sqlx::query(
        "CREATE TABLE loggingtable (user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
         question TEXT, answer TEXT, id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, client_time TEXT,
         received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE loggingtable_test AS SELECT * FROM loggingtable WHERE 0")
        .execute(&pool)
        .await
        .unwrap();
    for (ua, question, day) in [
        ("a", "1A", "01"),
        ("a", "1A", "02"),
        ("b", "1A", "02"),
        ("c", "2B", "03"),
    ] {
        sqlx::query("INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer, received_at) VALUES (?1, 'gateway', 'beginner', ?2, 'x', ?3)")
            .bind(ua)
            .bind(question)
            .bind(format!("2026-11-{day}T10:00:00.000Z"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let service = serve(path.to_str().unwrap()).await;
    service.wait_in_memory(Table::Production).await;
    let line = |q: &str, answers: i64, uas: i64, last: &str| -> Line {
        [
            "gateway",
            "beginner",
            q,
            &answers.to_string(),
            "0",
            &uas.to_string(),
            last,
        ]
        .map(str::to_string)
    };
    let (shown, from) = service.overview("").await;
    assert_eq!(from, "memory");
    assert_eq!(
        shown,
        [
            line("1A", 3, 2, "2026-11-02 10:00:00"),
            line("2B", 1, 1, "2026-11-03 10:00:00")
        ]
    );
    let (shown, from) = service.overview("since=2026-11-02&until=2026-11-03").await;
    assert_eq!(from, "memory");
    assert_eq!(shown, [line("1A", 2, 2, "2026-11-02 10:00:00")]);
}
