//! PgBouncer and HAProxy as real processes on loopback ports, for the scale-out tests
//! and `cargo xtask scale-out`. Each is started from the project's example config
//! (`examples/scale-out/`) with only its ports and paths replaced, so the tests prove
//! the files users copy. Like [`crate::PgCluster`], each runs as an unprivileged user
//! when the caller is root (PgBouncer refuses to run as root), is stopped and its
//! directory deleted on drop (or by its [`Watchdog`] if this process dies first), and a
//! missing binary is an error naming the package.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Watchdog;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One foreground daemon: its command line, its directory and its port.
struct Daemon {
    name: &'static str,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// SIGKILL of the daemon and removal of `dir` if this process dies.
    watchdog: Watchdog,
}

impl Daemon {
    fn new(name: &'static str, program: &str, package: &str, port: u16) -> io::Result<Self> {
        let program = PathBuf::from(program);
        if !program.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not found: install the Debian package {package} (`cargo xtask test` installs it)",
                    program.display()
                ),
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "hourofci-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let run_as = crate::unprivileged_ids()?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let watchdog = Watchdog::start(libc::SIGKILL, Some(&dir))?;
        Ok(Daemon {
            name,
            dir,
            program,
            args: Vec::new(),
            port,
            run_as,
            child: None,
            watchdog,
        })
    }

    /// Write a file the daemon reads (owned by its user, mode 0600).
    fn write(&self, file: &str, text: &str) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(file);
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        Ok(path)
    }

    fn start(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = crate::as_user(&mut cmd, self.run_as).spawn()?;
        self.watchdog.watch(Some(child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().transpose()) {
                self.child = None;
                self.watchdog.watch(None);
                return Err(io::Error::other(format!(
                    "{} exited with {:?}; log:\n{}",
                    self.name,
                    status,
                    self.log_tail()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not listen on {} in 30 s; log:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn stop(&mut self, signal: i32) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            self.watchdog.watch(None);
            unsafe { libc::kill(child.id() as i32, signal) };
            child.wait()?;
        }
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for file in ["stderr.log", "daemon.log"] {
            text.push_str(&fs::read_to_string(self.dir.join(file)).unwrap_or_default());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop(libc::SIGKILL);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Replace `key = value` lines of one `[section]` of an ini file (and add the keys it
/// lacks at the section's end); `replace_section` drops the section's lines first.
fn set_ini(text: &str, section: &str, values: &[(&str, String)], replace_section: bool) -> String {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut done: Vec<String> = Vec::new();
    let flush = |out: &mut Vec<String>, current: &str, done: &mut Vec<String>| {
        if current == section {
            for (k, v) in values {
                if !done.iter().any(|d| d == k) {
                    out.push(format!("{k} = {v}"));
                    done.push(k.to_string());
                }
            }
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            flush(&mut out, &current, &mut done);
            current = trimmed[1..trimmed.len() - 1].to_string();
            out.push(line.to_string());
            continue;
        }
        if current == section && !trimmed.starts_with(';') && !trimmed.is_empty() {
            if replace_section {
                continue;
            }
            let key = trimmed.split('=').next().unwrap_or("").trim();
            if let Some((k, v)) = values.iter().find(|(k, _)| *k == key) {
                out.push(format!("{k} = {v}"));
                done.push(k.to_string());
                continue;
            }
        }
        out.push(line.to_string());
    }
    flush(&mut out, &current, &mut done);
    out.join("\n") + "\n"
}

/// A running PgBouncer. Stopped (SIGKILL) and deleted on drop.
pub struct PgBouncer {
    daemon: Daemon,
}

impl PgBouncer {
    /// Start `pgbouncer` from the ini text `template` (e.g. examples/scale-out/pgbouncer.ini)
    /// on a free port, forwarding every database name to PostgreSQL on `upstream_port`,
    /// with `userlist` (lines `"role" "SCRAM-SHA-256$..."`) as its auth_file.
    pub fn start(template: &str, upstream_port: u16, userlist: &str) -> io::Result<Self> {
        let port = crate::free_port();
        let mut daemon = Daemon::new("pgbouncer", "/usr/sbin/pgbouncer", "pgbouncer", port)?;
        let auth_file = daemon.write("userlist.txt", userlist)?;
        let ini = set_ini(
            template,
            "databases",
            &[("*", format!("host=127.0.0.1 port={upstream_port}"))],
            true,
        );
        let ini = set_ini(
            &ini,
            "pgbouncer",
            &[
                ("listen_addr", "127.0.0.1".into()),
                ("listen_port", port.to_string()),
                ("unix_socket_dir", String::new()),
                ("auth_file", auth_file.display().to_string()),
                ("logfile", daemon.dir.join("daemon.log").display().to_string()),
                ("pidfile", String::new()),
            ],
            false,
        );
        let path = daemon.write("pgbouncer.ini", &ini)?;
        daemon.args = vec![path.display().to_string()];
        daemon.start()?;
        Ok(PgBouncer { daemon })
    }

    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    /// `postgres://role:password@127.0.0.1:<pgbouncer port>/db`.
    pub fn url_for(&self, role: &str, password: &str, db: &str) -> String {
        format!("postgres://{role}:{password}@127.0.0.1:{}/{db}", self.port())
    }

    /// Immediate shutdown (SIGTERM: client and server connections are closed at once).
    pub fn stop(&mut self) -> io::Result<()> {
        self.daemon.stop(libc::SIGTERM)
    }

    /// Start again on the same port with the same files.
    pub fn start_again(&mut self) -> io::Result<()> {
        self.daemon.start()
    }

    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    pub fn dir(&self) -> &Path {
        &self.daemon.dir
    }

    /// The process id while running (for CPU accounting from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }
}

/// A running HAProxy. Stopped (SIGKILL) and deleted on drop.
pub struct HaProxy {
    daemon: Daemon,
}

impl HaProxy {
    /// Check then start `haproxy` in the foreground with the config text `config`; it
    /// is ready when something listens on `port` (the port of its frontend's `bind`).
    pub fn start(config: &str, port: u16) -> io::Result<Self> {
        let mut daemon = Daemon::new("haproxy", "/usr/sbin/haproxy", "haproxy", port)?;
        let path = daemon.write("haproxy.cfg", config)?;
        let check = crate::as_user(
            Command::new(&daemon.program).args(["-c", "-q", "-f"]).arg(&path),
            daemon.run_as,
        )
        .output()?;
        if !check.status.success() {
            return Err(io::Error::other(format!(
                "haproxy refused its config: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            )));
        }
        daemon.args = vec!["-db".into(), "-f".into(), path.display().to_string()];
        daemon.start()?;
        Ok(HaProxy { daemon })
    }

    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    /// The process id while running (for CPU accounting from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }
}

/// The SCRAM secret of `role` as PgBouncer's auth_file wants it: one line
/// `"role" "SCRAM-SHA-256$..."`, read from pg_authid (no password written down).
pub fn userlist_line(pg: &crate::PgCluster, role: &str) -> String {
    let secret = pg.psql(
        "postgres",
        &format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
            role.replace('\'', "''")
        ),
    );
    assert!(secret.starts_with("SCRAM-SHA-256$"), "role {role} has no SCRAM secret");
    format!("\"{role}\" \"{secret}\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_values_are_replaced_or_added_per_section() {
        let ini = "[databases]\nhourofci = host=x port=5432\n\n[pgbouncer]\n;; comment\nlisten_port = 6432\npool_mode = transaction\n";
        let out = set_ini(ini, "databases", &[("*", "host=127.0.0.1 port=9".into())], true);
        let out = set_ini(
            &out,
            "pgbouncer",
            &[("listen_port", "7".into()), ("logfile", "/l".into())],
            false,
        );
        assert!(!out.contains("hourofci = "), "{out}");
        assert!(out.contains("* = host=127.0.0.1 port=9\n"), "{out}");
        assert!(out.contains("listen_port = 7\n") && !out.contains("6432"), "{out}");
        assert!(
            out.contains("pool_mode = transaction\n") && out.contains("logfile = /l\n"),
            "{out}"
        );
    }
}
