//! Where events end up: PostgreSQL (through the `sql/` functions only) or the embedded
//! SQLite file. Both take a whole group of events per call, one transaction per group.

use crate::event::NewEvent;

pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The stores answer each event with its domain [`Outcome`] (re-exported here for the
/// crates that drive a store directly).
pub use crate::event::Outcome;

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
}

impl StoreError {
    /// When PostgreSQL refused the VALUES it was given (SQLSTATE class 22, data
    /// exception, or 23, integrity constraint violation), the rule to report for the
    /// event at fault; `None` for everything else (connection lost, timeout,
    /// serialization failure, ...), which is an outage: 503 and retry.
    pub fn rejected_rule(&self) -> Option<&'static str> {
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return None;
        };
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
