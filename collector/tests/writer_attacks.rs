//! The writer role turned attacker, as SQL run over the writer's own connection: it
//! tries to get its code run inside the SECURITY DEFINER write functions (which run
//! with the admin's rights) by shadowing what their bodies name, (a) with temporary
//! objects, (b) with functions in schema `public` where PUBLIC may CREATE there (as in
//! a database from PostgreSQL 14 or older). After each attempt: the writer holds no
//! table privilege, cannot read or delete rows, the rows are intact, and the
//! functions still write. The same attack against the old functions (0001 + 0002
//! only) succeeds, so these tests can fail.

mod common;

use common::*;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// SQLSTATE of a failed query.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string())
}

/// The writer's payload: grant itself read and delete on both tables. Run as the
/// caller it fails; run inside a SECURITY DEFINER function it runs as the admin.
/// `schema` is where the writer may create it (pg_temp or public).
fn payload(schema: &str) -> String {
    format!(
        "CREATE FUNCTION {schema}.steal() RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
             EXECUTE 'GRANT SELECT, DELETE ON public.loggingtable, public.loggingtable_test TO '
                 || pg_catalog.quote_ident(session_user::text);
             RETURN true;
         EXCEPTION WHEN insufficient_privilege THEN RETURN true;
         END $f$"
    )
}

/// Attack (a): temporary domains named like the types the function bodies use, whose
/// CHECK runs the payload. Without `pg_temp` in a function's search_path, PostgreSQL
/// looks in the temporary schema FIRST for types.
/// (`date` first: keyword types such as `timestamp` are never looked up by name.)
const TEMP_SHADOWS: &[&str] = &[
    r#"CREATE DOMAIN pg_temp."date" AS pg_catalog.date CHECK (pg_temp.steal())"#,
    r#"CREATE DOMAIN pg_temp."timestamp" AS pg_catalog.timestamp CHECK (pg_temp.steal())"#,
    r#"CREATE DOMAIN pg_temp."time" AS pg_catalog.time CHECK (pg_temp.steal())"#,
    r#"CREATE DOMAIN pg_temp."int4" AS pg_catalog.int4 CHECK (pg_temp.steal())"#,
    r#"CREATE DOMAIN pg_temp."integer" AS pg_catalog.int4 CHECK (pg_temp.steal())"#,
];

/// Attack (b): functions in `public` with exact argument types, which beat
/// pg_catalog's polymorphic ones whatever the search_path order.
const PUBLIC_SHADOWS: &[&str] = &[
    "CREATE FUNCTION public.cardinality(timestamptz[]) RETURNS integer LANGUAGE plpgsql AS
     $f$ BEGIN PERFORM public.steal(); RETURN pg_catalog.cardinality($1); END $f$",
    "CREATE FUNCTION public.cardinality(boolean[]) RETURNS integer LANGUAGE plpgsql AS
     $f$ BEGIN PERFORM public.steal(); RETURN pg_catalog.cardinality($1); END $f$",
    "CREATE FUNCTION public.cardinality(uuid[]) RETURNS integer LANGUAGE plpgsql AS
     $f$ BEGIN PERFORM public.steal(); RETURN pg_catalog.cardinality($1); END $f$",
    "CREATE FUNCTION public.timezone(text, timestamptz) RETURNS timestamp LANGUAGE plpgsql AS
     $f$ BEGIN PERFORM public.steal(); RETURN pg_catalog.timezone($1, $2); END $f$",
    "CREATE FUNCTION public.unnest(boolean[]) RETURNS SETOF boolean LANGUAGE plpgsql AS
     $f$ BEGIN PERFORM public.steal(); RETURN QUERY SELECT pg_catalog.unnest($1); END $f$",
];

/// Call every write function once as the writer (each writes one row; `logging2` writes
/// to the test table); panics if one fails.
async fn call_every_function(writer: &mut PgConnection, tag: &str) {
    let calls = [
        format!("SELECT public.logging('ua', current_date, localtime, 'gateway', 'beginner', '1A', '{tag} logging')"),
        format!("SELECT public.logging2('ua', current_date, localtime, 'gateway', 'beginner', '1A', '{tag} logging2')"),
        format!("SELECT public.log_event(false, gen_random_uuid(), now(), 'ua', 'gateway', 'beginner', '1A', '{tag} log_event')"),
        format!(
            "SELECT * FROM public.log_events(false, ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'], ARRAY['gateway'],
             ARRAY['beginner'], ARRAY['1A'], ARRAY['{tag} log_events'])"
        ),
        format!(
            "SELECT * FROM public.log_events_v2(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
             ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['{tag} log_events_v2'])"
        ),
        format!(
            "SELECT * FROM public.log_events_v3(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
             ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['{tag} log_events_v3'], ARRAY[NULL::uuid])"
        ),
        format!(
            "SELECT * FROM public.log_events_v4(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
             ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['{tag} log_events_v4'], ARRAY[NULL::uuid])"
        ),
        format!(
            "SELECT public.log_events_v5(ARRAY[false], ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'],
             ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['{tag} log_events_v5'], ARRAY[NULL::uuid])"
        ),
    ];
    for call in calls {
        sqlx::query(&call)
            .execute(&mut *writer)
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
    }
}

/// What the writer may do with the tables, as the catalog says.
async fn writer_table_rights(db: &TestDb) -> Vec<(String, bool)> {
    let mut rights = Vec::new();
    for table in ["public.loggingtable", "public.loggingtable_test"] {
        for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"] {
            let held: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, $3)")
                .bind(&db.writer_role)
                .bind(table)
                .bind(privilege)
                .fetch_one(&db.admin)
                .await
                .unwrap();
            rights.push((format!("{privilege} on {table}"), held));
        }
    }
    rights
}

/// The writer gained nothing: no privilege held, reading and deleting refused, rows intact.
async fn assert_writer_gained_nothing(db: &TestDb, writer: &mut PgConnection, rows_before: &[Row]) {
    let held: Vec<String> = writer_table_rights(db)
        .await
        .into_iter()
        .filter(|(_, h)| *h)
        .map(|(p, _)| p)
        .collect();
    assert!(held.is_empty(), "the writer holds {held:?}");
    for sql in [
        "SELECT answer FROM public.loggingtable",
        "DELETE FROM public.loggingtable",
        "SELECT answer FROM public.loggingtable_test",
    ] {
        let err = sqlx::query(sql).execute(&mut *writer).await.expect_err(sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
    }
    let now = rows(&db.admin, "loggingtable").await;
    assert_eq!(
        &now[..rows_before.len()],
        rows_before,
        "the rows stored before the attack are intact"
    );
}

/// A learner's answer nobody but the admin may read.
async fn store_a_secret(db: &TestDb) -> Vec<Row> {
    sqlx::query("INSERT INTO loggingtable (user_agent, lesson, lesson_level, question, answer, event_id) VALUES ('secret-ua', 'gateway', 'beginner', '1A', 'another learner''s answer', gen_random_uuid())")
        .execute(&db.admin)
        .await
        .unwrap();
    rows(&db.admin, "loggingtable").await
}

async fn writer_connection(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.writer_url)
        .await
        .expect("connect as the writer")
}

#[tokio::test]
async fn temp_schema_shadowing_gains_the_writer_nothing() {
    let db = fresh_db(&PG).await;
    let before = store_a_secret(&db).await;
    let mut writer = writer_connection(&db).await;

    // Wall 1, set up by migrate alone: the writer cannot create a temporary object at all.
    for sql in [payload("pg_temp"), "CREATE TEMP TABLE loot (answer text)".to_string()] {
        let err = sqlx::query(&sql).execute(&mut writer).await.expect_err(&sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
    }

    // Wall 2, the functions themselves: give the writer TEMPORARY behind migrate's back
    // and run the whole attack.
    PG.psql(
        &db.name,
        &format!("GRANT TEMPORARY ON DATABASE {} TO {}", db.name, db.writer_role),
    );
    let mut writer = writer_connection(&db).await;
    sqlx::query(&payload("pg_temp"))
        .execute(&mut writer)
        .await
        .expect("with TEMPORARY the writer creates pg_temp.steal()");
    for shadow in TEMP_SHADOWS {
        sqlx::query(shadow)
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{shadow}: {e}"));
    }
    call_every_function(&mut writer, "attack-a").await;
    assert_writer_gained_nothing(&db, &mut writer, &before).await;
    assert_eq!(
        count(&db.admin, "loggingtable").await,
        before.len() as i64 + 7,
        "the functions still write"
    );
    assert_eq!(count(&db.admin, "loggingtable_test").await, 1);

    // migrate takes a direct grant back (once the writer's temporary objects are gone:
    // while they exist it owns objects, and migrate refuses).
    let err = hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to finish") && err.contains("owns"), "{err}");
    sqlx::query("DISCARD TEMP").execute(&mut writer).await.unwrap();
    hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .expect("migrate revokes the writer's TEMPORARY");
    let temporary: bool = sqlx::query_scalar("SELECT has_database_privilege($1, current_database(), 'TEMPORARY')")
        .bind(&db.writer_role)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(!temporary);

    // TEMPORARY through a role the writer belongs to: migrate cannot take it, so it refuses.
    let group = format!("{}_temps", db.name);
    PG.psql("postgres", &format!("CREATE ROLE {group} NOLOGIN"));
    PG.psql(
        &db.name,
        &format!(
            "GRANT TEMPORARY ON DATABASE {} TO {group}; GRANT {group} TO {}",
            db.name, db.writer_role
        ),
    );
    let err = hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to finish") && err.contains("TEMPORARY"), "{err}");
}

#[tokio::test]
async fn public_schema_shadowing_gains_the_writer_nothing() {
    let db = fresh_db(&PG).await;
    let before = store_a_secret(&db).await;
    // As in a database created by PostgreSQL 14 or older: PUBLIC may CREATE in public.
    PG.psql(&db.name, "GRANT CREATE ON SCHEMA public TO PUBLIC");
    let mut writer = writer_connection(&db).await;
    sqlx::query(&payload("public"))
        .execute(&mut writer)
        .await
        .expect("PUBLIC may create in public");
    for shadow in PUBLIC_SHADOWS {
        sqlx::query(shadow)
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{shadow}: {e}"));
    }
    call_every_function(&mut writer, "attack-b").await;
    assert_writer_gained_nothing(&db, &mut writer, &before).await;
    assert_eq!(
        count(&db.admin, "loggingtable").await,
        before.len() as i64 + 7,
        "the functions still write"
    );

    // migrate revokes PUBLIC's CREATE, but the writer now owns objects: it refuses.
    let err = hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to finish") && err.contains("owns"), "{err}");
    let public_may_create: bool = sqlx::query_scalar("SELECT has_schema_privilege('public', 'public', 'CREATE')")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(!public_may_create, "migrate revoked CREATE on public from PUBLIC");
    let err = sqlx::query("CREATE FUNCTION public.again() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .execute(&mut writer)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    // Once the DBA removes the writer's objects, migrate finishes.
    PG.psql(&db.name, &format!("DROP OWNED BY {}", db.writer_role));
    hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .expect("migrate after the clean-up");
}

#[tokio::test]
async fn migrate_refuses_when_it_cannot_take_create_on_public() {
    let db = fresh_db(&PG).await;
    // Upgraded from PostgreSQL 14: `public` owned by the bootstrap superuser, CREATE for
    // PUBLIC. The admin (database owner) cannot revoke that.
    PG.psql(
        &db.name,
        "ALTER SCHEMA public OWNER TO postgres; GRANT CREATE ON SCHEMA public TO PUBLIC",
    );
    let err = hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to finish") && err.contains("CREATE in schema public"),
        "{err}"
    );
    // The fix it names: give the schema to the database owner (as PostgreSQL 15 does);
    // then migrate revokes PUBLIC's CREATE itself.
    PG.psql(&db.name, "ALTER SCHEMA public OWNER TO pg_database_owner");
    hourofci_collector::migrate::run(&db.admin_url, &db.writer_role)
        .await
        .expect("migrate once the admin may revoke");
    let public_may_create: bool = sqlx::query_scalar("SELECT has_schema_privilege('public', 'public', 'CREATE')")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(!public_may_create);
}

/// A database as the previous release left it (0001 + 0002, its grants, rows), then
/// upgraded by migrate. The attack works before the upgrade and not after.
#[tokio::test]
async fn upgrade_from_the_old_migrations_closes_both_holes_and_keeps_the_rows() {
    let (name, admin_url) = PG.fresh_database("upg");
    let writer_role = format!("{name}_writer");
    PG.create_login_role(&writer_role, WRITER_PASSWORD);
    let mut admin_conn = PgConnection::connect(&admin_url).await.unwrap();
    let mut old = sqlx::migrate!("../sql");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 2)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(old.migrations.len(), 2);
    old.run(&mut admin_conn).await.expect("the old migrations");
    // The old release's grants; and PUBLIC's defaults of a database from PostgreSQL 14.
    PG.psql(
        &name,
        &format!(
            "GRANT CONNECT ON DATABASE {name} TO {writer_role};
         GRANT EXECUTE ON FUNCTION logging(text, date, time, varchar, varchar, varchar, text),
             logging2(text, date, time, varchar, varchar, varchar, text),
             log_event(boolean, uuid, timestamptz, text, text, text, text, text),
             log_events(boolean, uuid[], timestamptz[], text[], text[], text[], text[], text[]) TO {writer_role};
         GRANT TEMPORARY ON DATABASE {name} TO PUBLIC;
         GRANT CREATE ON SCHEMA public TO PUBLIC;"
        ),
    );
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&admin_url)
        .await
        .unwrap();
    let writer_url = PG.url_for(&writer_role, WRITER_PASSWORD, &name);
    let db = TestDb {
        name: name.clone(),
        admin_url: admin_url.clone(),
        writer_role: writer_role.clone(),
        writer_password: WRITER_PASSWORD.into(),
        writer_url,
        admin,
    };
    let old_id = Uuid::new_v4();
    sqlx::query(
        "SELECT log_event(false, $1, now(), 'old-ua', 'gateway', 'beginner', '1A', 'stored by the old release')",
    )
    .bind(old_id)
    .execute(&db.admin)
    .await
    .unwrap();
    let before = store_a_secret(&db).await;

    // Before the upgrade, attack (a) works: the writer grants itself SELECT and DELETE.
    let mut writer = writer_connection(&db).await;
    sqlx::query(&payload("pg_temp")).execute(&mut writer).await.unwrap();
    sqlx::query(TEMP_SHADOWS[0]).execute(&mut writer).await.unwrap();
    sqlx::query("SELECT log_event(false, gen_random_uuid(), now(), 'ua', 'gateway', 'beginner', '1A', 'x')")
        .execute(&mut writer)
        .await
        .unwrap();
    let stolen: Vec<String> = writer_table_rights(&db)
        .await
        .into_iter()
        .filter(|(_, h)| *h)
        .map(|(p, _)| p)
        .collect();
    assert!(
        stolen.contains(&"SELECT on public.loggingtable".to_string()),
        "the old functions can be hijacked: {stolen:?}"
    );
    drop(writer);
    // Attack (b) works too.
    PG.psql(
        &name,
        &format!("REVOKE ALL ON loggingtable, loggingtable_test FROM {writer_role}"),
    );
    let mut writer = writer_connection(&db).await;
    sqlx::query(&payload("public")).execute(&mut writer).await.unwrap();
    sqlx::query(PUBLIC_SHADOWS[0]).execute(&mut writer).await.unwrap();
    sqlx::query("SELECT * FROM log_events(false, ARRAY[gen_random_uuid()], ARRAY[now()], ARRAY['ua'], ARRAY['gateway'], ARRAY['beginner'], ARRAY['1A'], ARRAY['y'])")
        .execute(&mut writer)
        .await
        .unwrap();
    let stolen: Vec<String> = writer_table_rights(&db)
        .await
        .into_iter()
        .filter(|(_, h)| *h)
        .map(|(p, _)| p)
        .collect();
    assert!(
        stolen.contains(&"DELETE on public.loggingtable".to_string()),
        "the old functions can be hijacked: {stolen:?}"
    );
    drop(writer);
    // The DBA cleans up what the writer did, then upgrades.
    PG.psql(
        &name,
        &format!("REVOKE ALL ON loggingtable, loggingtable_test FROM {writer_role}; DROP OWNED BY {writer_role}"),
    );
    let rows_before_upgrade = rows(&db.admin, "loggingtable").await;
    assert!(rows_before_upgrade.starts_with(&before));

    hourofci_collector::migrate::run(&admin_url, &writer_role)
        .await
        .expect("the upgrade");
    assert_eq!(
        rows(&db.admin, "loggingtable").await,
        rows_before_upgrade,
        "the upgrade keeps every row"
    );
    let (temp, create): (bool, bool) = sqlx::query_as(
        "SELECT has_database_privilege('public', current_database(), 'TEMPORARY'), has_schema_privilege('public', 'public', 'CREATE')",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(!temp && !create, "migrate revoked PUBLIC's TEMPORARY and CREATE");
    let search_paths: Vec<(String, String)> = sqlx::query_as(
        "SELECT proname::text, array_to_string(proconfig, ',') FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace AND prosecdef ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(search_paths.len(), 8, "{search_paths:?}"); // with log_events_v3 (sql/0004), v4 (sql/0005), v5 (sql/0008)
    for (function, config) in &search_paths {
        assert_eq!(config, "search_path=pg_catalog, pg_temp", "{function}");
    }

    // Both attacks again, with the writer's own grants of TEMPORARY and CREATE (behind
    // migrate's back): nothing gained, and the functions write.
    PG.psql(
        &name,
        &format!("GRANT TEMPORARY ON DATABASE {name} TO {writer_role}; GRANT CREATE ON SCHEMA public TO {writer_role}"),
    );
    let mut writer = writer_connection(&db).await;
    sqlx::query(&payload("pg_temp")).execute(&mut writer).await.unwrap();
    sqlx::query(&payload("public")).execute(&mut writer).await.unwrap();
    for shadow in TEMP_SHADOWS.iter().chain(PUBLIC_SHADOWS) {
        sqlx::query(shadow)
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{shadow}: {e}"));
    }
    call_every_function(&mut writer, "after-upgrade").await;
    assert_writer_gained_nothing(&db, &mut writer, &rows_before_upgrade).await;
    // The old release's row takes part in the new verdicts.
    let verdict: Vec<(i32, String)> = sqlx::query_as(
        "SELECT * FROM log_events_v2(ARRAY[false, false], ARRAY[$1, $1]::uuid[], ARRAY[now(), now()],
         ARRAY['old-ua', 'old-ua'], ARRAY['gateway', 'gateway'], ARRAY['beginner', 'beginner'], ARRAY['1A', '1A'],
         ARRAY['stored by the old release', 'changed'])",
    )
    .bind(old_id)
    .fetch_all(&mut writer)
    .await
    .unwrap();
    assert_eq!(verdict, [(1, "duplicate".to_string()), (2, "conflict".to_string())]);
}
