//! `forget` and `prune` delete exactly what they say, in both stores: the full row
//! sets before and after differ by those rows and no others; `--dry-run` and a
//! `--user-agent` without `--yes` delete nothing; the writer's and the reader's URLs
//! are refused.

mod common;

use common::*;
use hourofci_collector::event::{NewEvent, Table};
use uuid::Uuid;

/// Every row of both tables as (table, answer, learner, user agent), in id order.
type Rows = Vec<(String, String, Option<String>, String)>;

async fn pg_rows(db: &Db) -> Rows {
    sqlx::query_as(
        "SELECT t, answer, learner_id::text, user_agent FROM (
            SELECT 'production' AS t, id, answer, learner_id, user_agent FROM loggingtable
            UNION ALL SELECT 'test', id, answer, learner_id, user_agent FROM loggingtable_test) s ORDER BY t, id",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap()
}

async fn sqlite_rows(path: &std::path::Path) -> Rows {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let rows = sqlx::query_as(
        "SELECT t, answer, learner_id, user_agent FROM (
            SELECT 'production' AS t, id, answer, learner_id, user_agent FROM loggingtable
            UNION ALL SELECT 'test', id, answer, learner_id, user_agent FROM loggingtable_test) ORDER BY t, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Two learners on the same browser build (same user agent), legacy rows with that user
/// agent and with another one, in both tables.
fn population(alice: Uuid, bob: Uuid) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for table in [Table::Production, Table::Test] {
        for i in 0..3 {
            events.push(event(table, "shared-ua", "1A", &format!("alice {i}"), Some(alice)));
        }
        events.push(event(table, "shared-ua", "1A", "bob", Some(bob)));
        events.push(event(table, "shared-ua", "1A", "legacy shared", None));
        events.push(event(table, "other-ua", "1A", "legacy other", None));
    }
    events
}

fn without(rows: &Rows, gone: impl Fn(&(String, String, Option<String>, String)) -> bool) -> Rows {
    rows.iter().filter(|r| !gone(r)).cloned().collect()
}

/// The whole forget story against one store (`target`), reading rows with `read`.
async fn forget_story<F, Fut>(target: &str, read: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Rows>,
{
    let before = read().await;
    let alice = before.iter().find(|r| r.1 == "alice 0").unwrap().2.clone().unwrap();

    let run = insights(&["forget", "--database-url", target, "--learner", &alice, "--dry-run"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "would delete 3 production and 3 test rows");
    assert_eq!(read().await, before, "a dry run deletes nothing");

    let run = insights(&["forget", "--database-url", target, "--learner", &alice.to_uppercase()]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "deleted 3 production and 3 test rows");
    let after_alice = without(&before, |r| r.2.as_deref() == Some(alice.as_str()));
    assert_eq!(after_alice.len(), before.len() - 6);
    assert_eq!(read().await, after_alice, "exactly alice's rows are gone");

    let run = insights(&["forget", "--database-url", target, "--user-agent", "shared-ua"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("1 production and 1 test rows without learner id; 1 learner id(s) also use this user agent"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(read().await, after_alice, "no --yes: nothing deleted");

    let run = insights(&["forget", "--database-url", target, "--user-agent", "shared-ua", "--yes"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "deleted 1 production and 1 test rows");
    let after_ua = without(&after_alice, |r| r.3 == "shared-ua" && r.2.is_none());
    assert_eq!(
        read().await,
        after_ua,
        "only the legacy rows of that user agent; bob's rows stay"
    );
    assert!(after_ua.iter().any(|r| r.1 == "bob") && after_ua.iter().any(|r| r.1 == "legacy other"));

    let run = insights(&[
        "forget",
        "--database-url",
        target,
        "--learner",
        &Uuid::new_v4().to_string(),
    ])
    .await;
    assert_eq!(run.stdout.trim(), "deleted 0 production and 0 test rows");
    let run = insights(&["forget", "--database-url", target]).await;
    assert!(!run.ok, "a learner or a user agent is required");
}

#[tokio::test]
async fn postgres_forget_deletes_exactly_one_learner_and_refuses_the_writer_and_the_reader() {
    let db = fresh_db().await;
    write_pg(&db, &population(Uuid::new_v4(), Uuid::new_v4())).await;
    let before = pg_rows(&db).await;
    let some_learner = before.iter().find_map(|r| r.2.clone()).unwrap();
    for (who, url) in [("writer", &db.writer_url), ("reader", &db.reader_url)] {
        let run = insights(&["forget", "--database-url", url, "--learner", &some_learner]).await;
        assert!(!run.ok, "the {who}'s URL must be refused");
        assert!(
            run.stderr.contains("may not delete rows") && run.stderr.contains("admin role's URL"),
            "{who}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("-pw"),
            "no password in the message: {}",
            run.stderr
        );
        let run = insights(&[
            "prune",
            "--database-url",
            url,
            "--table",
            "test",
            "--before",
            "2100-01-01",
        ])
        .await;
        assert!(
            !run.ok && run.stderr.contains("may not delete rows"),
            "{who}: {}",
            run.stderr
        );
    }
    assert_eq!(pg_rows(&db).await, before, "nothing deleted by the refused runs");
    forget_story(&db.admin_url, || pg_rows(&db)).await;
}

#[tokio::test]
async fn sqlite_forget_deletes_exactly_one_learner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hourofci-log.db");
    write_sqlite(&path, &population(Uuid::new_v4(), Uuid::new_v4())).await;
    forget_story(path.to_str().unwrap(), || sqlite_rows(&path)).await;
}

#[tokio::test]
async fn prune_deletes_only_test_rows_received_before_the_date_in_both_stores() {
    let db = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("p.db");
    let mut events = Vec::new();
    for i in 1..=6 {
        events.push(event(Table::Test, "ua", "1A", &format!("test day {i}"), None));
        events.push(event(
            Table::Production,
            "ua",
            "1A",
            &format!("production day {i}"),
            None,
        ));
    }
    write_pg(&db, &events).await;
    write_sqlite(&sqlite, &events).await;
    // Row "... day i" received on 2026-11-0i at 12:00 UTC.
    for table in ["loggingtable", "loggingtable_test"] {
        sqlx::query(&format!(
            "UPDATE {table} SET received_at = timestamptz '2026-11-01T12:00:00Z' + ((right(answer, 1)::int - 1) * interval '1 day')"
        ))
        .execute(&db.admin)
        .await
        .unwrap();
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sqlite.display()))
            .await
            .unwrap();
        sqlx::query(&format!(
            "UPDATE {table} SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-01T12:00:00', '+' || (substr(answer, -1) - 1) || ' days')"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let targets: [(String, Rows); 2] = [
        (db.admin_url.clone(), pg_rows(&db).await),
        (sqlite.to_str().unwrap().to_string(), sqlite_rows(&sqlite).await),
    ];
    for (target, before) in targets {
        let read = || async {
            if target.starts_with("postgres") {
                pg_rows(&db).await
            } else {
                sqlite_rows(&sqlite).await
            }
        };
        let run = insights(&[
            "prune",
            "--database-url",
            &target,
            "--table",
            "test",
            "--before",
            "2026-11-04",
            "--dry-run",
        ])
        .await;
        assert!(run.ok, "{}", run.stderr);
        assert_eq!(
            run.stdout.trim(),
            "would delete 3 test rows received before 2026-11-04T00:00:00+00:00"
        );
        assert_eq!(read().await, before);
        let run = insights(&[
            "prune",
            "--database-url",
            &target,
            "--table",
            "production",
            "--before",
            "2026-11-04",
        ])
        .await;
        assert!(!run.ok, "production is never pruned by date");
        let run = insights(&[
            "prune",
            "--database-url",
            &target,
            "--table",
            "test",
            "--before",
            "2026-11-04",
        ])
        .await;
        assert!(run.ok, "{}", run.stderr);
        assert_eq!(
            run.stdout.trim(),
            "deleted 3 test rows received before 2026-11-04T00:00:00+00:00"
        );
        let expected = without(&before, |r| {
            r.0 == "test" && ["test day 1", "test day 2", "test day 3"].contains(&r.1.as_str())
        });
        assert_eq!(read().await, expected, "exactly the three old test rows");
    }
}
