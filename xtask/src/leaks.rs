//! `cargo xtask test` fails when it leaves a process of its own behind.
//!
//! At its start the run puts a marker in its own environment, `HOURCI_XTASK_RUN=<pid>-<ns>`
//! (unique per run); every process the run starts inherits it — cargo, the test binaries,
//! PostgreSQL and its backends, PgBouncer, node, Chromium — and keeps it in
//! `/proc/PID/environ` even after its parent is gone. At the end, processes still carrying
//! this run's value (after a grace period for servers shutting down) are leaks: they are
//! killed, and the run fails naming them. Other runs on the same machine carry other values
//! and are never touched.

use anyhow::{bail, Result};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that marks a run's processes.
pub const MARKER: &str = "HOURCI_XTASK_RUN";

/// How long servers get to finish shutting down after the last stage (a test binary's
/// PostgreSQL is stopped by its watchdog once the binary exits).
const GRACE: Duration = Duration::from_secs(30);

/// This run's marker value.
pub struct RunMarker {
    value: String,
}

/// A process still carrying the marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Leftover {
    pub pid: u32,
    pub command: String,
}

impl RunMarker {
    /// A fresh value, put in this process's environment so everything started from now on
    /// inherits it. Call before starting any thread or process.
    pub fn set() -> RunMarker {
        let marker = RunMarker::new();
        std::env::set_var(MARKER, &marker.value);
        marker
    }

    fn new() -> RunMarker {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        RunMarker {
            value: format!("{}-{ns}", std::process::id()),
        }
    }

    /// Processes other than this one whose environment carries this run's value.
    pub fn leftovers(&self) -> Vec<Leftover> {
        let me = std::process::id();
        let wanted = format!("{MARKER}={}", self.value);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found: Vec<Leftover> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| {
                // Unreadable (another user's process, or gone) means not ours.
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
            })
            .map(|pid| Leftover {
                pid,
                command: command_line(pid),
            })
            .collect();
        found.sort_by_key(|l| l.pid);
        found
    }

    /// Wait up to the grace period for this run's processes to exit; kill the ones that
    /// do not and fail, naming them.
    pub fn check(&self) -> Result<()> {
        self.check_within(GRACE)
    }

    fn check_within(&self, grace: Duration) -> Result<()> {
        let deadline = Instant::now() + grace;
        let mut left = self.leftovers();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            left = self.leftovers();
        }
        if left.is_empty() {
            return Ok(());
        }
        for l in &left {
            unsafe { libc::kill(l.pid as i32, libc::SIGKILL) };
        }
        let list: Vec<String> = left.iter().map(|l| format!("  {} {}", l.pid, l.command)).collect();
        bail!(
            "{} process(es) started by this run were still running {} s after the last stage (now killed):\n{}",
            left.len(),
            grace.as_secs_f32(),
            list.join("\n")
        )
    }
}

/// `/proc/PID/cmdline` with spaces for NULs, shortened for the report.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .chars()
        .take(200)
        .collect();
    if text.is_empty() {
        "(no command line)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_kills_and_names_only_this_runs_processes() {
        let ours = RunMarker::new();
        let other = RunMarker::new();
        assert_ne!(ours.value, other.value);
        let mut mine = Command::new("sleep")
            .arg("600")
            .env(MARKER, &ours.value)
            .spawn()
            .unwrap();
        let mut theirs = Command::new("sleep")
            .arg("600")
            .env(MARKER, &other.value)
            .spawn()
            .unwrap();

        let found = ours.leftovers();
        assert_eq!(
            found.iter().map(|l| l.pid).collect::<Vec<_>>(),
            vec![mine.id()],
            "{found:?}"
        );
        assert_eq!(found[0].command, "sleep 600");

        // After the grace period the leftover is killed and named.
        let err = ours.check_within(Duration::from_millis(500)).unwrap_err().to_string();
        assert!(err.contains(&format!("{} sleep 600", mine.id())), "{err}");
        let status = mine.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(
            theirs.try_wait().unwrap().is_none(),
            "another run's process is left alone"
        );
        theirs.kill().unwrap();
        theirs.wait().unwrap();
        assert!(other.leftovers().is_empty());
        assert!(
            ours.check_within(Duration::ZERO).is_ok(),
            "nothing left: the check passes"
        );
    }
}
