//! Connection, memory and rate-limit attacks on the real collector binary, made as an
//! attacker would: raw TCP on loopback, each attack bounded in count and time. Every
//! test then checks what users care about: another client's answer is still stored.
//!
//! All of 127.0.0.0/8 is loopback on Linux, so a socket bound to 127.0.0.2 before it
//! connects is a second client address.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use uuid::Uuid;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame: what a client sends right after the preface.
const H2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Send `request` (with `Connection: close`) from `from`; the whole answer, or `None`
/// when the connection was closed without one.
async fn request_from(from: Ipv4Addr, server: SocketAddr, request: &[u8]) -> Option<RawResponse> {
    let mut s = connect_from(from, server).await.ok()?;
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

fn post_event(answer: &str, id: Uuid) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {id}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        event_path(false, answer)
    )
    .into_bytes()
}

/// A collector binary on SQLite, serving on a free loopback port.
fn spawn_collector(dir: &Path, args: &[&str]) -> CollectorProc {
    let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut full: Vec<String> = vec!["--sqlite-path".into(), dir.join("events.db").display().to_string()];
    full.extend(args.iter().map(|a| a.to_string()));
    let mut proc = CollectorProc::spawn(addr, &full, &dir.join("collector.log"), dir);
    proc.wait_serving(Duration::from_secs(60));
    proc
}

/// Rows holding `id` in the collector's SQLite file.
async fn stored(dir: &Path, id: Uuid) -> i64 {
    let url = format!("sqlite://{}?mode=ro", dir.join("events.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("open the SQLite file");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable WHERE event_id = ?")
        .bind(id.to_string())
        .fetch_one(&pool)
        .await
        .expect("count rows");
    pool.close().await;
    n
}

/// A second client's POST, retried like the SDK until it gets a 2xx (at most `within`):
/// the status it finally got, and whether its row is stored.
async fn second_client_answer(dir: &Path, server: SocketAddr, from: Ipv4Addr, within: Duration) -> (Option<u16>, i64) {
    let id = Uuid::new_v4();
    let deadline = Instant::now() + within;
    let mut status = None;
    while Instant::now() < deadline {
        status = request_from(from, server, &post_event("second-client", id))
            .await
            .map(|r| r.status);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (status, stored(dir, id).await)
}

/// One series of the collector's `/metrics` at `server`, asked from `from` (0 when
/// the series is absent; `None` when `/metrics` did not answer).
async fn metric(from: Ipv4Addr, server: SocketAddr, series: &str) -> Option<f64> {
    let r = request_from(from, server, &get("/metrics", "")).await?;
    (r.status == 200).then(|| hourofci_collector::metrics::sample(&r.text(), series).unwrap_or(0.0))
}

/// The three ways to hold a connection without sending a request.
#[derive(Clone, Copy, Debug)]
enum Hold {
    /// The start of an HTTP/1 request head, never finished.
    PartialHttp1Head,
    /// The first bytes of the HTTP/2 preface, never finished.
    PartialH2Preface,
    /// The whole preface and a SETTINGS frame, then nothing (an idle HTTP/2 connection).
    IdleH2,
}

impl Hold {
    fn bytes(self) -> Vec<u8> {
        match self {
            Hold::PartialHttp1Head => b"POST /batch HTTP/1.1\r\nHost: x\r\n".to_vec(),
            Hold::PartialH2Preface => H2_PREFACE[..14].to_vec(),
            Hold::IdleH2 => [H2_PREFACE, &H2_EMPTY_SETTINGS[..]].concat(),
        }
    }
}

/// Is the connection closed by the server (EOF or reset) within `wait`? Reads and
/// discards what the server sends meanwhile (its SETTINGS, a GOAWAY).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn open_holds(from: Ipv4Addr, server: SocketAddr, kinds: &[Hold]) -> Vec<(Hold, TcpStream)> {
    let mut held = Vec::new();
    for &kind in kinds {
        if let Ok(mut s) = connect_from(from, server).await {
            let _ = s.write_all(&kind.bytes()).await;
            held.push((kind, s));
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_connections_is_capped_and_a_second_client_is_still_stored() {
    let dir = tempfile::tempdir().unwrap();
    // Deadlines far beyond the test: only the per-client cap protects here.
    let collector = spawn_collector(
        dir.path(),
        &[
            "--max-connections",
            "64",
            "--max-connections-per-client",
            "12",
            "--header-timeout-secs",
            "120",
            "--idle-timeout-secs",
            "120",
        ],
    );
    let server = collector.addr;
    let attacker = loopback(1);
    let kinds: Vec<Hold> = [Hold::PartialHttp1Head, Hold::PartialH2Preface, Hold::IdleH2]
        .into_iter()
        .cycle()
        .take(40)
        .collect();
    let mut held = open_holds(attacker, server, &kinds).await;
    assert_eq!(
        held.len(),
        40,
        "the kernel accepts every connection; the collector decides"
    );

    // Give the collector time to decide, then see which are still open: the 12 it
    // admitted (their deadlines are far away); the 28 over the cap were closed at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut open = 0;
    for (_, s) in held.iter_mut() {
        if !closed_within(s, Duration::from_millis(500)).await {
            open += 1;
        }
    }
    eprintln!("attacker from {attacker}: {open} of 40 connections held, the rest closed by the collector");
    assert_eq!(open, 12, "--max-connections-per-client 12 must hold exactly 12");
    // An operator sees it: the 28 refusals are counted, by the cap that refused them.
    let observer = loopback(3);
    let refused = |cap: &str| format!(r#"hourofci_connections_refused_total{{listener="public",cap="{cap}"}}"#);
    assert_eq!(metric(observer, server, &refused("per_client")).await, Some(28.0));
    assert_eq!(metric(observer, server, &refused("global")).await, Some(0.0));
    let open_now = metric(observer, server, r#"hourofci_connections_open{listener="public"}"#)
        .await
        .unwrap();
    assert!(open_now >= 13.0, "12 held and the one asking: {open_now}");

    // A second client is served and stored while the attacker holds its 12.
    let (status, rows) = second_client_answer(dir.path(), server, loopback(2), Duration::from_secs(20)).await;
    assert_eq!(
        status,
        Some(201),
        "second client's POST; log:\n{}",
        collector.log_text()
    );
    assert_eq!(rows, 1, "the second client's answer is stored");
    let legacy = request_from(loopback(3), server, &get(&event_path(false, "legacy-get"), "")).await;
    assert_eq!(legacy.map(|r| r.status), Some(200));

    // New connections from the attacker are still refused while it holds its 12.
    let mut extra = connect_from(attacker, server).await.expect("connect");
    let _ = extra.write_all(&get("/", "")).await;
    assert!(
        closed_within(&mut extra, Duration::from_secs(10)).await,
        "a 13th connection from the attacker was kept"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_heads_partial_h2_prefaces_and_idle_h2_connections_are_closed_by_the_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    // The attacker takes every global slot (no per-client cap), so only the head
    // deadline and the idle timeout can free them. Before the fix, a partial HTTP/2
    // preface and an idle HTTP/2 connection were kept forever.
    let collector = spawn_collector(
        dir.path(),
        &[
            "--max-connections",
            "30",
            "--max-connections-per-client",
            "0",
            "--header-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "2",
        ],
    );
    let server = collector.addr;
    let kinds: Vec<Hold> = [Hold::PartialH2Preface, Hold::IdleH2, Hold::PartialHttp1Head]
        .into_iter()
        .cycle()
        .take(30)
        .collect();
    let started = Instant::now();
    let mut held = open_holds(loopback(1), server, &kinds).await;
    assert_eq!(held.len(), 30);

    // The second client gets in once the deadlines free slots (its retries are refused
    // while every slot is taken).
    let (status, rows) = second_client_answer(dir.path(), server, loopback(2), Duration::from_secs(30)).await;
    assert_eq!(
        status,
        Some(201),
        "second client's POST; log:\n{}",
        collector.log_text()
    );
    assert_eq!(rows, 1, "the second client's answer is stored");

    let mut still_open = Vec::new();
    for (kind, s) in held.iter_mut() {
        if !closed_within(s, Duration::from_secs(20)).await {
            still_open.push(*kind);
        }
    }
    eprintln!(
        "30 held connections: all closed after {:?} (deadlines 2 s)",
        started.elapsed()
    );
    assert!(still_open.is_empty(), "kept open past the deadlines: {still_open:?}");

    // A preface dripped one byte at a time is cut at the head deadline although bytes
    // keep coming (the old first-byte deadline was satisfied by the first one).
    let mut drip = connect_from(loopback(4), server).await.unwrap();
    let mut cut = false;
    for b in H2_PREFACE.iter().take(20) {
        if drip.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut drip, Duration::from_millis(500)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "a preface dripped one byte every 500 ms was kept for 10 s");

    // An operator sees why they were closed: 10 partial prefaces and the drip by the
    // head deadline (hyper's own header timeout may be first on partial HTTP/1 heads),
    // 10 idle HTTP/2 connections by the idle timeout.
    let closed = |reason: &str| format!(r#"hourofci_connections_closed_total{{listener="public",reason="{reason}"}}"#);
    let head = metric(loopback(5), server, &closed("head_timeout")).await.unwrap();
    let idle = metric(loopback(5), server, &closed("idle_timeout")).await.unwrap();
    assert!(
        head >= 11.0 && idle >= 10.0,
        "closed: {head} at the head deadline, {idle} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_on_the_admin_port_are_capped_and_leave_the_public_port_its_open_files() {
    let dir = tempfile::tempdir().unwrap();
    // The unit's LimitNOFILE scaled down to 256 open files. The admin listener shares
    // them with the public one: before it had caps of its own, the 300 connections
    // held below took every descriptor and the public port accepted nothing more.
    let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let args: Vec<String> = [
        "--sqlite-path",
        &dir.path().join("events.db").display().to_string(),
        "--admin-bind",
        &admin.to_string(),
        "--max-connections",
        "64",
        // Deadlines far beyond the test: only the caps protect here.
        "--header-timeout-secs",
        "120",
        "--idle-timeout-secs",
        "120",
    ]
    .map(String::from)
    .to_vec();
    let mut collector =
        CollectorProc::spawn_with_open_files(addr, &args, &dir.path().join("collector.log"), dir.path(), 256);
    collector.wait_serving(Duration::from_secs(60));

    let kinds: Vec<Hold> = [Hold::PartialHttp1Head, Hold::PartialH2Preface, Hold::IdleH2]
        .into_iter()
        .cycle()
        .take(30)
        .collect();
    let mut held = Vec::new();
    for attacker in 1..=10 {
        for (_, s) in open_holds(loopback(attacker), admin, &kinds).await {
            held.push((attacker, s));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut open_by_attacker = [0usize; 11];
    for (attacker, s) in held.iter_mut() {
        if !closed_within(s, Duration::from_millis(200)).await {
            open_by_attacker[*attacker as usize] += 1;
        }
    }
    let open: usize = open_by_attacker.iter().sum();
    eprintln!(
        "{} connections to the admin port from 10 addresses: {open} held ({open_by_attacker:?})",
        held.len()
    );
    assert_eq!(
        held.len(),
        300,
        "the kernel accepts every connection; the collector decides"
    );
    assert_eq!(open, 32, "the admin port holds at most 32 connections");
    assert!(
        open_by_attacker.iter().all(|&n| n <= 8),
        "at most 8 per client address: {open_by_attacker:?}"
    );

    // The public port still serves and stores answers.
    let (status, rows) = second_client_answer(dir.path(), addr, loopback(100), Duration::from_secs(20)).await;
    assert_eq!(status, Some(201), "public POST; log:\n{}", collector.log_text());
    assert_eq!(rows, 1, "the answer is stored");

    // Once the attackers let go, a scraper is served and sees what happened.
    drop(held);
    let refused = |cap: &str| format!(r#"hourofci_connections_refused_total{{listener="admin",cap="{cap}"}}"#);
    // (A scrape made before the collector has seen them go may itself be refused.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut turned_away = 0.0;
    let (per_client, global) = loop {
        let per_client = metric(loopback(101), admin, &refused("per_client")).await;
        let global = metric(loopback(101), admin, &refused("global")).await;
        if let (Some(p), Some(g)) = (per_client, global) {
            break (p, g);
        }
        turned_away += 2.0;
        assert!(
            Instant::now() < deadline,
            "the admin port does not serve /metrics again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counted = per_client + global;
    assert!(
        (268.0..=268.0 + turned_away).contains(&counted),
        "every refusal counted: {per_client} per client + {global} global, 268 refused to the attackers, {turned_away} scrapes tried early"
    );
    assert!(
        per_client > 0.0 && global > 0.0,
        "both caps refused some: {per_client}, {global}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_one_mib_bodies_stay_within_the_memory_budget_and_a_second_client_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    // Default budgets (64 MiB in all, 4 MiB per client); bodies may take 120 s, so
    // they are all still held while the memory is measured.
    let collector = spawn_collector(
        dir.path(),
        &["--body-timeout-secs", "120", "--header-timeout-secs", "60"],
    );
    let server = collector.addr;
    let baseline = collector.rss_kib();

    // 150 requests of 1 MiB from 30 addresses (5 each), every byte but the last sent.
    // A refusal comes right after the head (the budget is reserved before any body
    // byte is read), so each attacker waits a moment for one before sending its body.
    const BODY: usize = 1024 * 1024;
    let mut tasks = Vec::new();
    for i in 0..150usize {
        let from = loopback(10 + (i / 5) as u8);
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(from, server).await.ok()?;
            let head = format!(
                "POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                return Some(Attempt::Answered(parse_response(&buf[..n])));
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < BODY - 1 {
                let n = chunk.len().min(BODY - 1 - sent);
                if s.write_all(&chunk[..n]).await.is_err() {
                    return Some(Attempt::Closed);
                }
                sent += n;
            }
            if closed_within(&mut s, Duration::from_secs(2)).await {
                return Some(Attempt::Closed);
            }
            Some(Attempt::Held(s))
        }));
    }
    let mut held = Vec::new();
    let mut answers: Vec<RawResponse> = Vec::new();
    let mut closed = 0;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("attack bounded")
            .unwrap()
        {
            Some(Attempt::Held(s)) => held.push(s),
            Some(Attempt::Answered(Some(a))) => answers.push(a),
            _ => closed += 1,
        }
    }
    let rss = collector.rss_kib();
    let peak = peak_rss_kib(collector.pid());
    let statuses: std::collections::BTreeMap<u16, usize> = answers.iter().fold(Default::default(), |mut m, a| {
        *m.entry(a.status).or_default() += 1;
        m
    });
    eprintln!(
        "150 slow 1 MiB bodies: {} held unanswered, {closed} closed, answers {statuses:?}; RSS {} MiB -> {} MiB (peak {} MiB)",
        held.len(),
        baseline / 1024,
        rss / 1024,
        peak / 1024
    );
    assert!(
        peak < 128 * 1024,
        "peak RSS {} MiB while 150 slow bodies were held",
        peak / 1024
    );
    assert!(
        held.len() <= 64,
        "more bodies held than the 64 MiB budget allows: {}",
        held.len()
    );
    assert!(!held.is_empty(), "no body was admitted at all");
    let busy = answers
        .iter()
        .find(|a| a.status == 503)
        .expect("a 503 once the global budget is spent");
    assert_eq!(busy.json_error().expect("JSON error")["error"], "busy");
    assert!(busy.header("retry-after").is_some(), "503 without Retry-After");
    assert!(
        answers.iter().all(|a| a.status == 503 || a.status == 429),
        "unexpected answers {statuses:?}"
    );

    // A second client's answer is stored while the bodies are held.
    let (status, rows) = second_client_answer(dir.path(), server, loopback(2), Duration::from_secs(20)).await;
    assert_eq!(status, Some(201), "log:\n{}", collector.log_text());
    assert_eq!(rows, 1);
    // A body on a route that takes none is refused unread.
    let big = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {}\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n",
        event_path(false, "with-body"),
        Uuid::new_v4()
    );
    let r = request_from(loopback(3), server, big.as_bytes())
        .await
        .expect("an answer");
    assert_eq!(r.status, 413);
    assert_eq!(r.json_error().unwrap()["error"], "too_large");

    // Finishing a held body gets it read and handled: all spaces is not JSON, so the
    // batch handler answers 400.
    let mut s = held.pop().unwrap();
    s.write_all(b" ").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert_eq!(parse_response(&buf).map(|r| r.status), Some(400));
}

enum Attempt {
    /// Answered right after its head (refused).
    Answered(Option<RawResponse>),
    /// Closed without a readable answer.
    Closed,
    /// Body admitted and still being waited for.
    Held(TcpStream),
}

/// Highest resident memory of a process so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiter_at_capacity_never_lets_new_clients_through_unlimited() {
    let dir = tempfile::tempdir().unwrap();
    // Room for 3 clients; one token every 5 s, burst 3.
    let collector = spawn_collector(
        dir.path(),
        &[
            "--rate-limit-max-clients",
            "3",
            "--rate-limit-per-second",
            "0.2",
            "--rate-limit-burst",
            "3",
        ],
    );
    let server = collector.addr;
    // Three clients, each just limited (a token taken, not yet refilled).
    for last in [1, 11, 12] {
        assert_eq!(
            request_from(loopback(last), server, &get("/", ""))
                .await
                .map(|r| r.status),
            Some(200)
        );
    }
    // Full of clients that are being limited: a newcomer's 20 quick requests get no 200.
    let mut newcomer = Vec::new();
    for _ in 0..20 {
        newcomer.push(
            request_from(loopback(14), server, &get("/", ""))
                .await
                .expect("an answer"),
        );
    }
    let ok = newcomer.iter().filter(|r| r.status == 200).count();
    eprintln!("newcomer while the limiter is full: {ok} of 20 answered 200 (before: all 20)");
    assert_eq!(ok, 0, "a new client was let through while the limiter was full");
    let busy = &newcomer[0];
    assert_eq!(busy.status, 503);
    assert_eq!(busy.json_error().unwrap()["error"], "busy");
    assert!(busy.header("retry-after").is_some());

    // Once the others have gone quiet long enough to be indistinguishable from new
    // clients, they are evicted and the newcomer gets its own bucket: its burst and
    // no more.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let started = Instant::now();
    let mut later = Vec::new();
    for _ in 0..20 {
        later.push(
            request_from(loopback(14), server, &get("/", ""))
                .await
                .expect("an answer")
                .status,
        );
    }
    let ok = later.iter().filter(|s| **s == 200).count();
    let refilled = (started.elapsed().as_secs_f64() * 0.2).ceil() as usize;
    eprintln!("newcomer after eviction: {later:?}");
    assert!(
        ok >= 1 && ok <= 3 + refilled,
        "burst 3 (+{refilled}) expected: {later:?}"
    );
    assert!(later.iter().all(|s| *s == 200 || *s == 429), "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_ignored_from_untrusted_peers_and_honoured_from_a_trusted_cidr() {
    let dir = tempfile::tempdir().unwrap();
    let collector = spawn_collector(
        dir.path(),
        &[
            "--trusted-proxy",
            "127.0.0.2/31",
            "--rate-limit-per-second",
            "0.01",
            "--rate-limit-burst",
            "2",
        ],
    );
    let server = collector.addr;
    let mut status_of = Vec::new();
    // Untrusted peer 127.0.0.5 naming a new client in every request: still one client.
    for i in 0..6 {
        let r = request_from(
            loopback(5),
            server,
            &get("/", &format!("X-Forwarded-For: 203.0.113.{i}\r\n")),
        )
        .await
        .unwrap();
        status_of.push(r.status);
    }
    assert_eq!(
        status_of,
        [200, 200, 429, 429, 429, 429],
        "X-Forwarded-For from an untrusted peer must be ignored"
    );

    // Trusted proxy (127.0.0.3 is inside 127.0.0.2/31): each forwarded client has its own bucket.
    let distinct: Vec<u16> = futures_statuses(
        server,
        loopback(3),
        (0..6).map(|i| format!("X-Forwarded-For: 198.51.100.{i}\r\n")),
    )
    .await;
    assert!(distinct.iter().all(|s| *s == 200), "{distinct:?}");
    // One forwarded client is limited, whichever trusted proxy it comes through,
    // and entries it wrote itself (left of the proxy's) do not change that.
    let one: Vec<u16> = futures_statuses(
        server,
        loopback(2),
        (0..5).map(|i| format!("X-Forwarded-For: 10.9.9.{i}, 198.51.100.200, 127.0.0.3\r\n")),
    )
    .await;
    assert_eq!(one, [200, 200, 429, 429, 429], "{one:?}");
    // An untrusted peer cannot borrow a forwarded client's bucket or escape its own.
    let r = request_from(loopback(6), server, &get("/", "X-Forwarded-For: 198.51.100.200\r\n"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "127.0.0.6 is its own client");
}

async fn futures_statuses(server: SocketAddr, from: Ipv4Addr, headers: impl Iterator<Item = String>) -> Vec<u16> {
    let mut out = Vec::new();
    for h in headers {
        out.push(
            request_from(from, server, &get("/", &h))
                .await
                .expect("an answer")
                .status,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_http2_clients_are_served_across_the_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    // Short deadlines: a live HTTP/2 connection must outlive the head deadline, and
    // only be closed when it has been idle.
    let collector = spawn_collector(
        dir.path(),
        &[
            "--header-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "3",
            "--http2-max-streams",
            "4",
        ],
    );
    let base = format!("http://{}", collector.addr);
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        // Ten requests at once over one connection with at most 4 streams in flight.
        let sends = (0..10).map(|i| {
            let id = Uuid::new_v4();
            ids.push(id);
            client
                .post(format!("{base}{}", event_path(false, &format!("h2-{round}-{i}"))))
                .header("Idempotency-Key", id.to_string())
                .send()
        });
        for res in futures_join(sends).await {
            let res = res.expect("HTTP/2 request");
            assert_eq!(res.version(), reqwest::Version::HTTP_2);
            assert_eq!(res.status(), 201);
        }
        // Past the head deadline, within the idle timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let batch = client
        .post(format!("{base}/batch"))
        .header("Content-Type", "application/json")
        .body(r#"{"events":[]}"#)
        .send()
        .await
        .expect("HTTP/2 batch");
    assert_eq!(batch.status(), 200);
    for id in ids {
        assert_eq!(stored(dir.path(), id).await, 1);
    }
}

async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_answers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let collector = spawn_collector(
        dir.path(),
        &["--idle-timeout-secs", "2", "--rate-limit-per-second", "0"],
    );
    let server = collector.addr;
    // A tiny receive window, then 40 000 pipelined requests whose answers it never
    // reads: the collector's writes block once both socket buffers are full.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((loopback(7), 0))).unwrap();
    let mut s = socket.connect(server).await.unwrap();
    let pipelined = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40_000);
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.write_all(&pipelined)).await;
    // Without reading a byte, keep poking until a write fails: the collector has
    // closed the connection (RST once our unread requests meet a closed socket).
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match tokio::time::timeout(
            Duration::from_secs(1),
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await
        {
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => continue,
        }
    }
    eprintln!(
        "client not reading: disconnected after {:?} (idle timeout 2 s)",
        started.elapsed()
    );
    assert!(
        closed,
        "a client that never reads its answers kept its connection for 40 s"
    );
    // Everyone else is served.
    let (status, rows) = second_client_answer(dir.path(), server, loopback(2), Duration::from_secs(20)).await;
    assert_eq!((status, rows), (Some(201), 1));
    // And the operator sees why that connection went.
    let series = r#"hourofci_connections_closed_total{listener="public",reason="stopped_reading"}"#;
    assert_eq!(metric(loopback(3), server, series).await, Some(1.0));
}
