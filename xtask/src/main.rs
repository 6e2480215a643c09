//! `cargo xtask`: the project's build, demo, test, bench and fuzz orchestration.
//!
//! Each subcommand does its own set-up on a fresh machine (Debian packages, the
//! wasm target, wasm-bindgen-cli, npm packages), so the README's two commands,
//! `cargo xtask demo` and `cargo xtask test`, work on a clean clone.

mod bench;
mod demo;
mod fuzz;
mod leaks;
mod prereqs;
mod scaleout;
mod sdk;
mod test;
mod util;
mod wheel;

use clap::{CommandFactory, Parser, Subcommand};

/// The project's build, demo, test, bench and fuzz tasks; each installs what it needs first.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
#[command(after_help = "Run `cargo xtask <command> --help` for a command's options.")]
struct Cli {
    /// None: print the help (`cargo xtask` alone)
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    Demo(demo::Args),
    Test(test::Args),
    BuildSdk(sdk::Args),
    Wheel(wheel::Args),
    Bench(bench::Args),
    Fuzz(fuzz::Args),
    ScaleOut(scaleout::Args),
}

fn main() {
    let Some(command) = Cli::parse().command else {
        Cli::command().print_help().expect("writing the help to stdout");
        return;
    };
    let (name, result) = match command {
        Command::Demo(args) => ("demo", demo::run(args)),
        Command::Test(args) => ("test", test::run(args)),
        Command::BuildSdk(args) => ("build-sdk", sdk::run(args)),
        Command::Wheel(args) => ("wheel", wheel::run(args)),
        Command::Bench(args) => ("bench", bench::run(args)),
        Command::Fuzz(args) => ("fuzz", fuzz::run(args)),
        Command::ScaleOut(args) => ("scale-out", scaleout::run(args)),
    };
    if let Err(e) = result {
        eprintln!("xtask {name}: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, CommandFactory, Parser};

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The command lines that README.md, docs/, .ci/run and the e2e scripts give.
    #[test]
    fn every_documented_command_line_parses() {
        let documented = [
            "test",
            "test --only rust --only sdk-e2e --skip fuzz --no-setup --fuzz-seconds 5",
            "demo",
            "demo --port 4001 --page-port 8001 --no-build",
            "build-sdk",
            "build-sdk --dev --out examples/animation/sdk",
            "wheel",
            "wheel --no-sdk-build --out target/wheels",
            "bench",
            "bench --only pgbench,collector --no-write",
            "bench --only scale-out --quick --no-write",
            "bench --seconds 3 --profile --collector-arg=--writers=2 --collector-arg --writers=2",
            "fuzz --seconds 600 --target batch_json",
            "fuzz --target path_segment --target client_time",
            "scale-out",
            "scale-out --port 8081 --collectors 3 --debug --no-build --smoke",
        ];
        for line in documented {
            let argv = std::iter::once("xtask").chain(line.split(' '));
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("`cargo xtask {line}` no longer parses:\n{e}");
            }
        }
    }

    #[test]
    fn unknown_stages_targets_parts_and_counts_are_refused() {
        let refused = [
            "test --only docs",
            "test --skip",
            "fuzz --target everything",
            "fuzz --seconds soon",
            "bench --only pgbench,disk",
            "scale-out --collectors 0",
            "scale-out --collectors 17",
            "demo --port 65536",
            "deploy",
        ];
        for line in refused {
            let argv = std::iter::once("xtask").chain(line.split(' '));
            assert!(Cli::try_parse_from(argv).is_err(), "`cargo xtask {line}` was accepted");
        }
    }
}
