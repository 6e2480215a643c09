//! The collector's write calls against `log_events_v3` (sql/0004), whose verdicts they must
//! keep: `log_events_v5` (sql/0008, one array of verdicts; the collector's call) and
//! `log_events_v4` (sql/0005; the previous release's call, still used during a rolling
//! upgrade). The same calls on the same stored rows give the same verdicts and leave the
//! same rows, in the same order, for every mix of tables, repeated and stored ids, NULL
//! ids, same and different content. And the upgrade of a database that 0001-0004 made,
//! with rows.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// One event of a generated call: which table, which of four ids (or none), which of
/// three contents, which of two learners (or none).
#[derive(Clone, Debug)]
struct Ev {
    test: bool,
    id: Option<u8>,
    content: u8,
    learner: Option<u8>,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        any::<bool>(),
        proptest::option::weighted(0.85, 0u8..4),
        0u8..3,
        proptest::option::of(0u8..2),
    )
        .prop_map(|(test, id, content, learner)| Ev {
            test,
            id,
            content,
            learner,
        })
}

const IDS: [&str; 4] = [
    "6f1c1c52-1f0e-4d8e-9a53-0c4a3d1b2a01",
    "6f1c1c52-1f0e-4d8e-9a53-0c4a3d1b2a02",
    "6f1c1c52-1f0e-4d8e-9a53-0c4a3d1b2a03",
    "6f1c1c52-1f0e-4d8e-9a53-0c4a3d1b2a04",
];
const LEARNERS: [&str; 2] = [
    "0b6f3c1e-8f1d-4b7a-9c2e-5d4f3a2b1c0d",
    "0b6f3c1e-8f1d-4b7a-9c2e-5d4f3a2b1c0e",
];

/// Call `function` with `events`; the verdicts as (1-based index, status), whether the
/// function answers rows (v3, v4) or one array (v5).
async fn call(conn: &mut PgConnection, function: &str, events: &[Ev]) -> Vec<(i32, String)> {
    let answers: Vec<Option<String>> = events
        .iter()
        .map(|e| match e.content {
            0 => Some("an answer".to_string()),
            1 => Some("another answer, ✓".to_string()),
            _ => None,
        })
        .collect();
    let one_array = function == "log_events_v5";
    let sql = if one_array {
        format!("SELECT public.{function}($1, $2, $3, $4, $5, $6, $7, $8, $9)")
    } else {
        format!("SELECT event_index, status FROM public.{function}($1, $2, $3, $4, $5, $6, $7, $8, $9)")
    };
    let arguments = sqlx::query::<sqlx::Postgres>(&sql)
        .bind(events.iter().map(|e| e.test).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.id.map(|i| Uuid::parse_str(IDS[i as usize]).unwrap()))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|_| chrono_now()).collect::<Vec<_>>())
        .bind(events.iter().map(|_| UA.to_string()).collect::<Vec<_>>())
        .bind(events.iter().map(|_| "gateway".to_string()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| if e.content == 1 { "advanced" } else { "beginner" }.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|_| "1A".to_string()).collect::<Vec<_>>())
        .bind(answers)
        .bind(
            events
                .iter()
                .map(|e| e.learner.map(|l| Uuid::parse_str(LEARNERS[l as usize]).unwrap()))
                .collect::<Vec<_>>(),
        );
    if one_array {
        let words: Vec<String> = arguments
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))
            .unwrap_or_else(|e| panic!("{function}({events:?}): {e}"));
        (1..).zip(words).collect()
    } else {
        arguments
            .fetch_all(&mut *conn)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((sqlx::Row::try_get(row, 0)?, sqlx::Row::try_get(row, 1)?)))
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{function}({events:?}): {e}"))
    }
}

fn chrono_now() -> sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc> {
    sqlx::types::chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

type Stored = (
    String,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
);

/// Every row of both tables in id order, without the id (sequences are not rolled back).
async fn stored(conn: &mut PgConnection) -> Vec<Stored> {
    sqlx::query_as(
        "SELECT t, event_id, lesson_level::text, answer, user_agent, learner_id FROM (
             SELECT 'production' AS t, id, event_id, lesson_level, answer, user_agent, learner_id FROM public.loggingtable
             UNION ALL
             SELECT 'test', id, event_id, lesson_level, answer, user_agent, learner_id FROM public.loggingtable_test) r
         ORDER BY t, id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Store `before` with v3, then call `function` with `events`, in a transaction that is
/// rolled back: the verdicts and the rows it left.
async fn outcome(
    conn: &mut PgConnection,
    function: &str,
    before: &[Ev],
    events: &[Ev],
) -> (Vec<(i32, String)>, Vec<Stored>) {
    let mut tx = conn.begin().await.unwrap();
    call(&mut tx, "log_events_v3", before).await;
    let verdicts = call(&mut tx, function, events).await;
    let rows = stored(&mut tx).await;
    tx.rollback().await.unwrap();
    (verdicts, rows)
}

#[test]
fn v5_and_v4_judge_and_store_every_call_as_v3_does() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(fresh_db(&PG));
    let conn = std::cell::RefCell::new(rt.block_on(PgConnection::connect(&db.admin_url)).unwrap());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(ev(), 0..4),
        proptest::collection::vec(ev(), 0..9),
    );
    let single_table_calls = std::cell::Cell::new(0);
    let slow_paths = std::cell::Cell::new(0);
    runner
        .run(&strategy, |(before, events)| {
            let mut conn = conn.borrow_mut();
            let v3 = rt.block_on(outcome(&mut conn, "log_events_v3", &before, &events));
            let v4 = rt.block_on(outcome(&mut conn, "log_events_v4", &before, &events));
            let v5 = rt.block_on(outcome(&mut conn, "log_events_v5", &before, &events));
            if events.iter().all(|e| e.test) || events.iter().all(|e| !e.test) {
                single_table_calls.set(single_table_calls.get() + 1);
            }
            if v3.0.iter().any(|(_, s)| s != "written") {
                slow_paths.set(slow_paths.get() + 1);
            }
            prop_assert_eq!(&v5.0, &v3.0, "v5 verdicts of {:?} after {:?}", events, before);
            prop_assert_eq!(&v5.1, &v3.1, "v5 rows after {:?} after {:?}", events, before);
            prop_assert_eq!(&v4.0, &v3.0, "v4 verdicts of {:?} after {:?}", events, before);
            prop_assert_eq!(&v4.1, &v3.1, "v4 rows after {:?} after {:?}", events, before);
            Ok(())
        })
        .unwrap();
    // The generator reached both insert paths and the verdict query.
    let (single_table_calls, slow_paths) = (single_table_calls.get(), slow_paths.get());
    assert!(
        single_table_calls > 50 && slow_paths > 50,
        "{single_table_calls} single-table calls, {slow_paths} with a verdict"
    );
    let mut conn = conn.into_inner();
    // Unequal arrays and a call without a table are refused, never half-written.
    for function in ["log_events_v4", "log_events_v5"] {
        let refused = rt.block_on(
            sqlx::query(&format!(
                "SELECT public.{function}(ARRAY[NULL::boolean], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
                 ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['no table'], ARRAY[NULL::uuid])"
            ))
            .execute(&mut conn),
        );
        assert!(refused.is_err(), "{function}: a NULL table flag is refused");
        let refused = rt.block_on(
            sqlx::query(&format!(
                "SELECT public.{function}(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
                 ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['short'], ARRAY[]::uuid[])"
            ))
            .execute(&mut conn),
        );
        assert!(refused.is_err(), "{function}: arrays of unequal length are refused");
    }
    assert!(rt.block_on(stored(&mut conn)).is_empty());
}

async fn indexes(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'loggingtable%' ORDER BY 1")
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn upgrade_from_0004_keeps_rows_drops_the_maintenance_indexes_and_writes_with_v5() {
    let (name, admin_url) = PG.fresh_database("v4up");
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    let mut old = sqlx::migrate!("../sql");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 4)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(old.migrations.len(), 4);
    old.run(&mut admin).await.expect("0001-0004");
    let stored_before = [
        Ev {
            test: false,
            id: Some(0),
            content: 0,
            learner: Some(0),
        },
        Ev {
            test: true,
            id: Some(1),
            content: 1,
            learner: None,
        },
        Ev {
            test: false,
            id: None,
            content: 2,
            learner: None,
        },
    ];
    call(&mut admin, "log_events_v3", &stored_before).await;
    let rows_before = stored(&mut admin).await;
    assert!(indexes(&mut admin)
        .await
        .contains(&"loggingtable_received_idx".to_string()));

    let writer_role = format!("{name}_writer");
    PG.create_login_role(&writer_role, WRITER_PASSWORD);
    hourofci_collector::migrate::run(&admin_url, &writer_role)
        .await
        .expect("the upgrade");
    assert_eq!(stored(&mut admin).await, rows_before, "the upgrade keeps every row");
    assert_eq!(
        indexes(&mut admin).await,
        [
            "loggingtable_event_id_key",
            "loggingtable_pkey",
            "loggingtable_test_event_id_key",
            "loggingtable_test_pkey",
        ],
        "only the keys stay: learner and received_at go (sql/0005), the question indexes too (sql/0007)"
    );

    // As the writer: v5 judges the old release's rows, and v4 and v3 still work for
    // collectors of earlier releases during a rolling upgrade.
    let mut writer = PgConnection::connect(&PG.url_for(&writer_role, WRITER_PASSWORD, &name))
        .await
        .unwrap();
    let again = [
        Ev {
            test: false,
            id: Some(0),
            content: 0,
            learner: None,
        },
        Ev {
            test: false,
            id: Some(1),
            content: 1,
            learner: None,
        },
        Ev {
            test: true,
            id: Some(0),
            content: 0,
            learner: None,
        },
        Ev {
            test: false,
            id: Some(2),
            content: 0,
            learner: Some(1),
        },
    ];
    let verdicts = call(&mut writer, "log_events_v5", &again).await;
    let words: Vec<&str> = verdicts.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(words, ["duplicate", "conflict", "conflict", "written"]);
    let verdicts = call(&mut writer, "log_events_v4", &again).await;
    let words: Vec<&str> = verdicts.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        words,
        ["duplicate", "conflict", "conflict", "duplicate"],
        "v4 after v5 wrote them"
    );
    let verdicts = call(
        &mut writer,
        "log_events_v3",
        &[Ev {
            test: true,
            id: Some(3),
            content: 0,
            learner: None,
        }],
    )
    .await;
    assert_eq!(verdicts, [(1, "written".to_string())]);
    for function in ["log_events_v4", "log_events_v5"] {
        let public_may_execute: bool = sqlx::query_scalar(&format!(
            "SELECT has_function_privilege('public', 'public.{function}(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[], uuid[])', 'EXECUTE')",
        ))
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(!public_may_execute, "only the writer may call {function}");
        let config: String =
            sqlx::query_scalar("SELECT array_to_string(proconfig, ',') FROM pg_proc WHERE proname = $1 AND prosecdef")
                .bind(function)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert_eq!(config, "search_path=pg_catalog, pg_temp", "{function}");
    }
}
