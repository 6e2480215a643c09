//! Where events end up: PostgreSQL (through the `sql/` functions only) or the embedded
//! SQLite file. Both take a whole group of events per call, one transaction per group.

use crate::event::NewEvent;

pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What happened to one event of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new row was committed.
    Written,
    /// This event id is already stored (or came earlier in the same group) with the
    /// same content: a retry. Nothing changed.
    Duplicate,
    /// This event id is already stored with different content (user agent, lesson,
    /// level, question, answer or table). The stored row is unchanged. Final (409).
    Conflict,
    /// The database refused this event's own values (found by isolating it from its
    /// group); the rule says why. Final: answered 422 `invalid`.
    Rejected(&'static str),
}

impl Outcome {
    /// The status word in a `/batch` result (`log_events_v2` answers the first three).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict => "conflict",
            Outcome::Rejected(_) => "invalid",
        }
    }
}

/// A group could not be committed. Every request of that group gets 503, unless
/// [`StoreError::rejected_rule`] says the event values themselves were at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Other(String),
}

/// The configured store.
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Commit `events` in one transaction; outcomes in the same order.
    pub async fn write_group(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        match self {
            Store::Postgres(s) => s.write_group(events).await,
            Store::Sqlite(s) => s.write_group(events).await,
        }
    }

    /// Ok when the database answers a trivial query.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.health().await,
            Store::Sqlite(s) => s.health().await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }
}

impl StoreError {
    /// When PostgreSQL refused the VALUES it was given (SQLSTATE class 22, data
    /// exception, or 23, integrity constraint violation), the rule to report for the
    /// event at fault; `None` for everything else (connection lost, timeout,
    /// serialization failure, ...), which is an outage: 503 and retry.
    pub fn rejected_rule(&self) -> Option<&'static str> {
        let StoreError::Database(sqlx::Error::Database(db)) = self else { return None };
        let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
        Some(match pg.code() {
            // untranslatable_character, character_not_in_repertoire
            "22P05" | "22021" => "the database cannot store this text in its encoding",
            // string_data_right_truncation
            "22001" => "a value is longer than its database column allows",
            c if c.starts_with("22") => "the database refused a value of this event",
            c if c.starts_with("23") => "the database refused this event (constraint violated)",
            _ => return None,
        })
    }
}

