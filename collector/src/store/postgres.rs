//! PostgreSQL store. Writes go ONLY through `log_events` (see `sql/`), so the writer
//! role needs no table privileges. One `log_events` call per table per group: a group
//! for one table is a single statement in its own implicit transaction; a group that
//! mixes production and test events is two statements in one explicit transaction.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres};
use uuid::Uuid;

use super::{outcomes_from_new_ids, Outcome, StoreError};
use crate::event::{NewEvent, Table};

const LOG_EVENTS: &str = "SELECT * FROM log_events($1, $2, $3, $4, $5, $6, $7, $8)";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A lazily connecting pool: the collector starts even while the database is down
    /// and (re)connects on demand. Each checkout is pinged first, so connections broken
    /// by a database restart are replaced instead of failing a group.
    pub fn connect_lazy(url: &str, pool_size: u32, timeout: Duration) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("hourofci-collector");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(timeout)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn write_group(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        let (prod, test): (Vec<usize>, Vec<usize>) = (0..events.len()).partition(|&i| events[i].table == Table::Production);
        let mut outcomes = vec![Outcome::Duplicate; events.len()];
        match (prod.is_empty(), test.is_empty()) {
            (true, true) => {}
            (false, true) => fill(&mut outcomes, &prod, log_events(&self.pool, events, &prod, false).await?),
            (true, false) => fill(&mut outcomes, &test, log_events(&self.pool, events, &test, true).await?),
            (false, false) => {
                let mut tx = self.pool.begin().await?;
                let p = log_events(&mut *tx, events, &prod, false).await?;
                let t = log_events(&mut *tx, events, &test, true).await?;
                tx.commit().await?;
                fill(&mut outcomes, &prod, p);
                fill(&mut outcomes, &test, t);
            }
        }
        Ok(outcomes)
    }

    pub async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn fill(outcomes: &mut [Outcome], idx: &[usize], got: Vec<Outcome>) {
    for (&i, o) in idx.iter().zip(got) {
        outcomes[i] = o;
    }
}

/// One `log_events` call for the events at `idx` (all of the same table).
async fn log_events<'e, E>(db: E, events: &[NewEvent], idx: &[usize], test: bool) -> Result<Vec<Outcome>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let pick = |f: fn(&NewEvent) -> &str| idx.iter().map(|&i| f(&events[i])).collect::<Vec<&str>>();
    let ids: Vec<Option<Uuid>> = idx.iter().map(|&i| events[i].id).collect();
    let client_times: Vec<Option<DateTime<Utc>>> = idx.iter().map(|&i| events[i].client_time).collect();
    let new_ids: Vec<Option<Uuid>> = sqlx::query_scalar(LOG_EVENTS)
        .bind(test)
        .bind(&ids)
        .bind(&client_times)
        .bind(pick(|e| &e.user_agent))
        .bind(pick(|e| &e.lesson))
        .bind(pick(|e| &e.level))
        .bind(pick(|e| &e.question))
        .bind(pick(|e| &e.answer))
        .fetch_all(db)
        .await?;
    Ok(outcomes_from_new_ids(&ids, &new_ids))
}
