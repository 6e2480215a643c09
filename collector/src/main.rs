//! `hourofci-collector [serve|migrate|insights|export|forget|prune]`; see `--help`.

use clap::Parser;
use hourofci_collector::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The read side is another binary: hand over before starting anything here.
    if let Some((name, subcommand, args)) = cli.command.as_ref().and_then(Command::read_side) {
        return Err(hourofci_collector::read_side::exec(name, subcommand, args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        // Colour codes only on a terminal, not in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Migrate(args)) => {
            let url = args.database.resolve()?.ok_or_else(|| {
                anyhow::anyhow!("migrate needs --database-url, DATABASE_URL or --database-url-file (the admin role)")
            })?;
            hourofci_collector::migrate::run(&url, &args.writer_role).await?;
            match &args.reader_role {
                Some(reader) => hourofci_collector::migrate::grant_reader(&url, reader, &args.writer_role).await,
                None => Ok(()),
            }
        }
        Some(Command::Serve(args)) => hourofci_collector::serve(args).await,
        None => hourofci_collector::serve(cli.serve).await,
        Some(read_side) => unreachable!("{read_side:?} was handed to hourofci-insights"),
    }
}
