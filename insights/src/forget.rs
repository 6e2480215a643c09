//! `forget` (one learner's rows, from both tables) and `prune` (old test traffic).
//! Each runs in one transaction, counts first, and deletes only without `--dry-run`.
//! On PostgreSQL they refuse a role that may not delete from both tables: the writer's
//! and the reader's URLs are refused; only the admin (owner) may delete.
//!
//! Every deletion is noted in the deletion log (table, kind, row count, time; never
//! whose rows), in the same transaction, so that the insights service rebuilds its
//! in-memory overview: on PostgreSQL by sql/0006's triggers (we only name the kind),
//! on SQLite by [`note_deletion_sqlite`].

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::source::{sqlite_instant, Source, SQLITE_DELETION_LOG};

/// Rows per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub production: u64,
    pub test: u64,
}

/// What `forget --user-agent` finds before deleting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserAgentReport {
    /// Rows with this user agent and no learner id (what would be deleted).
    pub legacy_rows: Counts,
    /// Distinct learner ids whose rows carry this user agent (not deleted: use --learner).
    pub learner_ids: u64,
}

/// Who is asked to forget.
#[derive(Clone, Debug)]
pub enum Who {
    Learner(Uuid),
    /// Rows without learner id that carry this user agent (legacy rows).
    UserAgent(String),
}

enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// What the deletion log calls this deletion.
#[derive(Clone, Copy)]
enum Kind {
    Forget,
    Prune,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Forget => "forget",
            Kind::Prune => "prune",
        }
    }
}

/// SQLite has no triggers per statement: note the deletion ourselves, in its transaction.
async fn note_deletion_sqlite(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    kind: Kind,
    rows: u64,
) -> anyhow::Result<()> {
    if rows == 0 {
        return Ok(());
    }
    sqlx::query(SQLITE_DELETION_LOG).execute(&mut **tx).await?;
    sqlx::query("INSERT INTO deletion_log (table_name, kind, row_count) VALUES (?1, ?2, ?3)")
        .bind(table)
        .bind(kind.as_str())
        .bind(rows as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn begin_deleting(source: &Source, kind: Kind) -> anyhow::Result<Tx> {
    Ok(match source {
        Source::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let (user, may_delete): (String, bool) = sqlx::query_as(
                "SELECT current_user::text, has_table_privilege('public.loggingtable', 'DELETE')
                 AND has_table_privilege('public.loggingtable_test', 'DELETE')",
            )
            .fetch_one(&mut *tx)
            .await?;
            anyhow::ensure!(
                may_delete,
                "refusing: the role {user:?} of this URL may not delete rows (is it the writer's or the reader's URL?). \
                 forget and prune need the admin role's URL, the one `hourofci-collector migrate` uses"
            );
            // Read by sql/0006's triggers, which write the deletion log.
            sqlx::query("SELECT pg_catalog.set_config('hourofci.deletion_kind', $1, true)")
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await?;
            Tx::Postgres(tx)
        }
        Source::Sqlite(pool, _) => Tx::Sqlite(pool.begin().await?),
    })
}

const TABLES: [&str; 2] = ["loggingtable", "loggingtable_test"];

fn counts(values: [u64; 2]) -> Counts {
    Counts {
        production: values[0],
        test: values[1],
    }
}

/// The WHERE clause and its one text parameter for `who`.
fn learner_condition(who: &Who, postgres: bool) -> (&'static str, String) {
    match (who, postgres) {
        (Who::Learner(id), true) => ("learner_id = $1::uuid", id.to_string()),
        (Who::Learner(id), false) => ("learner_id = ?1", id.to_string()),
        (Who::UserAgent(ua), true) => ("learner_id IS NULL AND user_agent = $1", ua.clone()),
        (Who::UserAgent(ua), false) => ("learner_id IS NULL AND user_agent = ?1", ua.clone()),
    }
}

/// Count (and unless `dry_run`, delete) `who`'s rows in both tables, in one transaction.
pub async fn forget(source: &Source, who: &Who, dry_run: bool) -> anyhow::Result<Counts> {
    let mut tx = begin_deleting(source, Kind::Forget).await?;
    let mut found = [0u64; 2];
    for (i, table) in TABLES.iter().enumerate() {
        found[i] = match &mut tx {
            Tx::Postgres(tx) => {
                let (cond, value) = learner_condition(who, true);
                let verb = if dry_run {
                    "SELECT count(*) FROM"
                } else {
                    "WITH d AS (DELETE FROM"
                };
                let sql = if dry_run {
                    format!("{verb} public.{table} WHERE {cond}")
                } else {
                    format!("{verb} public.{table} WHERE {cond} RETURNING 1) SELECT count(*) FROM d")
                };
                sqlx::query_scalar::<_, i64>(&sql)
                    .bind(value)
                    .fetch_one(&mut **tx)
                    .await? as u64
            }
            Tx::Sqlite(tx) => {
                let (cond, value) = learner_condition(who, false);
                if dry_run {
                    let sql = format!("SELECT count(*) FROM {table} WHERE {cond}");
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(value)
                        .fetch_one(&mut **tx)
                        .await? as u64
                } else {
                    let sql = format!("DELETE FROM {table} WHERE {cond}");
                    let deleted = sqlx::query(&sql).bind(value).execute(&mut **tx).await?.rows_affected();
                    note_deletion_sqlite(tx, table, Kind::Forget, deleted).await?;
                    deleted
                }
            }
        };
    }
    commit_or_roll_back(tx, dry_run).await?;
    Ok(counts(found))
}

/// What `forget --user-agent` would delete, and how many learner ids share that user agent.
pub async fn user_agent_report(source: &Source, user_agent: &str) -> anyhow::Result<UserAgentReport> {
    let legacy = forget(source, &Who::UserAgent(user_agent.to_string()), true).await?;
    let learner_ids: i64 = match source {
        Source::Postgres(pool) => sqlx::query_scalar(
            "SELECT count(DISTINCT learner_id) FROM (SELECT learner_id FROM public.loggingtable WHERE user_agent = $1
                 UNION ALL SELECT learner_id FROM public.loggingtable_test WHERE user_agent = $1) s",
        )
        .bind(user_agent)
        .fetch_one(pool)
        .await?,
        Source::Sqlite(pool, _) => {
            sqlx::query_scalar(
                "SELECT count(DISTINCT learner_id) FROM (SELECT learner_id FROM loggingtable WHERE user_agent = ?1
                 UNION ALL SELECT learner_id FROM loggingtable_test WHERE user_agent = ?1)",
            )
            .bind(user_agent)
            .fetch_one(pool)
            .await?
        }
    };
    Ok(UserAgentReport {
        legacy_rows: legacy,
        learner_ids: learner_ids as u64,
    })
}

/// Count (and unless `dry_run`, delete) test rows received before `before`.
pub async fn prune_test(source: &Source, before: DateTime<Utc>, dry_run: bool) -> anyhow::Result<u64> {
    let mut tx = begin_deleting(source, Kind::Prune).await?;
    let n = match &mut tx {
        Tx::Postgres(tx) => {
            let sql = if dry_run {
                "SELECT count(*) FROM public.loggingtable_test WHERE received_at < $1"
            } else {
                "WITH d AS (DELETE FROM public.loggingtable_test WHERE received_at < $1 RETURNING 1) SELECT count(*) FROM d"
            };
            sqlx::query_scalar::<_, i64>(sql)
                .bind(before)
                .fetch_one(&mut **tx)
                .await? as u64
        }
        Tx::Sqlite(tx) => {
            if dry_run {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM loggingtable_test WHERE received_at < ?1")
                    .bind(sqlite_instant(before))
                    .fetch_one(&mut **tx)
                    .await? as u64
            } else {
                let deleted = sqlx::query("DELETE FROM loggingtable_test WHERE received_at < ?1")
                    .bind(sqlite_instant(before))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                note_deletion_sqlite(tx, "loggingtable_test", Kind::Prune, deleted).await?;
                deleted
            }
        }
    };
    commit_or_roll_back(tx, dry_run).await?;
    Ok(n)
}

async fn commit_or_roll_back(tx: Tx, dry_run: bool) -> anyhow::Result<()> {
    match (tx, dry_run) {
        (Tx::Postgres(tx), false) => tx.commit().await?,
        (Tx::Postgres(tx), true) => tx.rollback().await?,
        (Tx::Sqlite(tx), false) => tx.commit().await?,
        (Tx::Sqlite(tx), true) => tx.rollback().await?,
    }
    Ok(())
}
