//! Embedded SQLite store: the zero-setup default (`hourofci-log.db` in the working
//! directory). Same columns and the same verdicts as PostgreSQL's `log_events_v5`
//! (written, duplicate, conflict); one transaction per group. The schema is
//! `collector/sqlite/` (migrations), the written columns [`Column::WRITTEN`].
//!
//! The file holds learners' answers, so it is created `0600` (SQLite gives its `-wal`
//! and `-shm` files the database file's mode).

use std::borrow::Cow;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use super::{Outcome, StoreError};
use crate::event::{Column, ColumnValue, NewEvent, Table};

/// The SQLite schema: `collector/sqlite/`, as `sql/` is PostgreSQL's.
static MIGRATOR: Migrator = sqlx::migrate!("./sqlite");

/// One-time bridge for files made before `collector/sqlite/` existed (they have the
/// tables but no `_sqlx_migrations`): those made before learner ids lack the column,
/// and SQLite has no `ADD COLUMN IF NOT EXISTS` for the first migration to say so.
/// A no-op on every other file (missing tables are the migration's to create).
async fn add_learner_id_to_legacy_file(pool: &SqlitePool) -> Result<(), StoreError> {
    for table in [Table::Production, Table::Test].map(Table::sql_name) {
        let (exists, has_learner): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1),
                    (SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'learner_id')",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        if exists == 1 && has_learner == 0 {
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN learner_id TEXT"))
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// How SQLite holds a written value: TEXT (UUIDs canonical, instants RFC 3339 UTC with
/// microseconds), NULL for an absent one.
fn sqlite_text(value: ColumnValue<'_>) -> Option<Cow<'_, str>> {
    match value {
        ColumnValue::Text(text) => Some(Cow::Borrowed(text)),
        ColumnValue::Uuid(id) => id.map(|id| Cow::Owned(id.to_string())),
        ColumnValue::Instant(t) => t.map(|t| Cow::Owned(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))),
    }
}

/// The two statements per table, built once from [`Column::WRITTEN`].
struct Statements {
    /// INSERT of the write instant and every written column, keeping the first row of an id.
    insert: String,
    /// The stored content of an id, to compare a repeated id with.
    stored: String,
}

impl Statements {
    fn new(table: Table) -> Self {
        let written: Vec<&str> = Column::WRITTEN.iter().map(|c| c.name).collect();
        let content: Vec<&str> = Column::WRITTEN
            .iter()
            .filter(|c| c.is_content)
            .map(|c| c.name)
            .collect();
        let table = table.sql_name();
        Statements {
            insert: format!(
                "INSERT INTO {table} (date_log, time_log, {}) VALUES (?, ?{}) ON CONFLICT (event_id) DO NOTHING",
                written.join(", "),
                ", ?".repeat(written.len())
            ),
            stored: format!("SELECT {} FROM {table} WHERE event_id = ?", content.join(", ")),
        }
    }
}

pub struct SqliteStore {
    pool: SqlitePool,
    production: Statements,
    test: Statements,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and migrate it. One connection:
    /// SQLite has a single writer anyway. `synchronous=FULL` so a commit survives power loss.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        add_learner_id_to_legacy_file(&pool).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("cannot migrate the SQLite file {}: {e}", path.display())))?;
        Ok(SqliteStore {
            pool,
            production: Statements::new(Table::Production),
            test: Statements::new(Table::Test),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn statements(&self, table: Table) -> &Statements {
        match table {
            Table::Production => &self.production,
            Table::Test => &self.test,
        }
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
                let other = if e.table.is_test() {
                    Table::Production
                } else {
                    Table::Test
                };
                let elsewhere = sqlx::query(&self.statements(other).stored)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if elsewhere.is_some() {
                    outcomes.push(Outcome::Conflict);
                    continue;
                }
            }
            let statements = self.statements(e.table);
            let mut insert = sqlx::query(&statements.insert).bind(&date).bind(&time);
            for column in Column::WRITTEN {
                insert = insert.bind(sqlite_text((column.value)(e)));
            }
            if insert.execute(&mut *tx).await?.rows_affected() == 1 {
                outcomes.push(Outcome::Written);
                continue;
            }
            let stored = sqlx::query(&statements.stored)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
            let same = match stored {
                None => false,
                Some(row) => {
                    let content = Column::WRITTEN.into_iter().filter(|c| c.is_content);
                    let mut same = true;
                    for (i, column) in content.enumerate() {
                        let held: Option<String> = row.try_get(i)?;
                        same &= held.as_deref() == sqlite_text((column.value)(e)).as_deref();
                    }
                    same
                }
            };
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
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
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
        Err(e) => Err(StoreError::Other(format!(
            "cannot create the SQLite file {}: {e}",
            path.display()
        ))),
    }
}
