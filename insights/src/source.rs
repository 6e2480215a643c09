//! Where the answers are read from: PostgreSQL (as the reader role, or the admin for
//! `forget`/`prune`) or the collector's embedded SQLite file; and the one query every
//! reader uses, a page of rows in id order with filters (keyset paging, so memory
//! stays constant however many rows match).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use hourofci_collector::config::redact_url;
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Postgres, Sqlite, Transaction};

pub use hourofci_collector::event::Table;

/// The table's name in both stores.
pub fn table_name(table: Table) -> &'static str {
    match table {
        Table::Production => "loggingtable",
        Table::Test => "loggingtable_test",
    }
}

/// `production` or `test`, as the command line and the pages spell it.
pub fn parse_table(text: &str) -> Result<Table, String> {
    match text {
        "production" => Ok(Table::Production),
        "test" => Ok(Table::Test),
        _ => Err(format!("{text:?} is not a table: production or test")),
    }
}

/// The SQLite deletion log (PostgreSQL's is sql/0006): `forget` and `prune` create it
/// and note each deletion in it (table, kind, row count, time; never whose rows), so
/// that the insights service rebuilds its in-memory overview. The collector never
/// writes it.
pub const SQLITE_DELETION_LOG: &str = "CREATE TABLE IF NOT EXISTS deletion_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    table_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    row_count INTEGER)";

/// An open store.
#[derive(Clone)]
pub enum Source {
    Postgres(PgPool),
    /// The pool, and whether the file has the `learner_id` column yet (a file the
    /// collector has not opened since learner ids came lacks it: read as NULL).
    Sqlite(SqlitePool, bool),
}

/// Is this a PostgreSQL URL (else: a SQLite file path, optionally `sqlite://PATH`)?
pub fn is_postgres(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

fn sqlite_path(target: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(target.strip_prefix("sqlite://").unwrap_or(target));
    anyhow::ensure!(
        path.is_file(),
        "there is no SQLite file at {} (or give a postgres:// URL)",
        path.display()
    );
    Ok(path)
}

impl Source {
    /// Open for reading. SQLite connections are `query_only`: they cannot change the file.
    pub async fn open_read(target: &str, pool_size: u32) -> anyhow::Result<Source> {
        if is_postgres(target) {
            return Source::open_postgres(target, pool_size).await;
        }
        let path = sqlite_path(target)?;
        // `query_only` rather than a read-only open: a read-only connection cannot create
        // the `-shm` file a WAL database needs once the collector has closed it.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .pragma("query_only", "ON")
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await?;
        let has_learner: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pragma_table_info('loggingtable') WHERE name = 'learner_id'")
                .fetch_one(&pool)
                .await?;
        Ok(Source::Sqlite(pool, has_learner > 0))
    }

    /// Open to delete rows: PostgreSQL as given; a SQLite file read-write, brought to
    /// the collector's current schema first.
    pub async fn open_admin(target: &str) -> anyhow::Result<Source> {
        if is_postgres(target) {
            return Source::open_postgres(target, 1).await;
        }
        let path = sqlite_path(target)?;
        let store = hourofci_collector::store::SqliteStore::open(&path, std::time::Duration::from_secs(10)).await?;
        Ok(Source::Sqlite(store.pool().clone(), true))
    }

    async fn open_postgres(url: &str, pool_size: u32) -> anyhow::Result<Source> {
        let options = hourofci_collector::store::postgres::connect_options(url)?;
        let options = options.application_name("hourofci-insights");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to {}: {}",
                    redact_url(url),
                    e.to_string().replace(url, &redact_url(url))
                )
            })?;
        Ok(Source::Postgres(pool))
    }

    /// A read transaction: one consistent snapshot for a whole export or page.
    pub async fn read(&self) -> anyhow::Result<ReadTx> {
        Ok(match self {
            Source::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                ReadTx::Postgres(tx)
            }
            Source::Sqlite(pool, has_learner) => ReadTx::Sqlite(pool.begin().await?, *has_learner),
        })
    }
}

/// Which rows: one table, optional lesson/level/question, received between two instants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub table: Option<Table>,
    pub lesson: Option<String>,
    pub level: Option<String>,
    pub question: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Answers containing this text (case-sensitive substring).
    pub search: Option<String>,
    /// Leave out interaction events (`logInteraction` answers are JSON objects): they
    /// are listed, never charted as free text.
    pub charted_only: bool,
}

impl Filter {
    pub fn table(&self) -> Table {
        self.table.unwrap_or(Table::Production)
    }
}

/// `2026-11-28` (midnight UTC) or an RFC 3339 instant.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("{text:?} is neither a date (2026-11-28) nor an RFC 3339 instant (2026-11-28T07:00:00Z)"))
}

/// SQLite stores instants as text like `2026-11-28T07:31:02.123Z`; this form compares
/// correctly with it as text.
pub fn sqlite_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One stored answer, every column, as text (the same in both stores).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AnswerRow {
    pub id: i64,
    pub received_at: String,
    pub client_time: Option<String>,
    pub date_log: Option<String>,
    pub time_log: Option<String>,
    pub event_id: Option<String>,
    pub learner_id: Option<String>,
    pub user_agent: Option<String>,
    pub lesson: Option<String>,
    pub lesson_level: Option<String>,
    pub question: Option<String>,
    pub answer: Option<String>,
}

/// The column names, in export order.
pub const COLUMNS: &[&str] = &[
    "id",
    "received_at",
    "client_time",
    "date_log",
    "time_log",
    "event_id",
    "learner_id",
    "user_agent",
    "lesson",
    "lesson_level",
    "question",
    "answer",
];

/// Paging direction by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Oldest first, rows with id > cursor.
    Ascending,
    /// Newest first, rows with id < cursor.
    Descending,
}

/// An open read transaction.
pub enum ReadTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>, bool),
}

/// Parameters of a filtered query, in the order of their placeholders.
pub(crate) enum Param {
    Text(String),
    Int(i64),
    Instant(DateTime<Utc>),
}

/// `WHERE ...` text with `$n` (PostgreSQL) or `?n` (SQLite) placeholders, and the values.
pub(crate) fn conditions(filter: &Filter, postgres: bool, cursor: Option<(i64, Order)>) -> (String, Vec<Param>) {
    let mut sql = Vec::new();
    let mut params = Vec::new();
    let mut push = |clause: &str, p: Param| {
        params.push(p);
        let mark = if postgres {
            format!("${}", params.len())
        } else {
            format!("?{}", params.len())
        };
        sql.push(clause.replace('#', &mark));
    };
    if let Some((id, order)) = cursor {
        push(
            if order == Order::Ascending { "id > #" } else { "id < #" },
            Param::Int(id),
        );
    }
    if let Some(v) = &filter.lesson {
        push("lesson = #", Param::Text(v.clone()));
    }
    if let Some(v) = &filter.level {
        push("lesson_level = #", Param::Text(v.clone()));
    }
    if let Some(v) = &filter.question {
        push("question = #", Param::Text(v.clone()));
    }
    for (bound, clause) in [(filter.since, "received_at >= #"), (filter.until, "received_at < #")] {
        if let Some(t) = bound {
            push(
                clause,
                if postgres {
                    Param::Instant(t)
                } else {
                    Param::Text(sqlite_instant(t))
                },
            );
        }
    }
    if let Some(s) = &filter.search {
        // strpos/instr: no LIKE wildcards to escape.
        push(
            if postgres {
                "strpos(answer, #) > 0"
            } else {
                "instr(answer, #) > 0"
            },
            Param::Text(s.clone()),
        );
    }
    if filter.charted_only {
        sql.push("(answer IS NULL OR substr(answer, 1, 1) <> '{')".to_string());
    }
    let text = if sql.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", sql.join(" AND "))
    };
    (text, params)
}

const PG_COLUMNS: &str =
    "id, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS received_at,
    to_char(client_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS client_time,
    date_log::text AS date_log, time_log::text AS time_log, event_id::text AS event_id, learner_id::text AS learner_id,
    user_agent, lesson::text AS lesson, lesson_level::text AS lesson_level, question::text AS question, answer";

fn sqlite_columns(has_learner: bool) -> String {
    format!(
        "id, received_at, client_time, date_log, time_log, event_id, {} AS learner_id, user_agent, lesson, lesson_level, question, answer",
        if has_learner { "learner_id" } else { "NULL" }
    )
}

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Text(s) => q.bind(s),
                Param::Int(i) => q.bind(i),
                Param::Instant(t) => q.bind(t),
            };
        }
        q
    }};
}

macro_rules! bind_all_sqlite {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Text(s) => q.bind(s),
                Param::Int(i) => q.bind(i),
                Param::Instant(t) => q.bind(sqlite_instant(t)),
            };
        }
        q
    }};
}

impl ReadTx {
    /// Up to `limit` rows after (or before) `cursor`, in id order.
    pub async fn page(
        &mut self,
        filter: &Filter,
        cursor: Option<(i64, Order)>,
        limit: i64,
    ) -> anyhow::Result<Vec<AnswerRow>> {
        let order = cursor.map_or(Order::Ascending, |(_, o)| o);
        let direction = if order == Order::Ascending { "ASC" } else { "DESC" };
        let table = table_name(filter.table());
        Ok(match self {
            ReadTx::Postgres(tx) => {
                let (cond, params) = conditions(filter, true, cursor);
                let sql =
                    format!("SELECT {PG_COLUMNS} FROM public.{table} {cond} ORDER BY id {direction} LIMIT {limit}");
                bind_all!(sqlx::query_as::<_, AnswerRow>(&sql), params)
                    .fetch_all(&mut **tx)
                    .await?
            }
            ReadTx::Sqlite(tx, has_learner) => {
                let (cond, params) = conditions(filter, false, cursor);
                let sql = format!(
                    "SELECT {} FROM {table} {cond} ORDER BY id {direction} LIMIT {limit}",
                    sqlite_columns(*has_learner)
                );
                bind_all_sqlite!(sqlx::query_as::<_, AnswerRow>(&sql), params)
                    .fetch_all(&mut **tx)
                    .await?
            }
        })
    }

    /// The rows with these ids, newest first (primary-key lookups: a question page's
    /// list when the in-memory aggregate knows the ids).
    pub async fn rows_by_ids(&mut self, table: Table, ids: &[i64]) -> anyhow::Result<Vec<AnswerRow>> {
        let table = table_name(table);
        Ok(match self {
            ReadTx::Postgres(tx) => {
                let sql = format!("SELECT {PG_COLUMNS} FROM public.{table} WHERE id = ANY($1) ORDER BY id DESC");
                sqlx::query_as::<_, AnswerRow>(&sql)
                    .bind(ids)
                    .fetch_all(&mut **tx)
                    .await?
            }
            ReadTx::Sqlite(tx, has_learner) => {
                let sql = format!(
                    "SELECT {} FROM {table} WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id DESC",
                    sqlite_columns(*has_learner)
                );
                let ids = serde_json::to_string(ids)?;
                sqlx::query_as::<_, AnswerRow>(&sql)
                    .bind(ids)
                    .fetch_all(&mut **tx)
                    .await?
            }
        })
    }

    /// Rows of an aggregate query. `{table}` and `{where}` in the SQL are replaced by
    /// the filter's table and conditions; one text per store (their functions differ).
    pub async fn rows<T>(&mut self, filter: &Filter, pg_sql: &str, sqlite_sql: &str) -> anyhow::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        let table = table_name(filter.table());
        Ok(match self {
            ReadTx::Postgres(tx) => {
                let (cond, params) = conditions(filter, true, None);
                let sql = pg_sql
                    .replace("{table}", &format!("public.{table}"))
                    .replace("{where}", &cond);
                bind_all!(sqlx::query_as::<_, T>(&sql), params)
                    .fetch_all(&mut **tx)
                    .await?
            }
            ReadTx::Sqlite(tx, has_learner) => {
                let (cond, params) = conditions(filter, false, None);
                let from = if *has_learner {
                    table.to_string()
                } else {
                    format!("(SELECT *, NULL AS learner_id FROM {table})")
                };
                let sql = sqlite_sql.replace("{table}", &from).replace("{where}", &cond);
                bind_all_sqlite!(sqlx::query_as::<_, T>(&sql), params)
                    .fetch_all(&mut **tx)
                    .await?
            }
        })
    }

    /// How many rows match (for a progress bar or a page count).
    pub async fn count(&mut self, filter: &Filter) -> anyhow::Result<i64> {
        let table = table_name(filter.table());
        Ok(match self {
            ReadTx::Postgres(tx) => {
                let (cond, params) = conditions(filter, true, None);
                let sql = format!("SELECT count(*) FROM public.{table} {cond}");
                bind_all!(sqlx::query_scalar::<_, i64>(&sql), params)
                    .fetch_one(&mut **tx)
                    .await?
            }
            ReadTx::Sqlite(tx, _) => {
                let (cond, params) = conditions(filter, false, None);
                let sql = format!("SELECT count(*) FROM {table} {cond}");
                bind_all_sqlite!(sqlx::query_scalar::<_, i64>(&sql), params)
                    .fetch_one(&mut **tx)
                    .await?
            }
        })
    }
}
