//! `cargo xtask test`: every test of the project, with its set-up, in one command.
//!
//! The README gives this command and `.ci/run` calls it. It installs what is missing
//! (PostgreSQL, Chromium and ChromeDriver, the wasm target, wasm-bindgen-cli, npm
//! packages, a Jupyter virtual environment), builds the binaries the tests drive, and
//! runs the stages below in order. A failing stage does not stop the others, so one
//! run shows every failure; the command exits non-zero if any stage failed.
//!
//! Nothing skips: under `CI=true` the tests treat a missing prerequisite as a failure,
//! and this command sets `CI=true` for them unless the caller set `CI` already.

use crate::prereqs;
use crate::util::{self, cargo, root};
use anyhow::{bail, Result};
use std::process::Command;
use std::time::Instant;

/// Install what the tests need, then run every test (Rust, browser, e2e, Jupyter, fuzz)
///
/// Installs what the tests need (apt: postgresql-15 chromium chromium-driver sqlite3
/// python3-pandas haproxy pgbouncer; rustup: wasm32-unknown-unknown; cargo: wasm-bindgen-cli
/// at the Cargo.lock version; npm ci; the lesson kit's wheel (cargo xtask wheel) into
/// target/wheels; python venv .venv with examples/notebook/requirements.txt and that wheel),
/// then runs these stages in order. A failing stage does not stop the others; the command
/// fails if any did. Sets CI=true for the tests unless CI is set: nothing skips.
#[derive(clap::Args)]
#[command(verbatim_doc_comment, after_long_help = STAGES_HELP)]
pub struct Args {
    /// Run only these stages (repeatable)
    #[arg(long, value_name = "STAGE", value_parser = STAGES)]
    only: Vec<String>,
    /// Leave these stages out (repeatable; not for CI)
    #[arg(long, value_name = "STAGE", value_parser = STAGES)]
    skip: Vec<String>,
    /// Do not install anything (fail if something is missing)
    #[arg(long)]
    no_setup: bool,
    /// Seconds per fuzz target in the fuzz stage
    #[arg(long, value_name = "N", default_value_t = 10)]
    fuzz_seconds: u64,
}

const STAGES_HELP: &str = "\
Stages:
  lint      cargo fmt --check, cargo clippy -D warnings (workspace, all targets; the SDK
            also for wasm32): first, and fast
  rust      cargo test --workspace (collector against a real PostgreSQL, SQLite,
            PgBouncer and HAProxy, SDK pure logic, testkit)
  sdk       cargo xtask build-sdk, then the SDK's wasm-bindgen tests in headless Chromium
  sdk-e2e   node --test sdk-wasm/e2e/  (SDK against the real collector in Chromium)
  e2e       node --test e2e/  (examples, PostgreSQL, collector faults, real JupyterLab,
            the wheel installed into a fresh venv)
  fuzz      cargo xtask fuzz --seconds N  (each fuzz target briefly; default 10 s)
";

/// The lint stage's name in the summary.
const LINT_STAGE: &str = "lint (rustfmt, clippy)";

const STAGES: [&str; 6] = ["lint", "rust", "sdk", "sdk-e2e", "e2e", "fuzz"];

pub fn run(args: Args) -> Result<()> {
    let Args {
        only,
        skip,
        no_setup,
        fuzz_seconds,
    } = args;
    let setup = !no_setup;
    let wanted = |s: &str| (only.is_empty() || only.iter().any(|o| o == s)) && !skip.iter().any(|k| k == s);
    let run = crate::leaks::RunMarker::set();
    if std::env::var_os("CI").is_none() {
        // Tests read CI to decide that a missing prerequisite is a failure.
        std::env::set_var("CI", "true");
    }

    let root = root();
    let xtask = std::env::current_exe()?;
    let mut stages = Stages::default();
    let mut stage = |name: &str, f: &mut dyn FnMut() -> Result<()>| stages.run(name, f);

    if wanted("lint") {
        stage(LINT_STAGE, &mut || {
            if setup {
                prereqs::lint_tools()?;
            }
            util::run(cargo().args(["fmt", "--all", "--check"]))?;
            util::run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
            util::run(cargo().args([
                "clippy",
                "-p",
                "hourofci-sdk",
                "--target",
                "wasm32-unknown-unknown",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        });
    }
    if setup {
        stage("setup", &mut || {
            prereqs::system_packages()?;
            prereqs::npm_packages()?;
            if wanted("sdk") || wanted("sdk-e2e") || wanted("e2e") {
                // build-sdk installs the wasm target and wasm-bindgen-cli it needs.
                util::run(Command::new(&xtask).arg("build-sdk").current_dir(&root))?;
            }
            if wanted("e2e") {
                let wheel = crate::wheel::build(&root.join("target/wheels"), false)?;
                prereqs::jupyter_venv(&wheel)?;
            }
            Ok(())
        });
    } else if wanted("sdk") || wanted("sdk-e2e") || wanted("e2e") {
        stage("build-sdk", &mut || {
            util::run(Command::new(&xtask).arg("build-sdk").current_dir(&root))
        });
        if wanted("e2e") {
            stage("wheel", &mut || {
                crate::wheel::build(&root.join("target/wheels"), false).map(|_| ())
            });
        }
    }
    // Without its set-up no later stage can run; a lint failure stops nothing.
    if stages.any_failed_but(LINT_STAGE) {
        return stages.summarize();
    }
    let mut stage = |name: &str, f: &mut dyn FnMut() -> Result<()>| stages.run(name, f);

    // The binaries the node tests drive.
    let needs_bins = wanted("sdk-e2e") || wanted("e2e");
    if needs_bins {
        stage("build", &mut || {
            util::run(cargo().args(["build", "-p", "hourofci-collector", "-p", "testkit", "--bins"]))
        });
    }
    let target = cargo_target_dir();
    let node_env = |cmd: &mut Command| {
        cmd.current_dir(&root)
            .env("HOURCI_COLLECTOR_BIN", target.join("debug/hourofci-collector"))
            .env("HOURCI_PGCLUSTER_BIN", target.join("debug/pgcluster"))
            .env("HOURCI_BALANCERS_BIN", target.join("debug/balancers"))
            .env("HOURCI_SDK_DIST", root.join("js/dist"))
            .env("HOURCI_JUPYTER_BIN", root.join(".venv/bin/jupyter"))
            .env("HOURCI_WHEEL_DIR", root.join("target/wheels"))
            .env("CHROMIUM", "/usr/bin/chromium");
    };

    if wanted("rust") {
        stage("rust", &mut || {
            util::run(cargo().args(["test", "--workspace", "--no-fail-fast"]))
        });
    }
    if wanted("sdk") {
        stage("sdk (wasm-bindgen-test in Chromium)", &mut || {
            util::run(
                cargo()
                    .args(["test", "-p", "hourofci-sdk", "--target", "wasm32-unknown-unknown"])
                    .env("CHROMEDRIVER", "/usr/bin/chromedriver"),
            )
        });
    }
    if wanted("sdk-e2e") {
        stage("sdk-e2e", &mut || {
            let mut cmd = Command::new("node");
            cmd.args(["--test", "--test-concurrency=1", "sdk-wasm/e2e/"]);
            node_env(&mut cmd);
            util::run(&mut cmd)
        });
    }
    if wanted("e2e") {
        stage("e2e", &mut || {
            let mut cmd = Command::new("node");
            cmd.args(["--test", "--test-concurrency=1", "e2e/"]);
            node_env(&mut cmd);
            util::run(&mut cmd)
        });
    }
    if wanted("fuzz") {
        stage("fuzz", &mut || {
            util::run(
                Command::new(&xtask)
                    .args(["fuzz", "--seconds", &fuzz_seconds.to_string()])
                    .current_dir(&root),
            )
        });
    }
    stages.run("no process left behind", &mut || run.check());
    stages.summarize()
}

/// The stages run so far, with their outcome and duration.
#[derive(Default)]
struct Stages(Vec<(String, Result<()>, f64)>);

impl Stages {
    fn run(&mut self, name: &str, f: &mut dyn FnMut() -> Result<()>) {
        eprintln!("\n=== xtask test: {name} ===");
        let t = Instant::now();
        let r = f();
        if let Err(e) = &r {
            eprintln!("=== {name} FAILED: {e:#}");
        }
        self.0.push((name.to_string(), r, t.elapsed().as_secs_f64()));
    }

    fn any_failed_but(&self, stage: &str) -> bool {
        self.0.iter().any(|(name, r, _)| name != stage && r.is_err())
    }

    fn summarize(&self) -> Result<()> {
        eprintln!("\n=== xtask test: summary ===");
        for (name, r, secs) in &self.0 {
            eprintln!("{:<6} {:>7.1}s  {name}", if r.is_ok() { "ok" } else { "FAILED" }, secs);
        }
        let failed: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, r, _)| r.is_err())
            .map(|(n, _, _)| n.as_str())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{} stage(s) failed: {}", failed.len(), failed.join(", "))
        }
    }
}

/// `$CARGO_TARGET_DIR` or `<root>/target`.
pub fn cargo_target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root().join("target"))
}
