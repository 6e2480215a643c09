//! `cargo xtask fuzz`: run the cargo-fuzz targets in `fuzz/` on the nightly toolchain.
//!
//! Each target starts from the committed seeds in `fuzz/seeds/<target>/` and grows its
//! working corpus in `fuzz/corpus/<target>/` (not committed). A crash stops the run
//! with an error naming the artifact in `fuzz/artifacts/<target>/`; copy it into
//! `fuzz/regressions/<target>/`, where `collector/tests/hostile.rs` replays it forever.

use crate::util::{self, have, root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run the cargo-fuzz targets (fuzz/) on the nightly toolchain
///
/// Runs every cargo-fuzz target in fuzz/ (or only the named ones) for N seconds each
/// with `cargo +nightly fuzz run T -- -max_total_time=N`. Installs the nightly toolchain
/// and cargo-fuzz when missing. Fails if any target finds a crash.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Seconds per target
    #[arg(long, value_name = "N", default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable)
    #[arg(long = "target", value_name = "T", value_parser = TARGETS)]
    targets: Vec<String>,
}

/// The targets in `fuzz/fuzz_targets/`, in a fixed order.
const TARGETS: [&str; 3] = ["path_segment", "batch_json", "client_time"];

pub fn run(args: Args) -> Result<()> {
    let Args { seconds, mut targets } = args;
    if targets.is_empty() {
        targets = TARGETS.iter().map(|s| s.to_string()).collect();
    }
    run_targets(&targets, seconds)
}

fn run_targets(targets: &[String], seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("fuzz");
    let mut failed = Vec::new();
    for t in targets {
        eprintln!("\n--- fuzz {t}: {seconds} s ---");
        if let Err(e) = run_one(&fuzz_dir, t, seconds) {
            eprintln!("fuzz {t}: {e:#}");
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (crash inputs in fuzz/artifacts/<target>/; add them to fuzz/regressions/<target>/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_one(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus: PathBuf = fuzz_dir.join("corpus").join(target);
    let seeds: PathBuf = fuzz_dir.join("seeds").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
    let mut cmd = nightly_cargo();
    cmd.current_dir(fuzz_dir)
        .args(["fuzz", "run", target])
        // New inputs go to the first directory; the seeds are only read.
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A single input taking 10 s is a hang worth reporting; 2 GiB is a leak.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
    util::run(&mut cmd)
}

/// `cargo +nightly` without the stable toolchain pinned by `cargo xtask`'s own environment.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let works = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    if !have("rustup") {
        bail!("rustup is needed for the nightly toolchain (cargo fuzz needs nightly)");
    }
    if !works(nightly_cargo().arg("--version")) {
        util::run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if !works(nightly_cargo().args(["fuzz", "--version"])) {
        util::run(nightly_cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
