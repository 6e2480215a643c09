//! Scale-out on real parts (issue 13): collectors through PgBouncer in transaction
//! pooling, and two collector processes behind HAProxy while a collector is SIGKILLed,
//! PgBouncer and PostgreSQL are restarted, and both collectors get a rolling SIGTERM
//! restart. PgBouncer and HAProxy run from the files in examples/scale-out/ (ports and
//! paths replaced), so these tests prove the configs users copy.
//!
//! The load generator acts like the SDK: every event has its id, a 503 is retried
//! (same id) after a pause, and an event counts as acknowledged on a 2xx. Afterwards
//! the table must hold every acknowledged id exactly once and nothing else.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fresh_db, spawn_app, TestDb, UA};
use serde_json::{json, Value};
use testkit::daemons::userlist_line;
use testkit::{HaProxy, PgBouncer, PgCluster};
use uuid::Uuid;

/// Bound of each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(240);

fn example(file: &str) -> String {
    let path = format!("{}/../examples/scale-out/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the load generator saw.
#[derive(Default)]
struct Seen {
    /// Event id -> number of 2xx answers that covered it (a retry after a lost
    /// answer may see 200 "duplicate").
    acked: HashMap<Uuid, u32>,
    requests_2xx: u64,
    answered_503: u64,
    /// Anything other than 2xx or 503 + Retry-After: other statuses, resets, timeouts.
    errors: Vec<String>,
}

/// What the failure test is doing right now, for naming the phase of each client error.
static PHASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const PHASES: [&str; 3] = ["steady", "crash and restarts", "rolling deploy"];
/// Errors are tagged with their phase; a SIGKILL can cut a request HAProxy already sent
/// (it cannot know whether it was stored), so only the rolling deploy must show none.
const ROLLING: usize = 2;

/// `workers` clients, each sending (until `stop`, or `per_worker` times) a single POST,
/// then a /batch of 5, alternately, each retried with the same ids after a 503.
async fn load(base: String, workers: usize, per_worker: usize, stop: Arc<AtomicBool>) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (base, stop, seen) = (base.clone(), stop.clone(), seen.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            for i in 0..per_worker {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ids: Vec<Uuid> = (0..if i % 2 == 0 { 1 } else { 5 }).map(|_| Uuid::new_v4()).collect();
                let give_up = Instant::now() + Duration::from_secs(90);
                loop {
                    let req = if ids.len() == 1 {
                        client
                            .post(format!("{base}/{UA}/gateway/beginner/1A/w{w}-{i}"))
                            .header("Idempotency-Key", ids[0].to_string())
                    } else {
                        let events: Vec<Value> = ids
                            .iter()
                            .enumerate()
                            .map(|(k, id)| {
                                json!({"id": id.to_string(), "user_agent": UA, "lesson": "gateway",
                                "level": "beginner", "question": "1A", "answer": format!("w{w}-{i}-{k}")})
                            })
                            .collect();
                        client.post(format!("{base}/batch")).json(&json!({ "events": events }))
                    };
                    let outcome = match req.send().await {
                        Ok(res) if res.status().is_success() => {
                            let status = res.status();
                            let body = res.text().await.unwrap_or_default();
                            let all_stored = ids.len() == 1
                                || serde_json::from_str::<Value>(&body).ok().and_then(|b| {
                                    b["results"].as_array().map(|r| {
                                        r.len() == ids.len()
                                            && r.iter().all(|x| x["status"] == "written" || x["status"] == "duplicate")
                                    })
                                }) == Some(true);
                            if all_stored {
                                Ok(())
                            } else {
                                Err(format!("{status} without every event stored: {body}"))
                            }
                        }
                        Ok(res) if res.status() == 503 && res.headers().contains_key("retry-after") => {
                            seen.lock().unwrap().answered_503 += 1;
                            if Instant::now() > give_up {
                                Err("still 503 after 90 s".to_string())
                            } else {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                        Ok(res) => Err(format!("{} {:?}", res.status(), res.text().await.unwrap_or_default())),
                        Err(e) => Err(format!("transport error: {e:?}")),
                    };
                    let give_up_now = {
                        let mut seen = seen.lock().unwrap();
                        match outcome {
                            Ok(()) => {
                                seen.requests_2xx += 1;
                                for id in &ids {
                                    *seen.acked.entry(*id).or_default() += 1;
                                }
                                break;
                            }
                            Err(e) => {
                                seen.errors
                                    .push(format!("[{}] {e}", PHASES[PHASE.load(Ordering::Relaxed)]));
                                Instant::now() > give_up || seen.errors.len() > 50
                            }
                        }
                    };
                    if give_up_now {
                        return;
                    }
                    // Like the SDK: keep the events and resend them later.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("load worker panicked");
    }
    Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
}

/// Every acknowledged id is in the table exactly once, and the table holds nothing else.
async fn assert_exactly_once(db: &TestDb, seen: &Seen) {
    let ids: Vec<Option<Uuid>> = sqlx::query_scalar("SELECT event_id FROM loggingtable")
        .fetch_all(&db.admin)
        .await
        .expect("read the table");
    let stored: HashSet<Uuid> = ids.iter().map(|id| id.expect("every row has its event id")).collect();
    assert_eq!(stored.len(), ids.len(), "no event id stored twice");
    let acked: HashSet<Uuid> = seen.acked.keys().copied().collect();
    let missing = acked.difference(&stored).count();
    let unacked = stored.difference(&acked).count();
    assert_eq!(
        (missing, unacked),
        (0, 0),
        "acknowledged ids without a row, rows never acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_pooling_through_pgbouncer_serves_every_request() {
    tokio::time::timeout(TEST_LIMIT, async {
        let pg = PgCluster::start().expect("PostgreSQL is required");
        let db = fresh_db(&pg).await;
        let bouncer = PgBouncer::start(
            &example("pgbouncer.ini"),
            pg.port(),
            &userlist_line(&pg, &db.writer_role),
        )
        .expect("PgBouncer is required (Debian package pgbouncer)");
        let url = bouncer.url_for(&db.writer_role, &db.writer_password, &db.name);
        // Two collectors sharing PgBouncer's server connections (default_pool_size 10
        // < 2 x 9 client connections), so statements meet other clients' connections.
        let args = [
            "--database-url",
            &url,
            "--database-pool-mode",
            "transaction",
            "--writers",
            "8",
            "--rate-limit-per-second",
            "0",
        ];
        let (a, b) = (spawn_app(&args).await, spawn_app(&args).await);
        let stop = Arc::new(AtomicBool::new(false));
        let loads = tokio::join!(
            load(a.url.clone(), 12, 20, stop.clone()),
            load(b.url.clone(), 12, 20, stop.clone()),
            async {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    for app in [&a, &b] {
                        statuses.push(app.get("/healthz").await.status().as_u16());
                    }
                }
                statuses
            }
        );
        let (seen_a, seen_b, health) = loads;
        assert!(
            health.iter().all(|s| *s == 200),
            "/healthz through PgBouncer: {health:?}"
        );
        let mut seen = seen_a;
        assert!(
            seen.errors.is_empty() && seen_b.errors.is_empty(),
            "{:?} {:?}",
            seen.errors,
            seen_b.errors
        );
        assert_eq!(
            (seen.answered_503, seen_b.answered_503),
            (0, 0),
            "no 503: the database was up all along"
        );
        assert_eq!(
            seen.requests_2xx + seen_b.requests_2xx,
            2 * 12 * 20,
            "every request answered 2xx"
        );
        seen.acked.extend(seen_b.acked);
        assert_eq!(seen.acked.len(), 2 * 12 * 10 * 6, "1 + 5 events per two requests");
        assert_exactly_once(&db, &seen).await;
        drop(bouncer);
    })
    .await
    .expect("test took too long");
}

/// A collector binary on a fixed loopback port. Killed on drop.
struct Collector {
    port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl Collector {
    fn start(port: u16, args: &[&str]) -> Self {
        let mut c = Collector {
            port,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        c.start_again();
        c
    }

    fn start_again(&mut self) {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("RUST_LOG", "warn,tower_http=off")
            .spawn()
            .expect("start the collector binary");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "collector on {} did not listen", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if raw_status(base, "/healthz") == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "{base}/healthz never answered 200");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Status of a GET, over a fresh blocking connection (for the chaos thread).
fn raw_status(base: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_lost_or_doubled_through_kills_restarts_and_a_rolling_deploy() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut pg = PgCluster::start().expect("PostgreSQL is required");
        let db = fresh_db(&pg).await;
        let mut bouncer = PgBouncer::start(&example("pgbouncer.ini"), pg.port(), &userlist_line(&pg, &db.writer_role))
            .expect("PgBouncer is required (Debian package pgbouncer)");
        let url = bouncer.url_for(&db.writer_role, &db.writer_password, &db.name);
        let (p1, p2, front) = (testkit::free_port(), testkit::free_port(), testkit::free_port());
        let args = [
            "--database-url", &url, "--database-pool-mode", "transaction", "--rate-limit-per-second", "0",
            "--shutdown-drain-ms", "3000", "--trusted-proxy", "127.0.0.1", "--db-timeout-ms", "3000",
        ];
        let mut c1 = Collector::start(p1, &args);
        let mut c2 = Collector::start(p2, &args);
        let config = example("haproxy.cfg")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"))
            .replace("127.0.0.1:4001", &format!("127.0.0.1:{p1}"))
            .replace("127.0.0.1:4002", &format!("127.0.0.1:{p2}"));
        let haproxy = HaProxy::start(&config, front).expect("HAProxy is required (Debian package haproxy)");
        let base = format!("http://127.0.0.1:{front}");
        let b = base.clone();
        tokio::task::spawn_blocking(move || wait_healthy(&b)).await.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let generator = tokio::spawn(load(base.clone(), 16, usize::MAX, stop.clone()));
        let steps = tokio::task::spawn_blocking(move || {
            let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
            let mut done = Vec::new();
            pause(1500);
            PHASE.store(1, Ordering::Relaxed);
            let status = c1.signal(libc::SIGKILL);
            done.push(format!("collector 1 SIGKILLed ({status})"));
            pause(1500);
            c1.start_again();
            wait_healthy(&format!("http://127.0.0.1:{}", c1.port));
            pause(1500);
            bouncer.restart().expect("restart PgBouncer");
            done.push("PgBouncer restarted".into());
            pause(2000);
            pg.restart_server().expect("restart PostgreSQL");
            done.push("PostgreSQL restarted".into());
            wait_healthy(&format!("http://127.0.0.1:{}", c1.port));
            wait_healthy(&format!("http://127.0.0.1:{}", c2.port));
            pause(1500);
            PHASE.store(ROLLING, Ordering::Relaxed);
            // Rolling deploy: one collector at a time, SIGTERM then start again.
            for c in [&mut c1, &mut c2] {
                let status = c.signal(libc::SIGTERM);
                assert!(status.success(), "SIGTERM exit status {status}");
                c.start_again();
                wait_healthy(&format!("http://127.0.0.1:{}", c.port));
                pause(1500); // HAProxy's rise 2 x 500 ms
                done.push(format!("collector on {} restarted by SIGTERM", c.port));
            }
            (pg, bouncer, c1, c2, done)
        })
        .await
        .expect("failure steps");
        stop.store(true, Ordering::Relaxed);
        let seen = generator.await.unwrap();
        let (_pg, _bouncer, _c1, _c2, done) = steps;
        eprintln!(
            "{done:?}: {} requests 2xx, {} events acknowledged, {} answers 503 (retried)",
            seen.requests_2xx,
            seen.acked.len(),
            seen.answered_503
        );
        // During the crash and restarts a client may see its connection cut (a SIGKILLed
        // collector had the request; the request is retried with the same ids, so nothing is
        // lost or doubled: asserted below). Anything else, or any error while the collectors
        // are restarted by SIGTERM one at a time, fails.
        let rolling = format!("[{}]", PHASES[ROLLING]);
        let unexpected: Vec<&String> = seen
            .errors
            .iter()
            .filter(|e| e.starts_with(&rolling) || !e.contains("transport error"))
            .collect();
        assert!(
            unexpected.is_empty(),
            "during the rolling deploy clients saw only 2xx and 503 + Retry-After, and nothing but cut connections during the crash: {unexpected:?}\nall errors: {:?}\nHAProxy: {}",
            seen.errors,
            haproxy.log_tail()
        );
        eprintln!("client errors during the crash and restarts (retried): {}", seen.errors.len());
        assert!(seen.requests_2xx > 100, "the load kept flowing: {} requests 2xx", seen.requests_2xx);
        assert_exactly_once(&db, &seen).await;
    })
    .await
    .expect("test took too long");
}

/// Status and Retry-After of a GET (reqwest), `None` when the connection failed.
async fn health(client: &reqwest::Client, base: &str) -> Option<(u16, bool)> {
    let res = client.get(format!("{base}/healthz")).send().await.ok()?;
    Some((res.status().as_u16(), res.headers().contains_key("retry-after")))
}

/// Rolling-deploy shutdown on the real binary, with no balancer: after SIGTERM the
/// collector answers /healthz 503 + Retry-After but still writes every request, for
/// the whole --shutdown-drain-ms, then finishes and exits 0 with every 2xx stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_fails_healthz_first_and_keeps_serving_through_the_drain() {
    tokio::time::timeout(TEST_LIMIT, async {
        let pg = PgCluster::start().expect("PostgreSQL is required");
        let db = fresh_db(&pg).await;
        let port = testkit::free_port();
        let base = format!("http://127.0.0.1:{port}");
        // A drain far longer than this test needs, so the load below is over before it ends.
        let args = [
            "--database-url",
            &db.writer_url,
            "--rate-limit-per-second",
            "0",
            "--shutdown-drain-ms",
            "20000",
        ];
        let mut collector = Collector::start(port, &args);
        let client = reqwest::Client::new();
        assert_eq!(health(&client, &base).await, Some((200, false)));

        let stop = Arc::new(AtomicBool::new(false));
        let generator = tokio::spawn(load(base.clone(), 8, usize::MAX, stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut child = collector.child.take().unwrap();
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let mut draining = None;
        for _ in 0..400 {
            draining = health(&client, &base).await;
            if draining != Some((200, false)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            draining,
            Some((503, true)),
            "/healthz answers 503 + Retry-After once SIGTERM arrived"
        );
        // Still serving: new connections and new events are written.
        let fresh = reqwest::Client::new();
        let mut during_drain = Vec::new();
        for i in 0..10 {
            let id = Uuid::new_v4();
            during_drain.push(id);
            let res = fresh
                .post(format!("{base}/{UA}/gateway/beginner/1A/draining-{i}"))
                .header("Idempotency-Key", id.to_string())
                .send()
                .await
                .expect("served during the drain");
            assert_eq!(res.status(), 201);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut seen = generator.await.unwrap();
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        assert_eq!(seen.answered_503, 0, "only /healthz fails during the drain");
        seen.acked.extend(during_drain.into_iter().map(|id| (id, 1)));
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(exit.success(), "exit status {exit}");
        assert_exactly_once(&db, &seen).await;
    })
    .await
    .expect("test took too long");
}
