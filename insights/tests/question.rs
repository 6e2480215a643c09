//! The question page answered from the in-memory aggregate (insights/src/overview.rs)
//! shows exactly what SQL over the rows shows, on PostgreSQL (as the reader role) and on
//! SQLite, over real HTTP: the total, the charted count, the bars (most frequent trimmed
//! answers, ties by bytes, then "other"), answers per day, and every list page with its
//! "Older answers" cursor; after the build, after more rows, after a row whose
//! transaction commits after a higher id was read, after `forget` and `prune`, and for
//! ranges of whole days. Every comparison checks that memory answered
//! (`X-Question-From: memory`; with a search term the numbers still come from memory and
//! the list equals SQL's); a bound inside a day is answered by SQL.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hourofci_collector::event::Table;
use hourofci_insights::forget::{forget, prune_test, Who};
use hourofci_insights::source::{parse_instant, sqlite_instant, Source};
use uuid::Uuid;

const LIST_PAGE: usize = 50;

/// What a question page shows.
#[derive(Debug, PartialEq, Eq, Default)]
struct Page {
    total: i64,
    charted: i64,
    /// Label and count, "(other answers)" last.
    bars: Vec<(String, i64)>,
    days: Vec<(String, i64)>,
    /// Received at and answer, newest first.
    list: Vec<(String, String)>,
    /// The "Older answers" link's cursor.
    older: Option<i64>,
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text after the first `start`, up to the next `end`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

fn parse_page(html: &str) -> Page {
    let number = |id: &str| {
        between(html, &format!("<span id=\"{id}\">"), "<")
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let bars = html
        .split("<g class=\"bar\"")
        .skip(1)
        .map(|g| {
            let title = unescape(between(g, "<title>", "</title>").unwrap());
            let (label, n) = title.rsplit_once(": ").unwrap();
            (label.to_string(), n.parse().unwrap())
        })
        .collect();
    let days = html
        .split("<g class=\"day\"")
        .skip(1)
        .map(|g| {
            let day = between(g, "data-day=\"", "\"").unwrap().to_string();
            (day, between(g, "data-count=\"", "\"").unwrap().parse().unwrap())
        })
        .collect();
    let table = between(html, "<table id=\"answers\">", "</table>").unwrap();
    let list = table
        .split("<tr>")
        .skip(2)
        .map(|tr| {
            let received = between(tr, "<td>", "</td>").unwrap().to_string();
            (
                received,
                unescape(between(tr, "<td class=\"answer\">", "</td>").unwrap()),
            )
        })
        .collect();
    let older = between(html, "id=\"older\"", ">").map(|a| between(a, "before=", "\"").unwrap().parse().unwrap());
    Page {
        total: number("total"),
        charted: number("charted"),
        bars,
        days,
        list,
        older,
    }
}

/// Which rows a comparison looks at.
#[derive(Clone, Copy)]
struct Query<'a> {
    table: &'a str,
    question: &'a str,
    since: Option<&'a str>,
    until: Option<&'a str>,
    /// The list's search term (`q`).
    search: Option<&'a str>,
}

const QUESTIONS: &[&str] = &["1A", "2B", "9Z"];
const RANGES: &[(Option<&str>, Option<&str>)] = &[
    (None, None),
    (Some("2026-11-03"), None),
    (None, Some("2026-11-05")),
    (Some("2026-11-02"), Some("2026-11-04")),
    (Some("2026-12-20"), None),
];

impl Service {
    async fn wait_in_memory(&self, table: Table) {
        assert!(
            self.state
                .overviews()
                .wait_until_ready(table, Duration::from_secs(120))
                .await,
            "built within 2 minutes"
        );
    }

    /// `/question?...`: the page, and which computed it.
    async fn page(&self, q: Query<'_>, extra: &str, before: Option<i64>) -> (Page, String) {
        let mut query = format!(
            "table={}&lesson=gateway&level=beginner&question={}{extra}",
            q.table, q.question
        );
        for (k, v) in [("since", q.since), ("until", q.until), ("q", q.search)] {
            if let Some(v) = v {
                query.push_str(&format!("&{k}={}", v.replace(' ', "%20")));
            }
        }
        if let Some(b) = before {
            query.push_str(&format!("&before={b}"));
        }
        let res = reqwest::Client::new()
            .get(format!("{}/question?{query}", self.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{query}");
        let from = res.headers()["x-question-from"].to_str().unwrap().to_string();
        (parse_page(&res.text().await.unwrap()), from)
    }

    /// Every page of every question and range, from memory, equals `expected`.
    async fn assert_memory_equals<F, Fut>(
        &self,
        table: &str,
        ranges: &[(Option<&'static str>, Option<&'static str>)],
        expected: F,
    ) where
        F: Fn(Query<'static>, i64) -> Fut,
        Fut: std::future::Future<Output = Page>,
    {
        let table: &'static str = if table == "test" { "test" } else { "production" };
        for (question, search) in QUESTIONS.iter().flat_map(|q| [(q, None), (q, Some("answer 1"))]) {
            for (since, until) in ranges {
                let q = Query {
                    table,
                    question,
                    since: *since,
                    until: *until,
                    search,
                };
                let mut before = None;
                for _ in 0..50 {
                    let (shown, from) = self.page(q, "", before).await;
                    let what = format!("{table} {question} {since:?}..{until:?} {search:?} before {before:?}");
                    assert_eq!(from, "memory", "{what}: answered from memory");
                    assert_eq!(shown, expected(q, before.unwrap_or(i64::MAX)).await, "{what}");
                    before = shown.older;
                    if before.is_none() {
                        break;
                    }
                }
                assert!(before.is_none(), "at most 50 pages");
            }
        }
    }
}

/// Counted rows as SQL returns them.
type Counts = Vec<(Option<String>, i64)>;

/// The page's numbers from SQL results: bars with "other", NULL labels shown empty.
fn page_of(total: i64, charted: i64, top: Counts, days: Counts, rows: Vec<(i64, String, Option<String>)>) -> Page {
    let mut bars: Vec<(String, i64)> = top.into_iter().map(|(l, n)| (l.unwrap_or_default(), n)).collect();
    let other = charted - bars.iter().map(|(_, n)| n).sum::<i64>();
    if other > 0 {
        bars.push(("(other answers)".into(), other));
    }
    Page {
        total,
        charted,
        bars,
        days: days.into_iter().map(|(d, n)| (d.unwrap(), n)).collect(),
        older: rows.last().map(|r| r.0).filter(|_| rows.len() == LIST_PAGE),
        list: rows
            .into_iter()
            .map(|(_, at, answer)| (at, answer.unwrap_or_default()))
            .collect(),
    }
}

fn table_of(q: Query) -> &'static str {
    if q.table == "test" {
        "loggingtable_test"
    } else {
        "loggingtable"
    }
}

/// The page by plain SQL as the admin (not the service's queries).
async fn pg_expected(db: &Db, q: Query<'_>, before: i64) -> Page {
    let at = |s: Option<&str>| s.map(|s| parse_instant(s).unwrap());
    let cond = format!(
        "FROM {} WHERE lesson = 'gateway' AND lesson_level = 'beginner' AND question = $1
         AND ($2::timestamptz IS NULL OR received_at >= $2) AND ($3::timestamptz IS NULL OR received_at < $3)",
        table_of(q)
    );
    let free = "(answer IS NULL OR answer NOT LIKE '{%')";
    let (total, charted): (i64, i64) =
        sqlx::query_as(&format!("SELECT count(*), count(*) FILTER (WHERE {free}) {cond}"))
            .bind(q.question)
            .bind(at(q.since))
            .bind(at(q.until))
            .fetch_one(&db.admin)
            .await
            .unwrap();
    let top: Counts = sqlx::query_as(&format!(
        "SELECT btrim(answer, ' '), count(*) {cond} AND {free} GROUP BY 1
         ORDER BY count(*) DESC, btrim(answer, ' ') COLLATE \"C\" NULLS FIRST LIMIT 10"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let days: Counts = sqlx::query_as(&format!(
        "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), count(*) {cond} GROUP BY 1 ORDER BY 1"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), answer {cond}
         AND id < $4 AND ($5::text IS NULL OR position($5 IN answer) > 0) ORDER BY id DESC LIMIT {LIST_PAGE}"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .bind(before)
    .bind(q.search)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    page_of(total, charted, top, days, rows)
}

async fn sqlite_expected(path: &Path, q: Query<'_>, before: i64) -> Page {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let at = |s: Option<&str>| s.map(|s| sqlite_instant(parse_instant(s).unwrap()));
    let cond = format!(
        "FROM {} WHERE lesson = 'gateway' AND lesson_level = 'beginner' AND question = ?1
         AND (?2 IS NULL OR received_at >= ?2) AND (?3 IS NULL OR received_at < ?3)",
        table_of(q)
    );
    let free = "(answer IS NULL OR answer NOT LIKE '{%')";
    let (total, charted): (i64, i64) =
        sqlx::query_as(&format!("SELECT count(*), count(CASE WHEN {free} THEN 1 END) {cond}"))
            .bind(q.question)
            .bind(at(q.since))
            .bind(at(q.until))
            .fetch_one(&pool)
            .await
            .unwrap();
    let top: Counts = sqlx::query_as(&format!(
        "SELECT trim(answer, ' ') AS a, count(*) AS n {cond} AND {free} GROUP BY 1 ORDER BY n DESC, a COLLATE BINARY LIMIT 10"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .fetch_all(&pool)
    .await
    .unwrap();
    let days: Counts = sqlx::query_as(&format!(
        "SELECT substr(received_at, 1, 10), count(*) {cond} GROUP BY 1 ORDER BY 1"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, received_at, answer {cond} AND id < ?4 AND (?5 IS NULL OR instr(answer, ?5) > 0)
         ORDER BY id DESC LIMIT {LIST_PAGE}"
    ))
    .bind(q.question)
    .bind(at(q.since))
    .bind(at(q.until))
    .bind(before)
    .bind(q.search)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    page_of(total, charted, top, days, rows)
}

/// The answer of row `g`: 13 answers with ties, one with surrounding spaces (counted with
/// its trimmed twin), NULLs, interaction events (listed, not charted), upper case
/// (sorts before lower case by bytes).
const ANSWER: &str = "CASE g % 17 WHEN 0 THEN NULL WHEN 1 THEN '{\"event\":\"click\"}' WHEN 2 THEN '  answer 3 '
    WHEN 3 THEN 'Answer 3' ELSE 'answer ' || ((g * 7) % 13) END";

/// Rows `from..=to` over ten days: 3 in 4 to gateway/beginner/1A, the rest to 2B.
fn pg_fill(table: &str, from: i64, to: i64) -> String {
    format!(
        "INSERT INTO {table} (user_agent, lesson, lesson_level, question, answer, learner_id, received_at)
         SELECT 'ua-' || (g % 7), 'gateway', 'beginner', CASE WHEN g % 4 = 0 THEN '2B' ELSE '1A' END, {ANSWER},
                CASE WHEN g % 10 < 7 THEN md5('learner' || (g % 30))::uuid END,
                timestamptz '2026-11-01' + (g % 10) * interval '1 day' + ((g * 7919) % 86400) * interval '1 second'
                + (g % 1000) * interval '1 millisecond'
         FROM generate_series({from}, {to}) g"
    )
}

fn sqlite_fill(table: &str, from: i64, to: i64) -> String {
    format!(
        "WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM s WHERE g < {to})
         INSERT INTO {table} (user_agent, lesson, lesson_level, question, answer, learner_id, received_at)
         SELECT 'ua-' || (g % 7), 'gateway', 'beginner', CASE WHEN g % 4 = 0 THEN '2B' ELSE '1A' END, {ANSWER},
                CASE WHEN g % 10 < 7 THEN 'learner-' || (g % 30) END,
                strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-01', '+' || (g % 10) || ' days', '+' || ((g * 7919) % 86400) || ' seconds')
         FROM s"
    )
}

#[tokio::test]
async fn postgres_question_page_from_memory_equals_sql_through_writes_out_of_order_commits_and_deletions() {
    let db = fresh_db().await;
    sqlx::query(&pg_fill("loggingtable", 1, 400))
        .execute(&db.admin)
        .await
        .unwrap();
    sqlx::query(&pg_fill("loggingtable_test", 1, 120))
        .execute(&db.admin)
        .await
        .unwrap();
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE indexname LIKE '%question%'")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert!(indexes.is_empty(), "sql/0007 dropped the question indexes: {indexes:?}");
    let service = serve(&db.reader_url).await;
    service.wait_in_memory(Table::Production).await;
    service.wait_in_memory(Table::Test).await;
    let expect = |q, before| pg_expected(&db, q, before);

    // (a) The build.
    service.assert_memory_equals("production", RANGES, expect).await;
    service.assert_memory_equals("test", RANGES, expect).await;

    // A bound inside a day: SQL, the same numbers.
    let q = Query {
        table: "production",
        question: "1A",
        since: None,
        until: None,
        search: None,
    };
    let intra = Query {
        since: Some("2026-11-03T12:00:00Z"),
        ..q
    };
    let (shown, from) = service.page(intra, "", None).await;
    assert_eq!(from, "database", "a bound inside a day is answered by SQL");
    assert_eq!(shown, pg_expected(&db, intra, i64::MAX).await);
    let searched = Query {
        search: Some("answer 1"),
        ..intra
    };
    let (shown, from) = service.page(searched, "", None).await;
    assert_eq!(from, "database");
    assert_eq!(shown, pg_expected(&db, searched, i64::MAX).await);
    assert!(!shown.list.is_empty() && shown.list.iter().all(|(_, a)| a.contains("answer 1")));

    // (b) More rows: by the admin, and through the writer's functions.
    sqlx::query(&pg_fill("loggingtable", 401, 520))
        .execute(&db.admin)
        .await
        .unwrap();
    let learner = Uuid::new_v4();
    write_pg(
        &db,
        &[
            event(Table::Production, "ua-new", "1A", "via the writer", Some(learner)),
            event(Table::Production, "ua-new", "1A", " {not an event", None),
        ],
    )
    .await;
    service.assert_memory_equals("production", RANGES, expect).await;

    // (c) A row committed out of id order: T1 draws an id, T2 more than a page of
    // higher ones and commits first; the service reads T2's rows, then T1 commits (its
    // row belongs on the second page, not the first).
    let mut t1 = db.admin.begin().await.unwrap();
    let id1: i64 = sqlx::query_scalar(
        "INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer, received_at)
         VALUES ('ua-late', 'gateway', 'beginner', '1A', 'first drawn', '2026-11-03T10:00:00Z') RETURNING id",
    )
    .fetch_one(&mut *t1)
    .await
    .unwrap();
    let mut t2 = db.admin.begin().await.unwrap();
    let id2: i64 = sqlx::query_scalar(
        "INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer, received_at)
         SELECT 'ua-late', 'gateway', 'beginner', '1A', 'second drawn', '2026-11-03T10:00:00Z'
         FROM generate_series(1, 60) RETURNING id",
    )
    .fetch_one(&mut *t2)
    .await
    .unwrap();
    assert!(id1 < id2);
    t2.commit().await.unwrap();
    service
        .assert_memory_equals("production", &[(None, None)], expect)
        .await;
    t1.commit().await.unwrap();
    service.assert_memory_equals("production", RANGES, expect).await;
    let (newest, _) = service.page(q, "", None).await;
    let (second, _) = service.page(q, "", newest.older).await;
    assert!(newest.list.iter().all(|(_, a)| a == "second drawn"));
    assert_eq!(second.list[10].1, "first drawn", "T1's row is listed in id order");

    // (d) forget and prune: SQL answers while memory is rebuilt, then memory again.
    let admin = Source::open_admin(&db.admin_url).await.unwrap();
    let forgotten = Uuid::parse_str(
        &sqlx::query_scalar::<_, String>("SELECT md5('learner' || 1)")
            .fetch_one(&db.admin)
            .await
            .unwrap(),
    )
    .unwrap();
    let counts = forget(&admin, &Who::Learner(forgotten), false).await.unwrap();
    assert!(counts.production > 0);
    let (shown, from) = service.page(q, "", None).await;
    assert_eq!(
        from, "database",
        "the aggregate is stale: SQL answers while it is rebuilt"
    );
    assert_eq!(shown, pg_expected(&db, q, i64::MAX).await, "right after forget");
    assert!(shown.total < newest.total, "the forgotten learner's answers are gone");
    service.wait_in_memory(Table::Production).await;
    service.assert_memory_equals("production", RANGES, expect).await;

    let pruned = prune_test(&admin, parse_instant("2026-11-04").unwrap(), false)
        .await
        .unwrap();
    assert!(pruned > 0);
    service.page(Query { table: "test", ..q }, "", None).await;
    service.wait_in_memory(Table::Test).await;
    service.assert_memory_equals("test", RANGES, expect).await;
}

#[tokio::test]
async fn sqlite_question_page_from_memory_equals_sql_through_writes_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let store = hourofci_collector::store::SqliteStore::open(&path, Duration::from_secs(10))
        .await
        .unwrap();
    sqlx::query(&sqlite_fill("loggingtable", 1, 400))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&sqlite_fill("loggingtable_test", 1, 120))
        .execute(store.pool())
        .await
        .unwrap();
    let service = serve(path.to_str().unwrap()).await;
    service.wait_in_memory(Table::Production).await;
    service.wait_in_memory(Table::Test).await;
    let expect = |q, before| {
        let path = path.clone();
        async move { sqlite_expected(&path, q, before).await }
    };

    // (a) The build.
    service.assert_memory_equals("production", RANGES, expect).await;
    service.assert_memory_equals("test", RANGES, expect).await;

    // (b) More rows, through the collector's store too.
    sqlx::query(&sqlite_fill("loggingtable", 401, 520))
        .execute(store.pool())
        .await
        .unwrap();
    let learner = Uuid::new_v4();
    store
        .write_group(&[
            event(Table::Production, "ua-new", "1A", "via the store", Some(learner)),
            event(Table::Production, "ua-new", "1A", "{\"event\":\"x\"}", None),
        ])
        .await
        .unwrap();
    service.assert_memory_equals("production", RANGES, expect).await;
    let q = Query {
        table: "production",
        question: "1A",
        since: None,
        until: None,
        search: None,
    };
    let before = service.page(q, "", None).await.0;

    // (d) forget and prune.
    let admin = Source::open_admin(path.to_str().unwrap()).await.unwrap();
    let counts = forget(&admin, &Who::Learner(learner), false).await.unwrap();
    assert_eq!(counts.production, 1);
    let (shown, from) = service.page(q, "", None).await;
    assert_eq!(
        from, "database",
        "the aggregate is stale: SQL answers while it is rebuilt"
    );
    assert_eq!(shown, sqlite_expected(&path, q, i64::MAX).await, "right after forget");
    assert_eq!(shown.total, before.total - 1);
    service.wait_in_memory(Table::Production).await;
    service.assert_memory_equals("production", RANGES, expect).await;

    let pruned = prune_test(&admin, parse_instant("2026-11-04").unwrap(), false)
        .await
        .unwrap();
    assert!(pruned > 0);
    service.page(Query { table: "test", ..q }, "", None).await;
    service.wait_in_memory(Table::Test).await;
    service.assert_memory_equals("test", RANGES, expect).await;
}
