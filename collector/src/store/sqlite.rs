//! Embedded SQLite store: the zero-setup default (`hourofci-log.db` in the working
//! directory). Same columns and same dedupe rule as PostgreSQL; one transaction per group.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{Outcome, StoreError};
use crate::event::{NewEvent, Table};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS loggingtable (
        user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
        question TEXT, answer TEXT,
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT UNIQUE,
        client_time TEXT,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    "CREATE TABLE IF NOT EXISTS loggingtable_test (
        user_agent TEXT, date_log TEXT, time_log TEXT, lesson TEXT, lesson_level TEXT,
        question TEXT, answer TEXT,
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT UNIQUE,
        client_time TEXT,
        received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
];

fn insert_sql(table: Table) -> &'static str {
    match table {
        Table::Production => {
            "INSERT INTO loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
        }
        Table::Test => {
            "INSERT INTO loggingtable_test (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
        }
    }
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and its tables. One connection:
    /// SQLite has a single writer anyway. `synchronous=FULL` so a commit survives power loss.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn write_group(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        // One instant for the whole group, as PostgreSQL's now() is per transaction.
        let now = Utc::now();
        let date = now.format("%Y-%m-%d").to_string();
        let time = now.format("%H:%M:%S%.6f").to_string();
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for e in events {
            let done = sqlx::query(insert_sql(e.table))
                .bind(&e.user_agent)
                .bind(&date)
                .bind(&time)
                .bind(&e.lesson)
                .bind(&e.level)
                .bind(&e.question)
                .bind(&e.answer)
                .bind(e.id.map(|id| id.to_string()))
                .bind(e.client_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
                .execute(&mut *tx)
                .await?;
            outcomes.push(if done.rows_affected() == 1 { Outcome::Written } else { Outcome::Duplicate });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    pub async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
