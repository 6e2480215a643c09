//! `hourofci-collector [serve|migrate]`; see `--help`.

use clap::Parser;
use hourofci_collector::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        // Colour codes only on a terminal, not in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Migrate(args)) => {
            let url = args
                .database
                .resolve()?
                .ok_or_else(|| anyhow::anyhow!("migrate needs --database-url, DATABASE_URL or --database-url-file (the admin role)"))?;
            hourofci_collector::migrate::run(&url, &args.writer_role).await?;
            match &args.reader_role {
                Some(reader) => hourofci_collector::migrate::grant_reader(&url, reader, &args.writer_role).await,
                None => Ok(()),
            }
        }
        Some(Command::Serve(args)) => hourofci_collector::serve(args).await,
        None => hourofci_collector::serve(cli.serve).await,
    }
}
