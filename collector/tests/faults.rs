//! Faults while events flow, against a real PostgreSQL (testkit) and the real
//! collector (in-process, or the built binary when signals are involved).
//!
//! Each test runs a fleet of clients that retry like the SDK (same event id, backoff,
//! `Retry-After`), injects a fault, and then checks the one property that matters: the
//! table holds exactly the events that were acknowledged, each once, and the retries
//! got every event acknowledged in the end. The numbers each test prints are the
//! ones in docs/RELIABILITY.md.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use testkit::proxy::{Mode, Proxy};
use uuid::Uuid;

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Wait until the fleet has at least `n` more acknowledgements than now (bounded).
async fn wait_for_progress(fleet: &Fleet, n: usize, timeout: Duration) {
    let start = fleet.snapshot().acked.len();
    let deadline = Instant::now() + timeout;
    while fleet.snapshot().acked.len() < start + n {
        assert!(Instant::now() < deadline, "no progress: {}", fleet.snapshot().summary());
        sleep_ms(50).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_while_events_flow_lose_and_duplicate_nothing() {
    let mut pg = Pg::start().await;
    let url = pg.db.writer_url.clone();
    let server = spawn_app(&[
        "--database-url",
        &url,
        "--db-timeout-ms",
        "2000",
        "--rate-limit-per-second",
        "0",
    ])
    .await
    .server;
    let addr = server.local_addr();
    let fleet = Fleet::start(Arc::new(Mutex::new(server.url())), 16, Duration::from_secs(60));
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;

    // Down for a while (requests get 503), then up; then a quick restart.
    tokio::task::block_in_place(|| pg.cluster.stop_server().unwrap());
    sleep_ms(1500).await;
    let during_outage = fleet.snapshot();
    tokio::task::block_in_place(|| pg.cluster.start_server().unwrap());
    let back = Instant::now();
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;
    let recovered_in = back.elapsed();
    tokio::task::block_in_place(|| pg.cluster.restart_server().unwrap());
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;

    // The collector reconnected by itself: no restart, health is green.
    let healthy = tokio::task::spawn_blocking(move || wait_for_status(addr, "/healthz", 200, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(healthy, "collector did not report healthy after PostgreSQL came back");
    let report = fleet.finish().await;
    let stored = pg.stored_ids("loggingtable");
    eprintln!(
        "postgres restart: {}; rows {}; first success {:?} after the server was back",
        report.summary(),
        stored.values().sum::<u64>(),
        recovered_in
    );
    assert!(
        report.count(503) + report.count(0) > 0,
        "the outage was not observed by any client (statuses {:?}, during outage {:?})",
        report.statuses,
        during_outage.statuses
    );
    assert_exactly_once(&report, &stored);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_connections_cut_mid_flow_lose_and_duplicate_nothing() {
    let pg = Pg::start().await;
    // Every connection to PostgreSQL goes through the proxy, which resets them all at
    // once: statements and commits in flight are cut, some after the commit happened.
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], pg.cluster.port()))).unwrap();
    let url = pg.db.writer_url_via(proxy.port());
    let server = spawn_app(&[
        "--database-url",
        &url,
        "--db-timeout-ms",
        "2000",
        "--rate-limit-per-second",
        "0",
    ])
    .await
    .server;
    let fleet = Fleet::start(Arc::new(Mutex::new(server.url())), 16, Duration::from_secs(60));
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;
    for _ in 0..8 {
        proxy.sever_all();
        wait_for_progress(&fleet, 20, Duration::from_secs(30)).await;
    }
    let report = fleet.finish().await;
    let stored = pg.stored_ids("loggingtable");
    eprintln!(
        "connections cut 8 times: {}; rows {}; proxy accepted {} connections",
        report.summary(),
        stored.values().sum::<u64>(),
        proxy.connections_accepted()
    );
    assert!(proxy.connections_accepted() > 8, "the collector never reconnected");
    assert_exactly_once(&report, &stored);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collector_sigkill_while_events_flow_then_restart_loses_and_duplicates_nothing_postgres() {
    let pg = Pg::start().await;
    let url = pg.db.writer_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let report = kill_and_restart(dir.path(), &["--database-url".into(), url]).await;
    let stored = pg.stored_ids("loggingtable");
    eprintln!(
        "SIGKILL (PostgreSQL): {}; rows {}",
        report.summary(),
        stored.values().sum::<u64>()
    );
    assert_exactly_once(&report, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collector_sigkill_while_events_flow_then_restart_loses_and_duplicates_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let report = kill_and_restart(dir.path(), &["--sqlite-path".into(), db.display().to_string()]).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT event_id, count(*) FROM loggingtable GROUP BY event_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: BTreeMap<String, u64> = rows.into_iter().map(|(id, n)| (id, n as u64)).collect();
    eprintln!(
        "SIGKILL (SQLite): {}; rows {}",
        report.summary(),
        stored.values().sum::<u64>()
    );
    assert_exactly_once(&report, &stored);
}

/// Run the binary, let a fleet send, SIGKILL it twice mid-flow, restart it on the
/// same address each time, and return what the fleet saw.
async fn kill_and_restart(dir: &std::path::Path, store_args: &[String]) -> FleetReport {
    let addr = free_addr();
    let log = dir.join("collector.log");
    let mut args: Vec<String> = store_args.to_vec();
    args.extend(["--rate-limit-per-second".into(), "0".into()]);
    let mut proc = CollectorProc::spawn(addr, &args, &log, dir);
    tokio::task::block_in_place(|| proc.wait_serving(Duration::from_secs(30)));
    let fleet = Fleet::start(
        Arc::new(Mutex::new(format!("http://{addr}"))),
        16,
        Duration::from_secs(60),
    );
    for _ in 0..2 {
        wait_for_progress(&fleet, 100, Duration::from_secs(30)).await;
        proc.signal(libc::SIGKILL);
        let status = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(10))).expect("killed");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        sleep_ms(500).await;
        proc = CollectorProc::spawn(addr, &args, &log, dir);
        tokio::task::block_in_place(|| proc.wait_serving(Duration::from_secs(30)));
    }
    wait_for_progress(&fleet, 100, Duration::from_secs(30)).await;
    let report = fleet.finish().await;
    assert!(report.count(0) > 0, "no client saw the crash: {}", report.summary());
    proc.signal(libc::SIGTERM);
    let exit = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(30)));
    assert!(
        exit.is_some_and(|s| s.success()),
        "collector did not stop cleanly: {exit:?}\n{}",
        proc.log_text()
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_commits_in_flight_and_queued_events_and_refuses_new_connections() {
    let pg = Pg::start().await;
    // A slow link to the database keeps requests in flight long enough to signal.
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], pg.cluster.port()))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let args: Vec<String> = [
        "--database-url",
        &pg.db.writer_url_via(proxy.port()),
        "--db-timeout-ms",
        "60000",
        "--rate-limit-per-second",
        "0",
        "--writers",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut proc = CollectorProc::spawn(addr, &args, &dir.path().join("collector.log"), dir.path());
    tokio::task::block_in_place(|| proc.wait_serving(Duration::from_secs(30)));
    proxy.set_mode(Mode::Delay(Duration::from_millis(300)));

    const EVENTS: usize = 40;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..EVENTS {
        let (client, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let id = Uuid::new_v4();
            let url = format!("http://{addr}{}", event_path(false, &format!("in flight {i}")));
            let res = client.post(url).header("Idempotency-Key", id.to_string()).send().await;
            done.fetch_add(1, Ordering::SeqCst);
            (id.to_string(), res.map(|r| r.status().as_u16()).unwrap_or(0))
        }));
    }
    // Every request has reached the collector and waits for its commit.
    let queued = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = raw_get(addr, "/metrics").map(|r| r.text()).unwrap_or_default();
            let queued: i64 = text
                .lines()
                .find_map(|l| l.strip_prefix("hourofci_queued_events "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if queued >= EVENTS as i64 || Instant::now() > deadline {
                return queued;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(queued, EVENTS as i64, "not every request reached the write queue");
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "requests finished before the signal; the delay is too short"
    );
    proc.signal(libc::SIGTERM);

    // New connections are refused while the queue drains.
    let refused_while_draining = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let refused = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err();
            if refused {
                return Some(done.load(Ordering::SeqCst));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let finished_at_refusal = refused_while_draining.expect("new connections were still accepted 5 s after SIGTERM");
    assert!(
        finished_at_refusal < EVENTS,
        "the queue had drained before the listener closed; nothing was tested"
    );

    let mut answers = BTreeMap::new();
    for t in tasks {
        let (id, status) = t.await.unwrap();
        answers.insert(id, status);
    }
    let exit = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(60)));
    let stored = pg.stored_ids("loggingtable");
    eprintln!(
        "SIGTERM: {EVENTS} in flight, {finished_at_refusal} answered when the first new connection was refused; answers {:?}; rows {}; exit {exit:?}",
        answers.values().fold(BTreeMap::<u16, usize>::new(), |mut m, s| {
            *m.entry(*s).or_default() += 1;
            m
        }),
        stored.values().sum::<u64>()
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit status {exit:?}; log:\n{}",
        proc.log_text()
    );
    assert!(
        answers.values().all(|s| *s == 201),
        "every in-flight event is committed and answered: {answers:?}"
    );
    let ids: Vec<&String> = answers.keys().collect();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ids, "rows = the in-flight events");
    assert!(stored.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_or_slow_database_gives_503_within_the_timeout_and_memory_stays_bounded() {
    let pg = Pg::start().await;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], pg.cluster.port()))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    const TIMEOUT_MS: u64 = 1000;
    let args: Vec<String> = [
        "--database-url",
        &pg.db.writer_url_via(proxy.port()),
        "--db-timeout-ms",
        &TIMEOUT_MS.to_string(),
        "--rate-limit-per-second",
        "0",
        "--queue-capacity",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut proc = CollectorProc::spawn(addr, &args, &dir.path().join("collector.log"), dir.path());
    tokio::task::block_in_place(|| proc.wait_serving(Duration::from_secs(30)));
    let base = Arc::new(Mutex::new(format!("http://{addr}")));
    let fleet = Fleet::start(base, 32, Duration::from_secs(60));
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;
    let rss_before = proc.rss_kib();

    // Every kind of request must give up at the timeout, not hang.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    let mut peak_rss = rss_before;
    let mut flood_answers: BTreeMap<u16, u64> = BTreeMap::new();
    for mode in [Mode::BlackHole, Mode::Delay(Duration::from_millis(3 * TIMEOUT_MS))] {
        proxy.set_mode(mode);
        sleep_ms(200).await;
        for (what, req) in probe_requests(&client, addr) {
            let started = Instant::now();
            let res = req.send().await.expect("an answer, not a hang");
            let took = started.elapsed();
            slowest = slowest.max(took);
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").is_some();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            eprintln!("{mode:?} {what}: {status} in {took:?}, body {body}");
            assert_eq!(status, 503, "{mode:?} {what}");
            assert!(
                retry_after && body["error"].is_string(),
                "{mode:?} {what}: Retry-After and JSON body"
            );
            assert!(
                took < Duration::from_millis(TIMEOUT_MS + 4000),
                "{mode:?} {what} took {took:?}"
            );
        }
        // A flood of full batches while the database is stuck: the queue bound must
        // turn them away (503 at once) instead of holding them in memory.
        let flood = flood_batches(&client, addr, 16, Duration::from_secs(4));
        let sampler = async {
            let mut peak = 0;
            for _ in 0..40 {
                peak = peak.max(proc.rss_kib());
                sleep_ms(100).await;
            }
            peak
        };
        let (answers, peak) = tokio::join!(flood, sampler);
        peak_rss = peak_rss.max(peak);
        for (s, n) in answers {
            *flood_answers.entry(s).or_default() += n;
        }
    }
    eprintln!(
        "flood of 500-event batches while stuck: {flood_answers:?}; RSS {rss_before} KiB before, peak {peak_rss} KiB"
    );
    assert!(
        flood_answers.keys().all(|s| *s == 503),
        "flood answers {flood_answers:?}"
    );
    assert!(
        peak_rss < rss_before + 150 * 1024,
        "RSS grew from {rss_before} KiB to {peak_rss} KiB while the database hung"
    );

    // The database answers again: no restart needed, every event lands exactly once.
    proxy.set_mode(Mode::Pass);
    let healthy = tokio::task::spawn_blocking(move || wait_for_status(addr, "/healthz", 200, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(healthy, "not healthy after the database came back");
    wait_for_progress(&fleet, 50, Duration::from_secs(30)).await;
    let report = fleet.finish().await;
    let stored = pg.stored_ids("loggingtable");
    eprintln!(
        "hung database: fleet {}; slowest probe {slowest:?}; rows {}",
        report.summary(),
        stored.values().sum::<u64>()
    );
    assert!(report.count(503) > 0, "the fleet never saw the outage");
    assert_exactly_once(&report, &stored);
    let log = proc.log_text();
    assert!(!log.contains("panicked"), "panic in the log:\n{log}");
}

/// One of each request kind that needs the database.
fn probe_requests(client: &reqwest::Client, addr: SocketAddr) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let batch = serde_json::json!({"events": [{"id": Uuid::new_v4().to_string(), "user_agent": UA, "lesson": "gateway",
        "level": "beginner", "question": "1A", "answer": "probe", "client_time": "2026-11-28T07:00:00Z"}]});
    vec![
        (
            "POST event",
            client
                .post(format!("http://{addr}{}", event_path(true, "probe")))
                .header("Idempotency-Key", Uuid::new_v4().to_string()),
        ),
        (
            "POST /test/batch",
            client.post(format!("http://{addr}/test/batch")).json(&batch),
        ),
        (
            "legacy GET",
            client.get(format!("http://{addr}{}", event_path(true, "probe"))),
        ),
        ("GET /healthz", client.get(format!("http://{addr}/healthz"))),
    ]
}

/// `workers` clients sending 500-event test batches for `how_long`; statuses counted.
async fn flood_batches(
    client: &reqwest::Client,
    addr: SocketAddr,
    workers: usize,
    how_long: Duration,
) -> BTreeMap<u16, u64> {
    let answers = Arc::new(Mutex::new(BTreeMap::new()));
    let until = Instant::now() + how_long;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, answers) = (client.clone(), answers.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let events: Vec<_> = (0..500)
                        .map(|i| {
                            serde_json::json!({"id": Uuid::new_v4().to_string(), "user_agent": UA, "lesson": "gateway",
                            "level": "beginner", "question": "1A", "answer": format!("flood {i} {}", "x".repeat(100))})
                        })
                        .collect();
                    let status = match client
                        .post(format!("http://{addr}/test/batch"))
                        .json(&serde_json::json!({"events": events}))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    *answers.lock().unwrap().entry(status).or_insert(0u64) += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
}

/// A tmpfs mounted for one test, unmounted on drop. Root and CAP_SYS_ADMIN needed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_or_skip(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(at, size) {
        Ok(m) => Some(m),
        Err(e) if in_ci() => panic!("this test needs root to mount a tmpfs (disk full / read-only): {e}"),
        Err(e) => {
            eprintln!("SKIPPED outside CI: cannot mount a tmpfs: {e}");
            None
        }
    }
}

fn post_status(addr: SocketAddr, answer: &str) -> RawResponse {
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        event_path(false, answer),
        Uuid::new_v4()
    );
    raw_request(addr, req.as_bytes(), Duration::from_secs(30)).expect("an answer")
}

#[test]
fn sqlite_on_a_full_disk_answers_503_with_a_log_line_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mnt) = mount_or_skip(&dir.path().join("mnt"), "512k") else {
        return;
    };
    let addr = free_addr();
    let db = dir.path().join("mnt/events.db");
    let args = vec![
        "--sqlite-path".to_string(),
        db.display().to_string(),
        "--rate-limit-per-second".into(),
        "0".into(),
    ];
    let mut proc = CollectorProc::spawn(addr, &args, &dir.path().join("collector.log"), dir.path());
    proc.wait_serving(Duration::from_secs(30));
    let big = "x".repeat(16 * 1024);
    let mut written = 0;
    let mut full = None;
    for _ in 0..200 {
        let res = post_status(addr, &big);
        match res.status {
            201 => written += 1,
            _ => {
                full = Some(res);
                break;
            }
        }
    }
    let full = full.expect("512 KiB never filled up");
    eprintln!(
        "disk full: {written} events of 16 KiB written, then {} {} (Retry-After {:?})",
        full.status,
        full.text(),
        full.header("retry-after")
    );
    assert_eq!(full.status, 503);
    assert!(full.header("retry-after").is_some() && full.json_error().is_some());
    // Exactly the acknowledged events are stored; the refused one is not.
    let rows: i64 = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT count(*) FROM loggingtable")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    eprintln!("disk full: rows {rows}");
    assert_eq!(rows, written);
    // Still serving, no panic, and the reason is in the log.
    assert_eq!(raw_get(addr, "/").map(|r| r.status), Some(200));
    assert!(proc.child.try_wait().unwrap().is_none(), "the collector died");
    let log = proc.log_text();
    assert!(!log.contains("panicked"), "panic:\n{log}");
    let line = log.lines().rfind(|l| l.contains("full"));
    eprintln!("log: {line:?}");
    assert!(line.is_some(), "no log line names the full disk:\n{log}");
}

/// Root ignores file permissions, so the collector runs as `nobody` here. An open
/// SQLite handle keeps writing whatever happens to the file's mode afterwards, so the
/// fault that can happen is a file that is read-only when the collector starts.
#[test]
fn sqlite_file_read_only_at_start_answers_503_with_a_log_line_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let Some((uid, gid)) = nobody() else {
        assert!(!in_ci(), "this test needs the user `nobody` (root ignores file modes)");
        eprintln!("SKIPPED outside CI: no user `nobody`");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    // tempfile makes the directory 0700; `nobody` must reach data/ inside it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let db = data.join("events.db");
    let addr = free_addr();
    let args = vec![
        "--sqlite-path".to_string(),
        db.display().to_string(),
        "--rate-limit-per-second".into(),
        "0".into(),
    ];
    let log = dir.path().join("collector.log");
    let mut first = CollectorProc::spawn_as(addr, &args, &log, &data, Some((uid, gid)));
    first.wait_serving(Duration::from_secs(30));
    assert_eq!(post_status(addr, "before").status, 201);
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let mut proc = CollectorProc::spawn_as(addr, &args, &log, &data, Some((uid, gid)));
    proc.wait_serving(Duration::from_secs(30));
    let refused = post_status(addr, "while read-only");
    let line = proc
        .log_text()
        .lines()
        .rfind(|l| l.contains("readonly") || l.contains("read-only"))
        .map(str::to_string);
    eprintln!("read-only file: {} {}; log: {line:?}", refused.status, refused.text());
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some() && refused.json_error().is_some());
    assert!(proc.child.try_wait().unwrap().is_none(), "the collector died");
    let text = proc.log_text();
    assert!(!text.contains("panicked"), "panic:\n{text}");
    assert!(line.is_some(), "no log line names the read-only database:\n{text}");
}

/// uid and gid of `nobody`.
fn nobody() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "nobody").then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}
