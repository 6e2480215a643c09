//! A server a test starts must die with the test process, however that process ends.
//!
//! `Drop` is not enough: a cluster kept in a `static` is never dropped, and a test binary
//! killed with SIGKILL (a CI timeout, a human) runs no code at all. So next to each server
//! runs a [`Watchdog`]: a tiny `sh` process that reads orders from a pipe whose only
//! writer is this process. When this process ends in any way, the kernel closes the pipe;
//! the watchdog reads end-of-file, signals the server it was told about, waits (bounded)
//! for it to exit, and removes the server's directory. A clean `Drop` sends `done` first,
//! and the watchdog exits without touching anything.
//!
//! Why not `prctl(PR_SET_PDEATHSIG)`: it fires when the *thread* that spawned the child
//! exits (a tokio worker, a finished test's thread), not the process, and it is cleared
//! when the child changes user (PostgreSQL runs as `postgres` under root).

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Orders, one per line: `pid N` (watch this process; `pid` alone: none), `done`.
/// `$1`: the signal for the server, `$2`: the directory to remove (may be empty).
/// The server gets 30 s to exit after the signal, then SIGKILL. A zombie counts as gone.
const SCRIPT: &str = r#"
trap '' INT HUP TERM PIPE
pid=
while read -r order arg; do
  case "$order" in
    pid) pid=$arg ;;
    done) exit 0 ;;
  esac
done
alive() { [ -n "$pid" ] && [ -e "/proc/$pid/stat" ] && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null; }
if alive; then
  kill -"$1" "$pid" 2>/dev/null
  i=0
  while alive && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  if alive; then kill -KILL "$pid" 2>/dev/null; fi
fi
if [ -n "$2" ]; then rm -rf -- "$2"; fi
"#;

/// Stops one server (and removes its directory) when this process ends without doing it.
#[derive(Debug)]
pub struct Watchdog {
    process: Child,
    /// The pipe's only writer. `None` once closed (as the kernel does when this process dies).
    orders: Option<ChildStdin>,
}

impl Watchdog {
    /// Start a watchdog that will send `signal` to the watched process and remove `dir`.
    /// It runs as the caller (root may signal a server run as `postgres`) in its own
    /// process group, so a Ctrl-C meant for the tests does not stop it before it cleans up.
    pub fn start(signal: i32, dir: Option<&Path>) -> io::Result<Self> {
        let mut process = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("testkit-watchdog")
            .arg(signal.to_string())
            .arg(dir.map(|d| d.as_os_str()).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let orders = process.stdin.take();
        Ok(Watchdog { process, orders })
    }

    /// The process to stop if this one dies (`None`: the server was stopped on purpose).
    pub fn watch(&mut self, pid: Option<u32>) {
        let order = pid.map_or_else(|| "pid\n".to_string(), |p| format!("pid {p}\n"));
        if let Some(orders) = self.orders.as_mut() {
            // A watchdog that is gone cannot be helped here; the server's own Drop still runs.
            let _ = orders.write_all(order.as_bytes());
        }
    }

    /// The watchdog's own process id (for tests).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(orders) = self.orders.as_mut() {
            let _ = orders.write_all(b"done\n");
        }
        self.orders = None;
        let _ = self.process.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn gone(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what} within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn end_of_orders_stops_the_server_and_removes_its_dir_but_done_stands_down() {
        for stand_down in [false, true] {
            let dir = std::env::temp_dir().join(format!("testkit-watchdog-{}-{stand_down}", std::process::id()));
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            let mut server = Command::new("sleep").arg("600").spawn().unwrap();
            let mut dog = Watchdog::start(libc::SIGTERM, Some(&dir)).unwrap();
            dog.watch(Some(server.id()));
            if stand_down {
                drop(dog);
                assert!(
                    server.try_wait().unwrap().is_none(),
                    "`done` must leave the server alone"
                );
                assert!(dir.exists(), "`done` must leave the directory alone");
                server.kill().unwrap();
                server.wait().unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
            } else {
                // What the kernel does when this process dies: the pipe's writer closes.
                dog.orders = None;
                let status = server.wait().unwrap();
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    Some(libc::SIGTERM)
                );
                dog.process.wait().unwrap();
                wait_until("directory removed", || !dir.exists());
                assert!(gone(server.id()));
            }
        }
    }
}
