//! Where events end up: PostgreSQL (through the `sql/` functions only) or the embedded
//! SQLite file. Both take a whole group of events per call, one transaction per group.

use std::collections::HashSet;

use uuid::Uuid;

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
    /// A row with this event id was already stored (or came earlier in the same group).
    Duplicate,
}

/// A group could not be committed. Every request of that group gets 503.
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

/// Turn the ids `log_events` reported as new into per-event outcomes, in order.
///
/// An event without id is always written. An id is written at its first occurrence
/// when the database reported it new; every other occurrence is a duplicate.
pub fn outcomes_from_new_ids(ids: &[Option<Uuid>], new_ids: &[Option<Uuid>]) -> Vec<Outcome> {
    let mut fresh: HashSet<Uuid> = new_ids.iter().flatten().copied().collect();
    ids.iter()
        .map(|id| match id {
            None => Outcome::Written,
            Some(id) if fresh.remove(id) => Outcome::Written,
            Some(_) => Outcome::Duplicate,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_of_a_new_id_is_written_the_rest_duplicate() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let ids = [Some(a), None, Some(b), Some(a), None];
        let got = outcomes_from_new_ids(&ids, &[Some(a), None, None]);
        use Outcome::*;
        assert_eq!(got, vec![Written, Written, Duplicate, Duplicate, Written]);
    }
}
