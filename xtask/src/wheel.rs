//! `cargo xtask wheel`: the lesson kit's wheel (`python/`, importable as `hourofci_lesson`),
//! with the browser SDK inside.
//!
//! Steps: `build-sdk` (unless `--no-sdk-build`), the SDK from `js/dist` and the licence
//! texts from the repository root copied into `python/` (git ignores the copies), then
//! `python3 -m pip wheel` (PEP 517, hatchling in an isolated build environment), and a
//! check that the wheel holds the SDK and the licences: a wheel without the SDK would
//! install and import fine, then record nothing.

use crate::sdk;
use crate::util::{self, root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Build the SDK, then the lesson kit's Python wheel (hourofci-lesson) with it inside
///
/// Builds the browser SDK (as `cargo xtask build-sdk` does), then the Python wheel of the
/// lesson kit (python/, `pip install hourofci-lesson`, import hourofci_lesson) with the SDK
/// inside, and prints the wheel's path. Needs python3 with pip; the build backend
/// (hatchling) is fetched by pip into an isolated build environment.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Where to write the wheel [default: target/wheels]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Use the SDK already in js/dist
    #[arg(long)]
    no_sdk_build: bool,
}

pub fn run(args: Args) -> Result<()> {
    let out = args.out.unwrap_or_else(|| root().join("target/wheels"));
    let build_sdk = !args.no_sdk_build;
    let wheel = build(&out, build_sdk)?;
    println!("{}", wheel.display());
    Ok(())
}

/// Builds the wheel into `out` and returns its path.
pub fn build(out: &Path, build_sdk: bool) -> Result<PathBuf> {
    let root = root();
    let dist = if build_sdk {
        sdk::build(true)?
    } else {
        root.join("js/dist")
    };
    let python = root.join("python");
    let package_sdk = python.join("src/hourofci_lesson/sdk");
    let _ = std::fs::remove_dir_all(&package_sdk);
    sdk::copy_sdk(&dist, &package_sdk)
        .context("copying the SDK into the package (run `cargo xtask build-sdk` first)")?;
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        std::fs::copy(root.join(licence), python.join(licence)).with_context(|| format!("copying {licence}"))?;
    }

    std::fs::create_dir_all(out)?;
    let version = project_version(&python.join("pyproject.toml"))?;
    let wheel = out.join(format!("hourofci_lesson-{version}-py3-none-any.whl"));
    let _ = std::fs::remove_file(&wheel);
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-w",
            ])
            .arg(out)
            .arg(&python),
    )
    .context("building the wheel (needs python3 with pip; Debian: apt-get install python3-pip python3-venv)")?;
    if !wheel.exists() {
        bail!("pip wheel did not write {}", wheel.display());
    }
    check_contents(&wheel, &version)?;
    Ok(wheel)
}

/// `version` of `[project]` in pyproject.toml.
fn project_version(pyproject: &Path) -> Result<String> {
    let text = std::fs::read_to_string(pyproject).with_context(|| format!("reading {}", pyproject.display()))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", pyproject.display()))?;
    let version = doc.get("project").and_then(|p| p.get("version")?.as_str());
    version
        .map(str::to_string)
        .with_context(|| format!("no [project] version in {}", pyproject.display()))
}

/// Fails unless the wheel holds the package, the whole SDK and both licence texts.
fn check_contents(wheel: &Path, version: &str) -> Result<()> {
    let listing = util::output(
        Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
            ])
            .arg(wheel),
    )?;
    let names: Vec<&str> = listing.lines().collect();
    let mut wanted: Vec<String> = vec!["hourofci_lesson/__init__.py".into(), "hourofci_lesson/widget.js".into()];
    wanted.extend(sdk::SDK_FILES.iter().map(|f| format!("hourofci_lesson/sdk/{f}")));
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        wanted.push(format!("hourofci_lesson-{version}.dist-info/licenses/{licence}"));
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !names.contains(&w.as_str())).collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}; it holds {names:?}", wheel.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::project_version;

    #[test]
    fn the_version_is_the_project_tables_not_the_first_version_line() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = dir.path().join("pyproject.toml");
        std::fs::write(
            &pyproject,
            "[tool.other]\nversion = \"9\"\n\n[project]\nname = \"x\"\nversion = \"1.2.3\"\n",
        )
        .unwrap();
        assert_eq!(project_version(&pyproject).unwrap(), "1.2.3");
        std::fs::write(&pyproject, "[project]\nname = \"x\"\n").unwrap();
        assert!(project_version(&pyproject).is_err());
    }
}
