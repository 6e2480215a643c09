//! Command line of `hourofci-insights`. Data goes to standard output (or `--output`),
//! messages to standard error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use hourofci_collector::config::DatabaseArgs;
use uuid::Uuid;

use crate::export::{self, Format};
use crate::forget::{self, Who};
use crate::source::{self, Filter, Source, Table};

/// The read side of hourofci-log: export answers for analysis, forget a learner,
/// prune old test traffic. Works on PostgreSQL and on the collector's SQLite file.
///
/// --database-url takes a postgres:// URL (the reader role's for export; the admin's
/// for forget and prune) or the path of the SQLite file.
#[derive(Parser, Debug)]
#[command(name = "hourofci-insights", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the insights pages and GET /api/answers on an internal address. Every
    /// page, download and API call needs the token (login form -> session cookie, or
    /// `Authorization: Bearer TOKEN`); without it: 401. After 10 wrong tokens from one
    /// address (100 from all) sign-ins wait: 429 with Retry-After. The overview's counts
    /// are built in memory at start (until then SQL answers) and kept up to date.
    Serve(ServeArgs),
    /// Write every column of the matching rows, in id order, as CSV (RFC 4180, UTF-8,
    /// header) or JSON lines. Streams with constant memory from one consistent
    /// snapshot; a progress bar on standard error when it is a terminal.
    Export(ExportArgs),
    /// Delete one pseudonymous learner's rows from both tables (one transaction) and
    /// print the counts. --user-agent deletes legacy rows (no learner id) with that
    /// user agent: it first prints how many rows and how many learner ids share it,
    /// and deletes only with --yes.
    Forget(ForgetArgs),
    /// Delete test traffic (loggingtable_test) received before a date, in one transaction.
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The READER role's URL (migrate --reader-role), or the SQLite file (opened read-only).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on; keep it internal (or behind an authenticating proxy with TLS).
    #[arg(long, env = "HOURCI_INSIGHTS_BIND", default_value = "127.0.0.1:4001")]
    pub bind: std::net::SocketAddr,
    /// File whose first line is the access token (at least 16 characters, e.g. `openssl rand -hex 32`).
    #[arg(long, env = "HOURCI_INSIGHTS_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Database connections.
    #[arg(long, default_value_t = 4)]
    pub pool_size: u32,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// production (loggingtable) or test (loggingtable_test).
    #[arg(long, default_value = "production", value_parser = source::parse_table)]
    pub table: Table,
    #[arg(long)]
    pub lesson: Option<String>,
    #[arg(long)]
    pub level: Option<String>,
    #[arg(long)]
    pub question: Option<String>,
    /// Received at or after: 2026-11-28 (midnight UTC) or an RFC 3339 instant.
    #[arg(long, value_parser = source::parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// Received before: 2026-11-28 (midnight UTC) or an RFC 3339 instant.
    #[arg(long, value_parser = source::parse_instant)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Write here instead of standard output (created 0600: it holds learners' answers).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["learner", "user_agent"])))]
pub struct ForgetArgs {
    /// The ADMIN role's URL (or the SQLite file); the writer's and reader's are refused.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The learner id (UUID) the learner or their lesson kit shows.
    #[arg(long)]
    pub learner: Option<Uuid>,
    /// The MD5 hex user agent of legacy rows (rows without learner id).
    #[arg(long)]
    pub user_agent: Option<String>,
    /// Only count, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --user-agent: delete after the count (other learners may share it).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The ADMIN role's URL (or the SQLite file); the writer's and reader's are refused.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only `test`: production answers are never pruned by date.
    #[arg(long, value_parser = ["test"])]
    pub table: String,
    /// Delete rows received before: 2026-11-28 (midnight UTC) or an RFC 3339 instant.
    #[arg(long, value_parser = source::parse_instant)]
    pub before: DateTime<Utc>,
    /// Only count, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn target(database: &DatabaseArgs) -> anyhow::Result<String> {
    database.resolve()?.ok_or_else(|| {
        anyhow::anyhow!("give --database-url (a postgres:// URL or the SQLite file) or --database-url-file")
    })
}

fn private_file(path: &PathBuf) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let token = std::fs::read_to_string(&args.token_file)
                .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", args.token_file.display()))?;
            let token = token.lines().next().unwrap_or_default().to_string();
            let source = Source::open_read(&target(&args.database)?, args.pool_size).await?;
            crate::server::serve(crate::server::AppState::new(source, &token)?, args.bind).await
        }
        Command::Export(args) => {
            let source = Source::open_read(&target(&args.database)?, 1).await?;
            let filter = Filter {
                table: Some(args.table),
                lesson: args.lesson,
                level: args.level,
                question: args.question,
                since: args.since,
                until: args.until,
                search: None,
                charted_only: false,
            };
            let progress = std::io::stderr().is_terminal();
            let out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(private_file(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            let n = export::export(
                &source,
                &filter,
                args.format,
                std::io::BufWriter::with_capacity(1 << 16, out),
                progress,
            )
            .await?;
            if progress || args.output.is_some() {
                eprintln!("exported {n} rows");
            }
            Ok(())
        }
        Command::Forget(args) => {
            let source = Source::open_admin(&target(&args.database)?).await?;
            let who = match (args.learner, args.user_agent) {
                (Some(id), _) => Who::Learner(id),
                (None, Some(ua)) => Who::UserAgent(ua),
                (None, None) => unreachable!("clap requires one"),
            };
            if let Who::UserAgent(ua) = &who {
                let report = forget::user_agent_report(&source, ua).await?;
                eprintln!(
                    "user agent {ua}: {} production and {} test rows without learner id; {} learner id(s) also use this user agent \
                     (their rows are kept: forget them with --learner)",
                    report.legacy_rows.production, report.legacy_rows.test, report.learner_ids
                );
                if !args.yes || args.dry_run {
                    eprintln!("nothing deleted: several learners on the same browser build share a user agent; run again with --yes to delete these rows");
                    return Ok(());
                }
            }
            let counts = forget::forget(&source, &who, args.dry_run).await?;
            let verb = if args.dry_run { "would delete" } else { "deleted" };
            println!("{verb} {} production and {} test rows", counts.production, counts.test);
            Ok(())
        }
        Command::Prune(args) => {
            let source = Source::open_admin(&target(&args.database)?).await?;
            let n = forget::prune_test(&source, args.before, args.dry_run).await?;
            let verb = if args.dry_run { "would delete" } else { "deleted" };
            println!("{verb} {n} test rows received before {}", args.before.to_rfc3339());
            Ok(())
        }
    }
}
