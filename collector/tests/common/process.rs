//! The built `hourofci-collector` binary as a child process, for tests of signals, exit
//! codes, logs and memory. SIGKILLed on drop, and by a watchdog if the test process dies.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Watchdog;

use crate::raw_http::raw_get;

/// The collector binary cargo built beside the running test (`target/<profile>/`; the
/// test itself is in `target/<profile>/deps/`). Cargo builds a package's binaries before
/// its integration tests.
pub fn collector_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("hourofci-collector");
    assert!(
        bin.exists(),
        "{} not built (run the tests with `cargo test -p hourofci-collector`)",
        bin.display()
    );
    bin
}

/// The built binary, started with its output going to a log file. SIGKILLed on drop.
pub struct CollectorProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _watchdog: Watchdog,
}

impl CollectorProc {
    /// Start `hourofci-collector serve --bind addr ARGS` with `RUST_LOG=info`.
    pub fn spawn(addr: SocketAddr, args: &[String], log: &Path, cwd: &Path) -> CollectorProc {
        Self::spawn_as(addr, args, log, cwd, None)
    }

    /// Same, as another user (uid, gid) when given.
    pub fn spawn_as(
        addr: SocketAddr,
        args: &[String],
        log: &Path,
        cwd: &Path,
        user: Option<(u32, u32)>,
    ) -> CollectorProc {
        Self::spawn_full(addr, args, log, cwd, user, "info")
    }

    /// Same, with `RUST_LOG=rust_log`.
    pub fn spawn_full(
        addr: SocketAddr,
        args: &[String],
        log: &Path,
        cwd: &Path,
        user: Option<(u32, u32)>,
        rust_log: &str,
    ) -> CollectorProc {
        Self::spawn_inner(addr, args, log, cwd, user, rust_log, None)
    }

    /// Same as [`CollectorProc::spawn`], with soft and hard limits of `open_files`
    /// descriptors (as a unit's `LimitNOFILE=` would set): for attacks that aim to
    /// exhaust them.
    pub fn spawn_with_open_files(
        addr: SocketAddr,
        args: &[String],
        log: &Path,
        cwd: &Path,
        open_files: u64,
    ) -> CollectorProc {
        Self::spawn_inner(addr, args, log, cwd, None, "info", Some(open_files))
    }

    fn spawn_inner(
        addr: SocketAddr,
        args: &[String],
        log: &Path,
        cwd: &Path,
        user: Option<(u32, u32)>,
        rust_log: &str,
        open_files: Option<u64>,
    ) -> CollectorProc {
        use std::os::unix::process::CommandExt;
        let out = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(collector_bin());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        if let Some(n) = open_files {
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `limit`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .arg("serve")
            .arg("--bind")
            .arg(addr.to_string())
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", rust_log)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn hourofci-collector");
        let mut watchdog = Watchdog::start(libc::SIGKILL, None).expect("start a watchdog");
        watchdog.watch(Some(child.id()));
        CollectorProc {
            child,
            addr,
            log: log.to_path_buf(),
            _watchdog: watchdog,
        }
    }

    /// Wait until `GET /` answers (the process is serving).
    pub fn wait_serving(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("collector exited early with {status}; log:\n{}", self.log_text());
            }
            if raw_get(self.addr, "/").is_some_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "collector not serving after {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
