//! Embedded SQLite store: the zero-setup default (`hourofci-log.db` in the working
//! directory). Same columns and the same verdicts as PostgreSQL's `log_events_v4`
//! (written, duplicate, conflict); one transaction per group.
//!
//! The file holds learners' answers, so it is created `0600` (SQLite gives its `-wal`
//! and `-shm` files the database file's mode).

use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

/// What PostgreSQL's sql/0004 and 0005 do: the `learner_id` column (files made before
/// it get it, NULL in old rows) and the one index the read side uses.
async fn upgrade(pool: &SqlitePool) -> Result<(), StoreError> {
    for table in ["loggingtable", "loggingtable_test"] {
        let has: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?) WHERE name = 'learner_id'")
            .bind(table)
            .fetch_one(pool)
            .await?;
        if has == 0 {
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN learner_id TEXT")).execute(pool).await?;
        }
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS {table}_question_idx ON {table} (lesson, lesson_level, question, id)"
        ))
        .execute(pool)
        .await?;
        // As PostgreSQL's sql/0005: the learner and received_at indexes served only the
        // maintenance commands and cost every write; files made in between lose them.
        for suffix in ["learner_idx", "received_idx"] {
            sqlx::query(&format!("DROP INDEX IF EXISTS {table}_{suffix}")).execute(pool).await?;
        }
    }
    Ok(())
}

/// The stored content of an id in `table`, to compare a repeated id with.
fn stored_sql(table: Table) -> &'static str {
    match table {
        Table::Production => "SELECT user_agent, lesson, lesson_level, question, answer FROM loggingtable WHERE event_id = ?",
        Table::Test => "SELECT user_agent, lesson, lesson_level, question, answer FROM loggingtable_test WHERE event_id = ?",
    }
}

fn other(table: Table) -> Table {
    match table {
        Table::Production => Table::Test,
        Table::Test => Table::Production,
    }
}

type Stored = (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

fn insert_sql(table: Table) -> &'static str {
    match table {
        Table::Production => {
            "INSERT INTO loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
        }
        Table::Test => {
            "INSERT INTO loggingtable_test (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, learner_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
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
        create_private(path)?;
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
        upgrade(&pool).await?;
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
            let id = e.id.map(|id| id.to_string());
            if let Some(id) = &id {
                // Stored in the other table: a conflict, whatever the content.
                let elsewhere: Option<Stored> = sqlx::query_as(stored_sql(other(e.table))).bind(id).fetch_optional(&mut *tx).await?;
                if elsewhere.is_some() {
                    outcomes.push(Outcome::Conflict);
                    continue;
                }
            }
            let done = sqlx::query(insert_sql(e.table))
                .bind(&e.user_agent)
                .bind(&date)
                .bind(&time)
                .bind(&e.lesson)
                .bind(&e.level)
                .bind(&e.question)
                .bind(&e.answer)
                .bind(&id)
                .bind(e.client_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
                .bind(e.learner_id.map(|l| l.to_string()))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                outcomes.push(Outcome::Written);
                continue;
            }
            let stored: Option<Stored> = sqlx::query_as(stored_sql(e.table)).bind(&id).fetch_optional(&mut *tx).await?;
            let same = stored.is_some_and(|(ua, lesson, level, question, answer)| {
                ua.as_deref() == Some(e.user_agent.as_str())
                    && lesson.as_deref() == Some(e.lesson.as_str())
                    && level.as_deref() == Some(e.level.as_str())
                    && question.as_deref() == Some(e.question.as_str())
                    && answer.as_deref() == Some(e.answer.as_str())
            });
            outcomes.push(if same { Outcome::Duplicate } else { Outcome::Conflict });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    pub async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Create the database file readable by its owner only, before SQLite creates it with
/// the umask's mode. An existing file readable by others is reported, not changed.
fn create_private(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "the SQLite file {} (and its -wal/-shm) can be read by other users (mode {:o}); chmod 600 them",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Other(format!("cannot create the SQLite file {}: {e}", path.display()))),
    }
}
