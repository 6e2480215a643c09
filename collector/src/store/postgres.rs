//! PostgreSQL store. Writes go ONLY through `log_events_v5` (sql/0008) (see `sql/`), so the
//! writer role needs no table privileges. One call per group, whatever tables its events
//! go to: a single statement in its own implicit transaction, answering one array with a
//! verdict per event (written, duplicate, conflict).

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;

use super::{Outcome, StoreError};
use crate::config::PoolMode;
use crate::event::{Column, ColumnValue, NewEvent, Table};

/// The write call, its arrays named (`p_tests`, then one per [`Column::WRITTEN`]), so a
/// column list that drifted from the function fails by name, not by position.
static LOG_EVENTS: LazyLock<String> = LazyLock::new(|| {
    let arguments: Vec<String> = Column::WRITTEN
        .iter()
        .enumerate()
        .map(|(i, c)| format!(", {} => ${}", c.pg_argument, i + 2))
        .collect();
    format!("SELECT public.log_events_v5(p_tests => $1{})", arguments.concat())
});

/// Connection options from a URL, without echoing the URL (or its password) in an
/// error or a log line.
///
/// sqlx logs the value of every query parameter it does not know, so secret-looking
/// ones it would ignore anyway (libpq's `sslpassword`, ...) are dropped first; only
/// their names are logged.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let invalid = || {
        StoreError::Other(format!(
            "the PostgreSQL URL {} is not valid; percent-encode special characters in the password: / as %2F, @ as %40, : as %3A",
            crate::config::redact_url(url)
        ))
    };
    let mut parsed = url::Url::parse(url).map_err(|_| invalid())?;
    let is_secret = |key: &str| key != "password" && key.to_ascii_lowercase().contains("pass");
    let dropped: Vec<String> = parsed
        .query_pairs()
        .filter(|(k, _)| is_secret(k))
        .map(|(k, _)| k.into_owned())
        .collect();
    if !dropped.is_empty() {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| !is_secret(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        tracing::warn!(
            "ignoring the database URL parameter(s) {} (the collector does not use them)",
            dropped.join(", ")
        );
    }
    PgConnectOptions::from_url(&parsed).map_err(|_| invalid())
}

pub struct PgStore {
    pool: PgPool,
    mode: PoolMode,
}

impl PgStore {
    /// A lazily connecting pool: the collector starts even while the database is down
    /// and (re)connects on demand. A connection that sat idle for [`PING_IDLE_AFTER`] is
    /// pinged before use, so one broken by a database restart in a quiet moment is
    /// replaced instead of failing a group. Under load connections are never idle that
    /// long, and a ping on every checkout would cost each group a round trip; a
    /// connection that broke anyway fails the write, which [`PgStore::write_group`]
    /// repeats once on another connection.
    ///
    /// Behind PgBouncer in transaction pooling ([`PoolMode::Transaction`]) nothing may
    /// outlive a transaction on a server connection: no statement cache, and no
    /// `extra_float_digits` startup parameter (PgBouncer refuses parameters it does not
    /// track unless told to ignore them; the collector sends no floats). The idle
    /// connection's ping is a bare Sync, which PgBouncer answers in every mode.
    pub fn connect_lazy(url: &str, pool_size: u32, timeout: Duration, mode: PoolMode) -> Result<Self, StoreError> {
        let mut options = connect_options(url)?.application_name("hourofci-collector");
        if mode == PoolMode::Transaction {
            options = options.statement_cache_capacity(0).extra_float_digits(None);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Ok(PgStore { pool, mode })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Commit `events` in one call of the write function; one outcome per event.
    ///
    /// When the connection turns out to be broken (the database restarted, a proxy
    /// dropped it), the call is made once more on another connection. That is safe
    /// whether or not the first attempt was committed: event ids are stored once, so a
    /// repeated event is answered `duplicate` (stored) and nothing is written twice.
    pub async fn write_group(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        match self.write_group_once(events).await {
            Err(StoreError::Database(e)) if connection_lost(&e) => {
                tracing::info!("a database connection was lost ({e}); writing the group again on another");
                self.write_group_once(events).await
            }
            result => result,
        }
    }

    async fn write_group_once(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let tests: Vec<bool> = events.iter().map(|e| e.table == Table::Test).collect();
        let mut call = sqlx::query_scalar(LOG_EVENTS.as_str()).bind(tests);
        for column in Column::WRITTEN {
            // One array per column; a column's values all have one type, so one is filled.
            let (mut texts, mut ids, mut instants) = (Vec::new(), Vec::new(), Vec::new());
            for e in events {
                match (column.value)(e) {
                    ColumnValue::Text(text) => texts.push(text),
                    ColumnValue::Uuid(id) => ids.push(id),
                    ColumnValue::Instant(t) => instants.push(t),
                }
            }
            call = if !texts.is_empty() {
                call.bind(texts)
            } else if !ids.is_empty() {
                call.bind(ids)
            } else {
                call.bind(instants)
            };
        }
        let verdicts: Vec<String> = match self.mode {
            PoolMode::Session => call.fetch_one(&self.pool).await?,
            // sqlx sends Parse+Describe, Sync, then Bind+Execute, Sync. Outside a
            // transaction PgBouncer may hand each Sync-ended step a different server
            // connection, so the Bind would meet another client's statement (or none).
            // An unnamed statement inside BEGIN/COMMIT stays on one server connection
            // and leaves nothing behind on it.
            PoolMode::Transaction => {
                let mut tx = self.pool.begin().await?;
                let verdicts = call.persistent(false).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                verdicts
            }
        };
        outcomes_from_verdicts(events.len(), &verdicts)
    }

    /// One round trip in the simple query protocol (no prepared statement, so it works
    /// through PgBouncer in every pool mode).
    pub async fn health(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Idle time after which a pooled connection is pinged before use.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Whether `e` says the connection itself failed (so the same call may succeed on
/// another): an I/O error, or the server ending the session (SQLSTATE class 08,
/// connection exception; 57P01-57P03, shutdown or not accepting connections yet).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// `log_events_v5`'s array (one status word per event, in order) -> one outcome per event.
fn outcomes_from_verdicts(n: usize, verdicts: &[String]) -> Result<Vec<Outcome>, StoreError> {
    if verdicts.len() != n {
        return Err(StoreError::Other(format!(
            "log_events_v5 answered {} verdicts for {n} events",
            verdicts.len()
        )));
    }
    verdicts
        .iter()
        .map(|status| match status.as_str() {
            "written" => Ok(Outcome::Written),
            "duplicate" => Ok(Outcome::Duplicate),
            "conflict" => Ok(Outcome::Conflict),
            other => Err(StoreError::Other(format!(
                "log_events_v5 answered the unknown status {other:?}"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_by_position_and_must_cover_every_event() {
        let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let got = outcomes_from_verdicts(3, &v(&["written", "conflict", "duplicate"])).unwrap();
        assert_eq!(got, [Outcome::Written, Outcome::Conflict, Outcome::Duplicate]);
        assert!(
            outcomes_from_verdicts(2, &v(&["written"])).is_err(),
            "one event without verdict"
        );
        assert!(outcomes_from_verdicts(1, &v(&["written", "written"])).is_err());
        assert!(outcomes_from_verdicts(1, &v(&[])).is_err());
        assert!(outcomes_from_verdicts(1, &v(&["maybe"])).is_err());
    }
}
