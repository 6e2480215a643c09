//! `cargo xtask build-sdk`: builds the browser SDK into `js/dist/`.
//!
//! Steps: `cargo build` for wasm32-unknown-unknown (profile `wasm-release`: opt-level z,
//! fat LTO, panic abort), `wasm-bindgen --target web` at exactly the version in
//! Cargo.lock, `wasm-opt -Oz` from the npm package `binaryen` (Debian's binaryen 108
//! silently corrupts wasm-bindgen output: binaryen#4711, fixed in 110), the glue and
//! the shim minified by the npm package `terser`, and the types next to them. Prints the
//! gzipped size of what a browser downloads and fails when it exceeds the budget.

use crate::util::{self, cargo, output, root};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// wasm + glue + shim, gzip -9, must stay under this (issue 3).
const BUDGET_GZIP_BYTES: usize = 40 * 1024;
/// Oldest binaryen whose output works with wasm-bindgen (table export index fix).
const MIN_BINARYEN: u32 = 110;

/// Build the browser SDK into js/dist and print its gzipped download size
///
/// Builds the browser SDK into js/dist/ (hourofci-log.js is the entry) and prints the
/// gzipped size of everything a browser downloads; fails over the budget. Installs what
/// is missing first: the wasm32 target, wasm-bindgen-cli at the version in Cargo.lock,
/// the npm packages (binaryen's wasm-opt, terser).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Unoptimized build (no wasm-opt, no minifying, no size budget): faster, for debugging
    #[arg(long)]
    dev: bool,
    /// Also copy the SDK into DIR (e.g. a lesson's own folder, which pages then load it
    /// from: examples/animation/sdk)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args { dev, out } = args;
    let release = !dev;
    let dist = build(release)?;
    println!("SDK built in {}", dist.display());
    if let Some(out) = out {
        copy_sdk(&dist, &out)?;
        println!("SDK copied to {}", out.display());
    }
    Ok(())
}

/// The files of a built SDK, as a page or package needs them.
pub const SDK_FILES: &[&str] = &[
    "hourofci-log.js",
    "hourofci_sdk.js",
    "hourofci_sdk_bg.wasm",
    "index.d.ts",
];

/// Copies the built SDK (`dist`) into `out`, creating it.
pub fn copy_sdk(dist: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for f in SDK_FILES {
        std::fs::copy(dist.join(f), out.join(f)).with_context(|| format!("copying {f} into {}", out.display()))?;
    }
    Ok(())
}

/// The wasm-bindgen version Cargo.lock resolved (the CLI must be the same).
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock: toml_edit::DocumentMut = std::fs::read_to_string(root().join("Cargo.lock"))
        .context("reading Cargo.lock")?
        .parse()
        .context("parsing Cargo.lock")?;
    let packages = lock
        .get("package")
        .and_then(|p| p.as_array_of_tables())
        .context("Cargo.lock has no [[package]]")?;
    let wasm_bindgen = packages
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some("wasm-bindgen"));
    let version = wasm_bindgen.and_then(|p| p.get("version")?.as_str().map(str::to_string));
    version.context("wasm-bindgen not found in Cargo.lock (is sdk-wasm a workspace member?)")
}

fn wasm_opt_path() -> PathBuf {
    root().join("node_modules/.bin/wasm-opt")
}

fn terser_path() -> PathBuf {
    root().join("node_modules/.bin/terser")
}

/// Installs the wasm32 target, wasm-bindgen-cli (exact version) and the npm packages
/// (binaryen, terser) when missing, and refuses versions known not to work.
fn ensure_toolchain() -> Result<()> {
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t.trim() == "wasm32-unknown-unknown") {
        util::run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }

    let want = locked_wasm_bindgen_version()?;
    let have = output(Command::new("wasm-bindgen").arg("--version")).ok();
    match have.as_deref().and_then(|v| v.split_whitespace().nth(1)) {
        Some(v) if v == want => {}
        Some(v) => bail!(
            "wasm-bindgen CLI {v} differs from the wasm-bindgen {want} in Cargo.lock; \
             run `cargo install wasm-bindgen-cli --version {want} --force`"
        ),
        None => {
            // Not --locked: its lockfile names a webpki-roots that some index mirrors lack.
            util::run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))?;
        }
    }

    if !wasm_opt_path().exists() || !terser_path().exists() {
        util::run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root()),
        )?;
    }
    let version = output(Command::new(wasm_opt_path()).arg("--version"))?;
    // "wasm-opt version 132 (version_132)"
    let major: u32 = version
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read the wasm-opt version from `{version}`"))?;
    if major < MIN_BINARYEN {
        bail!("wasm-opt {major} is older than {MIN_BINARYEN} and corrupts wasm-bindgen output; run `npm ci` at the repo root");
    }
    Ok(())
}

/// Builds the SDK into `js/dist` and returns that path. `release`: optimized and
/// size-checked; otherwise a quick unoptimized build.
pub fn build(release: bool) -> Result<PathBuf> {
    ensure_toolchain()?;
    let root = root();
    let (profile, profile_dir) = if release {
        ("wasm-release", "wasm-release")
    } else {
        ("dev", "debug")
    };
    util::run(cargo().args([
        "build",
        "-p",
        "hourofci-sdk",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        profile,
    ]))?;
    let raw = root
        .join("target/wasm32-unknown-unknown")
        .join(profile_dir)
        .join("hourofci_sdk.wasm");

    let bindgen_dir = root.join("target/hourofci-sdk-bindgen");
    let _ = std::fs::remove_dir_all(&bindgen_dir);
    util::run(
        Command::new("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--out-name",
                "hourofci_sdk",
                "--out-dir",
            ])
            .arg(&bindgen_dir)
            .arg(&raw),
    )?;

    // Built beside js/dist and swapped in at the end, so a page or test using the SDK
    // never sees a half-written directory.
    let dist = root.join("js/dist");
    let staging = root.join("js/dist.partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let wasm_out = staging.join("hourofci_sdk_bg.wasm");
    if release {
        util::run(
            Command::new(wasm_opt_path())
                .args([
                    "-Oz",
                    "--converge",
                    "--low-memory-unused",
                    "--strip-debug",
                    "--strip-producers",
                ])
                .arg(bindgen_dir.join("hourofci_sdk_bg.wasm"))
                .arg("-o")
                .arg(&wasm_out),
        )?;
    } else {
        std::fs::copy(bindgen_dir.join("hourofci_sdk_bg.wasm"), &wasm_out)?;
    }
    let scripts = [
        (bindgen_dir.join("hourofci_sdk.js"), "hourofci_sdk.js"),
        (root.join("js/hourofci-log.js"), "hourofci-log.js"),
    ];
    for (source, name) in scripts {
        if release {
            minify_js(&source, &staging.join(name))?;
        } else {
            std::fs::copy(&source, staging.join(name)).with_context(|| format!("copying {}", source.display()))?;
        }
    }
    std::fs::copy(root.join("js/index.d.ts"), staging.join("index.d.ts")).context("copying js/index.d.ts")?;

    let total = report_sizes(&staging)?;
    if release && total > BUDGET_GZIP_BYTES {
        bail!("the SDK is {total} bytes gzipped, over the budget of {BUDGET_GZIP_BYTES}");
    }
    let old = root.join("js/dist.old");
    let _ = std::fs::remove_dir_all(&old);
    if dist.exists() {
        std::fs::rename(&dist, &old)?;
    }
    std::fs::rename(&staging, &dist)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(dist)
}

/// Minifies an ES module with terser (compress, then mangle local names; exported and
/// imported names and property names stay): 1.2 KB gzipped less than dropping comment lines
/// and indentation did (docs/BENCHMARKS.md, "SDK download size").
fn minify_js(source: &Path, out: &Path) -> Result<()> {
    util::run(
        Command::new(terser_path())
            .arg(source)
            .args(["--module", "--compress", "--mangle", "--output"])
            .arg(out),
    )
}

/// Gzip -9 size of `bytes`.
pub fn gzip_len(bytes: &[u8]) -> Result<usize> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?.len())
}

/// Prints raw and gzipped sizes of what a browser downloads; returns the gzipped total.
fn report_sizes(dist: &Path) -> Result<usize> {
    let mut total = 0;
    println!("{:<24} {:>9} {:>9}", "js/dist file", "bytes", "gzip -9");
    for f in ["hourofci_sdk_bg.wasm", "hourofci_sdk.js", "hourofci-log.js"] {
        let bytes = std::fs::read(dist.join(f))?;
        let gz = gzip_len(&bytes)?;
        total += gz;
        println!("{f:<24} {:>9} {gz:>9}", bytes.len());
    }
    println!(
        "{:<24} {:>9} {total:>9}  (budget {BUDGET_GZIP_BYTES})",
        "downloaded total", ""
    );
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_locked_wasm_bindgen_is_the_version_sdk_wasm_pins() {
        let manifest = std::fs::read_to_string(super::root().join("sdk-wasm/Cargo.toml")).unwrap();
        let version = super::locked_wasm_bindgen_version().unwrap();
        assert!(
            manifest.contains(&format!("wasm-bindgen = \"={version}\"")),
            "{version} is not pinned in sdk-wasm/Cargo.toml"
        );
    }
}
