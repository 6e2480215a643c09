//! Installs what the demo and the tests need on a fresh machine, and says what it did.
//!
//! Each check looks for the thing itself (a binary, a directory) before installing, so
//! on a prepared machine this costs a few milliseconds. Installing system packages needs
//! root (CI runs as root); without it the error names the packages to install.

use crate::util::{have, root, run};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Debian packages and the file that proves each is installed.
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    ("postgresql-15", "/usr/lib/postgresql/15/bin/initdb"),
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("sqlite3", "/usr/bin/sqlite3"),
    // The export round-trip test reads CSV with pandas (any python3 that has it).
    ("python3-pandas", "/usr/lib/python3/dist-packages/pandas/__init__.py"),
    // The scale-out tests (collector/tests/scale_out.rs) and `cargo xtask scale-out`.
    ("haproxy", "/usr/sbin/haproxy"),
    ("pgbouncer", "/usr/sbin/pgbouncer"),
];

/// rustfmt and clippy, and the wasm target the SDK is linted for (`rustup`, when missing).
pub fn lint_tools() -> Result<()> {
    let installed =
        crate::util::output(Command::new("rustup").args(["component", "list", "--installed"])).unwrap_or_default();
    for component in ["rustfmt", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    let targets =
        crate::util::output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t.trim() == "wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// PostgreSQL server, Chromium and ChromeDriver, sqlite3 (for looking at the demo's rows),
/// HAProxy and PgBouncer (the scale-out tests).
pub fn system_packages() -> Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(_, proof)| !Path::new(proof).exists())
        // PG_BIN_DIR points at another PostgreSQL: don't insist on Debian's.
        .filter(|(pkg, _)| !(*pkg == "postgresql-15" && std::env::var_os("PG_BIN_DIR").is_some()))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing system packages {missing:?}: run `sudo apt-get install -y {}`",
            missing.join(" ")
        );
    }
    eprintln!("installing system packages: {}", missing.join(" "));
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// `npm ci` at the workspace root (wasm-opt from `binaryen`, `terser`, `playwright-core`), when
/// `node_modules` is missing or older than the lock file.
pub fn npm_packages() -> Result<()> {
    let root = root();
    if !have("npm") {
        bail!("npm is not installed: install Node.js 20 (Debian: apt-get install nodejs npm)");
    }
    let lock = root.join("package-lock.json");
    let marker = root.join("node_modules/.package-lock.json");
    let fresh = match (modified(&lock), modified(&marker)) {
        (Some(l), Some(m)) => m >= l,
        _ => false,
    };
    if !fresh {
        let verb = if lock.exists() { "ci" } else { "install" };
        run(Command::new("npm")
            .args([verb, "--no-audit", "--no-fund"])
            .current_dir(&root))?;
    }
    Ok(())
}

/// A Python virtual environment at `.venv` with JupyterLab, Notebook and anywidget
/// (for the notebook end-to-end test), installed from `examples/notebook/requirements.txt`,
/// then the lesson kit from `wheel` (built by `cargo xtask wheel`), reinstalled each time.
pub fn jupyter_venv(wheel: &Path) -> Result<std::path::PathBuf> {
    let root = root();
    let venv = root.join(".venv");
    let reqs = root.join("examples/notebook/requirements.txt");
    let stamp = venv.join(".requirements-installed");
    let jupyter = venv.join("bin/jupyter");
    if !reqs.exists() {
        bail!("{} is missing", reqs.display());
    }
    let current = std::fs::read(&reqs)?;
    if !(jupyter.exists() && std::fs::read(&stamp).ok().as_deref() == Some(current.as_slice())) {
        if !venv.join("bin/python").exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
                .context("creating the Jupyter virtual environment (Debian: apt-get install python3-venv)")?;
        }
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(&reqs))?;
        std::fs::write(&stamp, current)?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--force-reinstall", "--no-deps"])
        .arg(wheel))?;
    Ok(jupyter)
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}
