//! Test-only helpers shared by the collector's tests, `cargo xtask` and the benches.
//!
//! The main piece is [`PgCluster`]: a real, throwaway PostgreSQL cluster started with
//! `initdb` in a temporary directory on a free loopback port. PostgreSQL refuses to run
//! as root, so when the caller is root the server runs as the `postgres` user (or
//! `nobody`), with the directory handed over to it.
//!
//! Every server here dies with the process that started it, however that process ends
//! (normal exit with a cluster in a `static`, panic, SIGKILL): see [`watchdog`].
//!
//! Nothing here skips: when PostgreSQL is not installed, [`PgCluster::start`] returns
//! an error that names what is missing, and tests fail with it.

pub mod daemons;
pub mod proxy;
pub mod watchdog;

pub use daemons::{HaProxy, PgBouncer};
pub use watchdog::Watchdog;

use std::fs;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Password of the cluster's superuser `postgres`. Throwaway clusters only.
pub const SUPERUSER_PASSWORD: &str = "testkit-superuser";

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Where the PostgreSQL server binaries live: `$PG_BIN_DIR`, then
/// `/usr/lib/postgresql/{17,16,15}/bin`, then `pg_config --bindir`.
pub fn pg_bin_dir() -> io::Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    for v in ["17", "16", "15"] {
        let dir = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "PostgreSQL server binaries (initdb, postgres) not found: install the Debian package \
         postgresql-15 or set PG_BIN_DIR (`cargo xtask test` installs them)",
    ))
}

/// How the cluster is configured.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// fsync and synchronous_commit on (benchmarks); off makes tests faster.
    pub durable: bool,
    /// Fixed port, or a free one.
    pub port: Option<u16>,
    /// `max_connections`.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            durable: false,
            port: None,
            max_connections: 200,
        }
    }
}

/// A running throwaway PostgreSQL cluster. Stopped and deleted on drop, or by its
/// watchdog when this process ends without dropping it.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    opts: PgOptions,
    child: Option<Child>,
    /// Fast shutdown (SIGINT) of the postmaster and removal of `root` if this process dies.
    watchdog: Watchdog,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// initdb + start with default (fast, non-durable) options.
    pub fn start() -> io::Result<Self> {
        Self::start_with(PgOptions::default())
    }

    /// One cluster for the whole process, started on first use: a test binary's tests
    /// share it. It is never dropped (statics are not); its watchdog stops it and deletes
    /// its directory when the process exits. A missing PostgreSQL panics (never skips).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            PgCluster::start().expect("PostgreSQL is required for these tests (testkit::PgCluster::start)")
        })
    }

    pub fn start_with(opts: PgOptions) -> io::Result<Self> {
        let bin = pg_bin_dir()?;
        let run_as = unprivileged_ids()?;
        let root = std::env::temp_dir().join(format!(
            "hourofci-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sock"))?;
        // From here on the directory is the watchdog's to remove if this process dies.
        let watchdog = Watchdog::start(libc::SIGINT, Some(&root))?;
        let pwfile = root.join("pwfile");
        fs::write(&pwfile, SUPERUSER_PASSWORD)?;
        if let Some((uid, gid)) = run_as {
            for p in [&root, &root.join("sock"), &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(root.join("data"))
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = as_user(&mut initdb, run_as).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = opts.port.unwrap_or_else(free_port);
        let mut cluster = PgCluster {
            root,
            bin,
            port,
            run_as,
            opts,
            child: None,
            watchdog,
        };
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Start (again) a stopped server on the same port and data directory.
    pub fn start_server(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("postgres.log"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.root.join("postgres.log"), Some(uid), Some(gid));
        }
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.root.join("sock"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("max_connections={}", self.opts.max_connections)]);
        if !self.opts.durable {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = as_user(&mut cmd, self.run_as).spawn()?;
        self.watchdog.watch(Some(child.id()));
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    self.watchdog.watch(None);
                    return Err(io::Error::other(format!(
                        "postgres exited with {status}; log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.try_psql("postgres", "select 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "postgres did not become ready in {timeout:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT): open connections are closed, the port stops answering.
    pub fn stop_server(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            self.watchdog.watch(None);
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            child.wait()?;
        }
        Ok(())
    }

    /// Restart: stop then start on the same port.
    pub fn restart_server(&mut self) -> io::Result<()> {
        self.stop_server()?;
        self.start_server()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while running (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's directory (data, socket, log); gone once the cluster is.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `postgres://postgres:<pw>@127.0.0.1:<port>/<db>` (the superuser, over TCP).
    pub fn superuser_url(&self, db: &str) -> String {
        format!("postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL through psql as the superuser over the Unix socket; stdout on success.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    pub fn try_psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.root.join("sock"))
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env_remove("PGPASSWORD")
            .output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(io::Error::other(String::from_utf8_lossy(&out.stderr).to_string()))
        }
    }

    /// A fresh database owned by a fresh admin role (`<name>_admin`, password = name),
    /// as the production set-up has it: the admin owns the objects and runs migrations.
    /// Returns the admin's URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name {name}"
        );
        self.psql("postgres", &format!("CREATE ROLE {name}_admin LOGIN PASSWORD '{name}'"));
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {name}_admin"));
        // A database's PUBLIC may connect by default; the real set-up revokes that.
        self.psql("postgres", &format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"));
        format!("postgres://{name}_admin:{name}@127.0.0.1:{}/{name}", self.port)
    }

    /// A fresh, uniquely named database (see [`create_database`](Self::create_database)).
    pub fn fresh_database(&self, prefix: &str) -> (String, String) {
        let name = format!("{prefix}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let url = self.create_database(&name);
        (name, url)
    }

    /// Create a login role with a password (e.g. the writer role).
    pub fn create_login_role(&self, role: &str, password: &str) {
        assert!(
            role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad role {role}"
        );
        self.psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{}'", password.replace('\'', "''")),
        );
    }

    /// URL for `role` with `password` on database `db`.
    pub fn url_for(&self, role: &str, password: &str, db: &str) -> String {
        format!("postgres://{role}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // (The watchdog field is dropped after this: told `done`, it exits untouched.)
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

pub(crate) fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        // std drops root's supplementary groups itself when it changes uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// `None` when not root; else the uid/gid of `postgres` (or `nobody`).
pub(crate) fn unprivileged_ids() -> io::Result<Option<(u32, u32)>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == wanted {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Ok(Some((uid, gid)));
                }
            }
        }
    }
    Err(io::Error::other(
        "running as root and neither user `postgres` nor `nobody` exists to run PostgreSQL",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_restarts_and_creates_databases() {
        let mut pg = PgCluster::start().expect("start PostgreSQL");
        let (name, _url) = pg.fresh_database("kit");
        assert_eq!(pg.psql(&name, "select 40 + 2"), "42");
        pg.restart_server().unwrap();
        assert_eq!(pg.psql(&name, "select current_database()"), name);
    }
}
