//! `hourofci-collector migrate`: apply `sql/` as the admin role, then give the writer
//! role exactly CONNECT on the database and EXECUTE on the four write functions.
//!
//! Role and database names cannot be bind parameters, so the role name is checked
//! against a strict pattern and both names are quoted as identifiers.

use sqlx::{Connection, PgConnection};

use crate::config::redact_url;

/// The four functions the writer may call (signatures as PostgreSQL spells them).
const WRITER_FUNCTIONS: &[&str] = &[
    "logging(text, date, time, varchar, varchar, varchar, text)",
    "logging2(text, date, time, varchar, varchar, varchar, text)",
    "log_event(boolean, uuid, timestamptz, text, text, text, text, text)",
    "log_events(boolean, uuid[], timestamptz[], text[], text[], text[], text[], text[])",
];

/// Accept only plain lower-case identifiers (`[a-z_][a-z0-9_]*`, at most 63 bytes).
pub fn check_role_name(role: &str) -> anyhow::Result<()> {
    let ok = !role.is_empty()
        && role.len() <= 63
        && role.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && role.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    anyhow::ensure!(ok, "writer role {role:?} must be a lower-case identifier: letters a-z, digits, _ (at most 63)");
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
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {redacted} as the admin role: {}", scrub(&e.to_string(), admin_url)))?;
    tracing::info!("applying migrations to {redacted}");
    sqlx::migrate!("../sql").run(&mut conn).await?;

    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(writer_role)
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        exists,
        "the writer role {writer_role:?} does not exist. A DBA creates it once, with the password from the \
         environment, e.g.: psql -v pw=\"$HOURCI_WRITER_PASSWORD\" -c \"CREATE ROLE {writer_role} LOGIN PASSWORD :'pw'\" \
         then run migrate again"
    );
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await?;
    let role = quote_ident(writer_role);
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("GRANT CONNECT ON DATABASE {} TO {role}", quote_ident(&database))).execute(&mut *tx).await?;
    // The original set-up granted INSERT on the table; the functions make that unnecessary.
    sqlx::query(&format!("REVOKE ALL ON TABLE public.loggingtable, public.loggingtable_test FROM {role}"))
        .execute(&mut *tx)
        .await?;
    for function in WRITER_FUNCTIONS {
        sqlx::query(&format!("GRANT EXECUTE ON FUNCTION public.{function} TO {role}")).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!("writer role {writer_role} may connect to {database} and execute the write functions");
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
        for bad in ["", "Writer", "a-b", "x\"; DROP ROLE postgres; --", "1abc", &"a".repeat(64)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
        assert_eq!(quote_ident("my\"db"), "\"my\"\"db\"");
    }
}
