//! `hourofci-collector migrate`: apply `sql/` as the admin role, take from PUBLIC what
//! would let the writer create objects, give the writer role exactly CONNECT on the
//! database and EXECUTE on the write functions, and refuse to finish while the writer
//! could still create or own objects.
//!
//! Why: a role that can create a temporary object, or an object in a schema a
//! SECURITY DEFINER function searches, may get its code run with the owner's rights.
//! `sql/0003` closes that in the functions themselves; this is the second wall.
//!
//! Role and database names cannot be bind parameters, so the role name is checked
//! against a strict pattern and both names are quoted as identifiers.

use sqlx::{Connection, PgConnection};

use crate::config::redact_url;

/// The functions the writer may call (signatures as PostgreSQL spells them). The
/// collector calls only `log_events_v5`; the others stay for older callers (`log_events_v4` for
/// collectors of the previous release during a rolling upgrade; v5 hands mixed-table calls
/// to `log_events_v3`, which runs with its owner's rights and needs no grant for that).
const WRITER_FUNCTIONS: &[&str] = &[
    "logging(text, date, time, varchar, varchar, varchar, text)",
    "logging2(text, date, time, varchar, varchar, varchar, text)",
    "log_event(boolean, uuid, timestamptz, text, text, text, text, text)",
    "log_events(boolean, uuid[], timestamptz[], text[], text[], text[], text[], text[])",
    "log_events_v2(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[])",
    "log_events_v3(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[], uuid[])",
    "log_events_v4(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[], uuid[])",
    "log_events_v5(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[], uuid[])",
];

/// Accept only plain lower-case identifiers (`[a-z_][a-z0-9_]*`, at most 63 bytes).
pub fn check_role_name(role: &str) -> anyhow::Result<()> {
    let ok = !role.is_empty()
        && role.len() <= 63
        && role.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    anyhow::ensure!(
        ok,
        "writer role {role:?} must be a lower-case identifier: letters a-z, digits, _ (at most 63)"
    );
    Ok(())
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run the migrations and the grants. `admin_url` must be the database owner's.
pub async fn run(admin_url: &str, writer_role: &str) -> anyhow::Result<()> {
    check_role_name(writer_role)?;
    let redacted = redact_url(admin_url);
    let options = crate::store::postgres::connect_options(admin_url)?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {redacted} as the admin role: {}",
            scrub(&e.to_string(), admin_url)
        )
    })?;
    tracing::info!("applying migrations to {redacted}");
    sqlx::migrate!("../sql").run(&mut conn).await?;

    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
        .bind(writer_role)
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        exists,
        "the writer role {writer_role:?} does not exist. A DBA creates it once, with the password from the \
         environment, e.g.: psql -v pw=\"$HOURCI_WRITER_PASSWORD\" -c \"CREATE ROLE {writer_role} LOGIN PASSWORD :'pw'\" \
         then run migrate again"
    );
    let database: String = sqlx::query_scalar("SELECT pg_catalog.current_database()")
        .fetch_one(&mut conn)
        .await?;
    take_create_rights_from_public(&mut conn, &database, writer_role).await?;
    check_writer_cannot_create(&mut conn, &database, writer_role).await?;

    let role = quote_ident(writer_role);
    let mut tx = conn.begin().await?;
    sqlx::query(&format!(
        "GRANT CONNECT ON DATABASE {} TO {role}",
        quote_ident(&database)
    ))
    .execute(&mut *tx)
    .await?;
    // The original set-up granted INSERT on the table; the functions make that unnecessary.
    sqlx::query(&format!(
        "REVOKE ALL ON TABLE public.loggingtable, public.loggingtable_test FROM {role}"
    ))
    .execute(&mut *tx)
    .await?;
    for function in WRITER_FUNCTIONS {
        sqlx::query(&format!("GRANT EXECUTE ON FUNCTION public.{function} TO {role}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!("writer role {writer_role} may connect to {database} and execute the write functions");
    Ok(())
}

/// `migrate --reader-role NAME`: give an existing read-only login role (the insights
/// service's, an analyst's) CONNECT on the database and SELECT on the two tables and
/// on the deletion log (sql/0006),
/// after taking every other table right from it. It must not be the writer: the
/// public write service never holds read rights.
pub async fn grant_reader(admin_url: &str, reader_role: &str, writer_role: &str) -> anyhow::Result<()> {
    check_role_name(reader_role)?;
    anyhow::ensure!(
        reader_role != writer_role,
        "--reader-role must not be the writer role {writer_role:?}: the writer never reads"
    );
    let options = crate::store::postgres::connect_options(admin_url)?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {} as the admin role: {}",
            redact_url(admin_url),
            scrub(&e.to_string(), admin_url)
        )
    })?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
        .bind(reader_role)
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        exists,
        "the reader role {reader_role:?} does not exist. A DBA creates it once, e.g.: psql -v pw=\"$HOURCI_READER_PASSWORD\" \
         -c \"CREATE ROLE {reader_role} LOGIN PASSWORD :'pw'\" then run migrate again"
    );
    let database: String = sqlx::query_scalar("SELECT pg_catalog.current_database()")
        .fetch_one(&mut conn)
        .await?;
    // A superuser or a member of the owner could write whatever is granted here.
    let (superuser, owner_member): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, pg_catalog.pg_has_role(r.oid, d.datdba, 'USAGE')
         FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
         WHERE r.rolname = $1 AND d.datname = pg_catalog.current_database()",
    )
    .bind(reader_role)
    .fetch_one(&mut conn)
    .await?;
    anyhow::ensure!(
        !superuser && !owner_member,
        "the reader role {reader_role:?} is a superuser or a member of the owner of {database}, so it could write: \
         use a plain login role (CREATE ROLE {reader_role} LOGIN ...)"
    );
    let role = quote_ident(reader_role);
    let mut tx = conn.begin().await?;
    for statement in [
        format!("GRANT CONNECT ON DATABASE {} TO {role}", quote_ident(&database)),
        format!("REVOKE ALL ON TABLE public.loggingtable, public.loggingtable_test FROM {role}"),
        format!("GRANT SELECT ON TABLE public.loggingtable, public.loggingtable_test TO {role}"),
        // sql/0006: the insights service reads it to notice deletions (counts and times only).
        format!("REVOKE ALL ON TABLE public.deletion_log FROM {role}"),
        format!("GRANT SELECT ON TABLE public.deletion_log TO {role}"),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!(
        "reader role {reader_role} may connect to {database} and SELECT from the two tables and the deletion log"
    );
    Ok(())
}

/// Revoke CREATE on schema `public` and TEMPORARY on the database from PUBLIC, and
/// from the writer role itself, saying what changed. PostgreSQL 15 no longer grants
/// the first by default, but databases created by (or upgraded from) older versions
/// still have it; every version grants the second.
async fn take_create_rights_from_public(
    conn: &mut PgConnection,
    database: &str,
    writer_role: &str,
) -> anyhow::Result<()> {
    let db = quote_ident(database);
    let role = quote_ident(writer_role);
    let steps: [(&str, String, String); 4] = [
        (
            "SELECT pg_catalog.has_schema_privilege('public', 'public', 'CREATE')",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_string(),
            "revoked CREATE on schema public from PUBLIC".to_string(),
        ),
        (
            "SELECT pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'TEMPORARY')",
            format!("REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC"),
            format!("revoked TEMPORARY on database {database} from PUBLIC"),
        ),
        (
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a \
             WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee = $1::pg_catalog.regrole)",
            format!("REVOKE CREATE ON SCHEMA public FROM {role}"),
            format!("revoked CREATE on schema public from {writer_role}"),
        ),
        (
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a \
             WHERE d.datname = pg_catalog.current_database() AND a.privilege_type = 'TEMPORARY' \
             AND a.grantee = $1::pg_catalog.regrole)",
            format!("REVOKE TEMPORARY ON DATABASE {db} FROM {role}"),
            format!("revoked TEMPORARY on database {database} from {writer_role}"),
        ),
    ];
    for (held, revoke, said) in steps {
        let query = sqlx::query_scalar::<_, bool>(held);
        let query = if held.contains("$1") {
            query.bind(quote_ident(writer_role))
        } else {
            query
        };
        if query.fetch_one(&mut *conn).await? {
            // Only the owner may revoke; if that is not us, the check that follows says what to do.
            match sqlx::query(&revoke).execute(&mut *conn).await {
                Ok(_) => tracing::info!("{said}"),
                Err(e) => tracing::warn!("could not run {revoke:?}: {e}"),
            }
        }
    }
    Ok(())
}

/// Refuse to finish while the writer role owns objects or can create any: then it
/// could shadow what a SECURITY DEFINER function uses, or change what it owns.
async fn check_writer_cannot_create(conn: &mut PgConnection, database: &str, writer_role: &str) -> anyhow::Result<()> {
    let role = quote_ident(writer_role);
    let mut problems: Vec<String> = Vec::new();
    let (superuser, owner_member): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, pg_catalog.pg_has_role(r.oid, d.datdba, 'USAGE')
         FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
         WHERE r.rolname = $1 AND d.datname = pg_catalog.current_database()",
    )
    .bind(writer_role)
    .fetch_one(&mut *conn)
    .await?;
    if superuser {
        problems.push(format!("{writer_role} is a superuser (ALTER ROLE {role} NOSUPERUSER)"));
    }
    if owner_member {
        problems.push(format!(
            "{writer_role} owns the database {database} or is a member of its owner"
        ));
    }
    let owned: i64 = sqlx::query_scalar(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_shdepend
         WHERE refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND refobjid = $1::pg_catalog.regrole
           AND deptype = 'o'
           AND dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())",
    )
    .bind(&role)
    .fetch_one(&mut *conn)
    .await?;
    if owned > 0 {
        problems.push(format!(
            "{writer_role} owns {owned} object(s) in {database} (REASSIGN OWNED BY {role} TO <admin role>, run in {database})"
        ));
    }
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_namespace n
         WHERE pg_catalog.has_schema_privilege($1, n.oid, 'CREATE') ORDER BY 1",
    )
    .bind(writer_role)
    .fetch_all(&mut *conn)
    .await?;
    for schema in schemas {
        problems.push(format!(
            "{writer_role} may CREATE in schema {schema} (as the schema's owner: REVOKE CREATE ON SCHEMA {0} FROM PUBLIC, {role}; \
             or, for public in a database from PostgreSQL 14 or older, ALTER SCHEMA {0} OWNER TO pg_database_owner and migrate revokes it)",
            quote_ident(&schema)
        ));
    }
    let temporary: bool =
        sqlx::query_scalar("SELECT pg_catalog.has_database_privilege($1, pg_catalog.current_database(), 'TEMPORARY')")
            .bind(writer_role)
            .fetch_one(&mut *conn)
            .await?;
    if temporary {
        problems.push(format!(
            "{writer_role} may create TEMPORARY objects in {database} (through a role it belongs to: REVOKE TEMPORARY ON DATABASE {} FROM that role)",
            quote_ident(database)
        ));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "refusing to finish: the writer role could create or own objects, and so run its own code inside the write functions: {}. \
         Fix that as the owner (or a superuser), then run migrate again",
        problems.join("; ")
    );
    Ok(())
}

/// Remove the URL (and so its password) from an error text, in case a driver echoes it.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, &redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_strict() {
        assert!(check_role_name("hourofciuser").is_ok());
        assert!(check_role_name("writer_2").is_ok());
        for bad in [
            "",
            "Writer",
            "a-b",
            "x\"; DROP ROLE postgres; --",
            "1abc",
            &"a".repeat(64),
        ] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
        assert_eq!(quote_ident("my\"db"), "\"my\"\"db\"");
    }
}
