//! `hourofci-collector insights|export|forget|prune`: the read side is its own binary,
//! `hourofci-insights` (the insights/ crate), so the public write service never links
//! it. These subcommands run that binary in place of this process (`exec`): it gets the
//! same arguments, standard input, output and error, and its exit status and signals
//! are the collector's.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The read side's binary, looked for next to this one, then on `PATH`.
pub const INSIGHTS_BIN: &str = "hourofci-insights";

/// Run `hourofci-insights SUBCOMMAND ARGS...` in place of this process (for
/// `hourofci-collector NAME ARGS...`). Returns only when it could not be started.
pub fn exec(name: &str, subcommand: &str, args: &[OsString]) -> anyhow::Error {
    let sibling = std::env::current_exe().ok().map(|exe| exe.with_file_name(INSIGHTS_BIN));
    let program = match &sibling {
        Some(path) if path.is_file() => path.clone(),
        // A bare name: exec searches PATH.
        _ => PathBuf::from(INSIGHTS_BIN),
    };
    let err = Command::new(&program).arg(subcommand).args(args).exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        let beside = sibling.map_or_else(|| "this binary".to_string(), |p| p.display().to_string());
        return anyhow::anyhow!(
            "`hourofci-collector {name}` runs the {INSIGHTS_BIN} binary, found neither at {beside} nor on PATH; \
             install it next to hourofci-collector \
             (`cargo build --release -p hourofci-insights` puts it in target/release/)"
        );
    }
    anyhow::anyhow!("cannot run {}: {err}", program.display())
}
