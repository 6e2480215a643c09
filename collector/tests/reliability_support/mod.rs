//! Helpers shared by the fault, hostile-input and hardening suites (`faults.rs`,
//! `hostile.rs`, `hardening.rs`): a migrated PostgreSQL with a writer role, the
//! collector in-process or as a real child process, a raw HTTP/1.1 client for requests
//! no well-behaved client library would send, and a client fleet that retries like
//! the SDK does.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hourofci_collector::config::{Cli, ServeArgs};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use testkit::PgCluster;
use uuid::Uuid;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `CI=true`: a missing prerequisite must fail the test, never skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// A throwaway directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "hourofci-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL cluster with one database migrated by its admin role and a writer
/// role that has exactly what `migrate` grants.
pub struct Pg {
    pub cluster: PgCluster,
    pub db: String,
    pub admin_url: String,
    pub writer_role: String,
    pub writer_password: String,
}

impl Pg {
    pub async fn start() -> Pg {
        let cluster = tokio::task::spawn_blocking(|| PgCluster::start().expect("start PostgreSQL (testkit)"))
            .await
            .unwrap();
        let (db, admin_url) = cluster.fresh_database("rel");
        let writer_role = format!("writer_{}", db);
        // A password unlike anything else in the logs, so a leak is easy to spot.
        let writer_password = format!("pw-{}", Uuid::new_v4().simple());
        cluster.create_login_role(&writer_role, &writer_password);
        hourofci_collector::migrate::run(&admin_url, &writer_role).await.expect("migrate");
        Pg { cluster, db, admin_url, writer_role, writer_password }
    }

    /// The URL the collector uses: the writer role, over TCP to `port` (the cluster's
    /// own, or a proxy's).
    pub fn writer_url_via(&self, port: u16) -> String {
        format!("postgres://{}:{}@127.0.0.1:{port}/{}", self.writer_role, self.writer_password, self.db)
    }

    pub fn writer_url(&self) -> String {
        self.writer_url_via(self.cluster.port())
    }

    /// Run SQL as the superuser (Unix socket, blocking).
    pub fn sql(&self, q: &str) -> String {
        self.cluster.psql(&self.db, q)
    }

    /// Every stored event id of a table, with how many rows hold it.
    pub fn stored_ids(&self, table: &str) -> BTreeMap<String, u64> {
        let out = self.sql(&format!(
            "SELECT coalesce(event_id::text, 'NULL'), count(*) FROM {table} GROUP BY 1 ORDER BY 1"
        ));
        parse_counts(&out)
    }
}

pub fn parse_counts(out: &str) -> BTreeMap<String, u64> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, n) = l.rsplit_once('|').expect("id|count");
            (id.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// Serve arguments as the command line would give them.
pub fn serve_args(args: &[&str]) -> ServeArgs {
    let mut full = vec!["hourofci-collector"];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).expect("valid collector flags").serve
}

// ---------------------------------------------------------------------------------
// Raw HTTP/1.1

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as the collector's JSON error `{"error","field","rule"}`, if it is one.
    pub fn json_error(&self) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        (v.get("error")?.is_string() && v.get("rule")?.is_string() && v.get("field").is_some()).then_some(v)
    }
}

/// Send `request` bytes as-is (the caller includes `Connection: close`) and read the
/// whole response until the server closes. `None` when the server closed or reset the
/// connection without a response.
pub fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> Option<RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    // The server may answer (and close) before it has read everything; keep going.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let raw_body = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw_body) } else { raw_body.to_vec() };
    Some(RawResponse { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

/// `GET path` with `Connection: close`.
pub fn raw_get(addr: SocketAddr, path: &str) -> Option<RawResponse> {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    )
}

/// Poll `GET path` until it answers `status` or `timeout` passes.
pub fn wait_for_status(addr: SocketAddr, path: &str, status: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if raw_get(addr, path).is_some_and(|r| r.status == status) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

// ---------------------------------------------------------------------------------
// The collector as a real process

/// The built binary, started with its output going to a log file. SIGKILLed on drop.
pub struct CollectorProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl CollectorProc {
    /// Start `hourofci-collector serve --bind addr ARGS` with `RUST_LOG=info`.
    pub fn spawn(addr: SocketAddr, args: &[String], log: &Path, cwd: &Path) -> CollectorProc {
        Self::spawn_as(addr, args, log, cwd, None)
    }

    /// Same, as another user (uid, gid) when given.
    pub fn spawn_as(addr: SocketAddr, args: &[String], log: &Path, cwd: &Path, user: Option<(u32, u32)>) -> CollectorProc {
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
        use std::os::unix::process::CommandExt;
        let out = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hourofci-collector"));
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
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
        CollectorProc { child, addr, log: log.to_path_buf() }
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
            assert!(Instant::now() < deadline, "collector not serving after {timeout:?}; log:\n{}", self.log_text());
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

// ---------------------------------------------------------------------------------
// Events and a client fleet that retries like the SDK

/// A 32-hex user agent as the SDK sends (MD5 of navigator.userAgent).
pub const UA: &str = "0123456789abcdef0123456789abcdef";

/// `/{ua}/gateway/beginner/1A/{answer}` with every segment percent-encoded.
pub fn event_path(test: bool, answer: &str) -> String {
    format!(
        "{}/{UA}/gateway/beginner/1A/{}",
        if test { "/test" } else { "" },
        utf8_percent_encode(answer, NON_ALPHANUMERIC)
    )
}

/// What the fleet saw.
#[derive(Debug, Default, Clone)]
pub struct FleetReport {
    /// Event ids the fleet created (each sent until acknowledged or the deadline).
    pub sent: BTreeSet<String>,
    /// Ids answered 2xx at least once.
    pub acked: BTreeSet<String>,
    /// How many answers of each status (0: connection error or timeout).
    pub statuses: BTreeMap<u16, u64>,
    /// 503/429 answers without a `Retry-After`, or 4xx/5xx without the JSON body.
    pub malformed_errors: u64,
    /// Attempts in total.
    pub attempts: u64,
}

impl FleetReport {
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
    pub fn summary(&self) -> String {
        format!(
            "sent {} events, {} acknowledged, {} attempts, statuses {:?}",
            self.sent.len(),
            self.acked.len(),
            self.attempts,
            self.statuses
        )
    }
}

/// Clients posting single events, each retried on network errors, 5xx, 408 and 429
/// (as the SDK: same id, backoff with jitter, `Retry-After` honoured but capped to
/// keep tests short) until acknowledged or until `give_up` after `stop` is set.
pub struct Fleet {
    pub stop: Arc<AtomicBool>,
    report: Arc<Mutex<FleetReport>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// `workers` clients against `base` (e.g. `http://127.0.0.1:4000`); `base` is read
    /// again before each attempt so a restarted collector can move.
    pub fn start(base: Arc<Mutex<String>>, workers: usize, give_up: Duration) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(FleetReport::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|w| {
                let (stop, report, client, base) = (stop.clone(), report.clone(), client.clone(), base.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = Uuid::new_v4();
                        report.lock().unwrap().sent.insert(id.to_string());
                        let answer = format!("worker {w} answer {n}: a/b?c#d%e+f 😀");
                        send_until_acked(&client, &base, id, &answer, &stop, give_up, &report).await;
                    }
                })
            })
            .collect();
        Fleet { stop, report, tasks }
    }

    /// Stop creating events, let pending ones finish their retries, return the report.
    pub async fn finish(self) -> FleetReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.report).unwrap().into_inner().unwrap()
    }

    pub fn snapshot(&self) -> FleetReport {
        self.report.lock().unwrap().clone()
    }
}

async fn send_until_acked(
    client: &reqwest::Client,
    base: &Mutex<String>,
    id: Uuid,
    answer: &str,
    stop: &AtomicBool,
    give_up: Duration,
    report: &Mutex<FleetReport>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut stop_seen: Option<Instant> = None;
    let client_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    loop {
        let url = format!("{}{}", base.lock().unwrap(), event_path(false, answer));
        let res = client
            .post(&url)
            .header("Idempotency-Key", id.to_string())
            .header("X-Client-Time", &client_time)
            .send()
            .await;
        let (status, retry_after, well_formed) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body = r.bytes().await.unwrap_or_default();
                let json_ok = status < 400
                    || serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.get("error").is_some());
                let retry_ok = !(status == 503 || status == 429) || retry_after.is_some();
                (status, retry_after, json_ok && retry_ok)
            }
            Err(_) => (0, None, true),
        };
        {
            let mut r = report.lock().unwrap();
            r.attempts += 1;
            *r.statuses.entry(status).or_default() += 1;
            if !well_formed {
                r.malformed_errors += 1;
            }
            if (200..300).contains(&status) {
                r.acked.insert(id.to_string());
                return;
            }
        }
        let retryable = status == 0 || status >= 500 || status == 408 || status == 429;
        if !retryable {
            return; // the SDK reports `rejected` and drops it
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stop_seen.get_or_insert_with(Instant::now);
            if since.elapsed() > give_up {
                return;
            }
        }
        // Full jitter, capped; Retry-After honoured up to 500 ms to keep the test short.
        let jitter = Duration::from_millis(rand_below(backoff.as_millis() as u64 + 1));
        let wait = retry_after.map_or(jitter, |s| Duration::from_secs(s).min(Duration::from_millis(500)).max(jitter));
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

fn rand_below(n: u64) -> u64 {
    (Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// Assert the table holds exactly the acknowledged events, each once, and every
/// event the fleet created was acknowledged in the end.
pub fn assert_exactly_once(report: &FleetReport, stored: &BTreeMap<String, u64>) {
    let dup: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated rows: {dup:?}");
    let stored_ids: BTreeSet<String> = stored.keys().cloned().collect();
    let acked_not_stored: Vec<_> = report.acked.difference(&stored_ids).collect();
    assert!(acked_not_stored.is_empty(), "acknowledged (2xx) but not stored: {acked_not_stored:?}");
    let stored_not_sent: Vec<_> = stored_ids.difference(&report.sent).collect();
    assert!(stored_not_sent.is_empty(), "stored but never sent: {stored_not_sent:?}");
    let never_acked: Vec<_> = report.sent.difference(&report.acked).collect();
    assert!(never_acked.is_empty(), "sent but never acknowledged despite retries: {never_acked:?}");
    assert_eq!(report.malformed_errors, 0, "error answers without JSON body or Retry-After");
}
