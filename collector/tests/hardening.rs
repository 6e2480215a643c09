//! The public endpoint's defences, each checked against the real collector over real
//! sockets: per-client rate limit, CORS only for `--allow-origin`, slow clients cut
//! off, a connection cap, TLS certificate replaced without a restart, the database
//! password kept out of logs, answers and the process list, and a writer role that
//! cannot read, change or delete learners' rows with the collector's own credentials.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use uuid::Uuid;

fn get_with(addr: SocketAddr, path: &str, headers: &str) -> RawResponse {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    )
    .expect("an answer")
}

// ---------------------------------------------------------------------------------
// Rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_per_client_address() {
    let (app, _db) = spawn_sqlite_app(&["--rate-limit-per-second", "2", "--rate-limit-burst", "10"]).await;
    let server = app.server;
    let addr = server.local_addr();
    let (statuses, limited, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        // Spoofed X-Forwarded-For is ignored without --trust-proxy: all one client.
        let answers: Vec<RawResponse> = (0..30)
            .map(|i| get_with(addr, "/", &format!("X-Forwarded-For: 198.51.100.{i}\r\n")))
            .collect();
        let took = started.elapsed();
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        let limited = answers.into_iter().find(|r| r.status == 429);
        (statuses, limited, took)
    })
    .await
    .unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!("rate limit 2/s burst 10: {ok} of 30 answered 200 in {took:?}, the rest 429");
    // The burst, plus what refilled at 2/s while the 30 requests were being sent.
    let refilled = (took.as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        ok >= 10 && ok <= 10 + refilled,
        "burst of 10 (+{refilled} refilled) expected, got {ok}: {statuses:?}"
    );
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    let limited = limited.expect("a 429");
    let retry: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(limited.json_error().expect("JSON error body")["error"], "rate_limited");
    // Honouring Retry-After works.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = tokio::task::spawn_blocking(move || get_with(addr, "/", ""))
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    // The 429s are counted.
    let metrics = tokio::task::spawn_blocking(move || get_with(addr, "/metrics", ""))
        .await
        .unwrap()
        .text();
    assert!(metrics.lines().any(|l| l.contains("429")), "429s missing from /metrics");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_proxy_keys_the_limit_on_the_last_forwarded_address() {
    let (app, _db) = spawn_sqlite_app(&[
        "--rate-limit-per-second",
        "0.2",
        "--rate-limit-burst",
        "3",
        "--trust-proxy",
    ])
    .await;
    let server = app.server;
    let addr = server.local_addr();
    let (distinct, same, spoofed_left) = tokio::task::spawn_blocking(move || {
        let distinct: Vec<u16> = (0..20)
            .map(|i| get_with(addr, "/", &format!("X-Forwarded-For: 203.0.113.{i}\r\n")).status)
            .collect();
        let same: Vec<u16> = (0..10)
            .map(|_| get_with(addr, "/", "X-Forwarded-For: 192.0.2.50\r\n").status)
            .collect();
        // A client prepending its own entries does not get a fresh bucket: the proxy's
        // (right-most) entry is what counts.
        let spoofed_left: Vec<u16> = (0..10)
            .map(|i| get_with(addr, "/", &format!("X-Forwarded-For: 10.9.9.{i}, 192.0.2.60\r\n")).status)
            .collect();
        (distinct, same, spoofed_left)
    })
    .await
    .unwrap();
    assert!(
        distinct.iter().all(|s| *s == 200),
        "each forwarded client has its own bucket: {distinct:?}"
    );
    assert!(
        same.iter().filter(|s| **s == 429).count() >= 6,
        "one forwarded client is limited: {same:?}"
    );
    assert!(
        spoofed_left.iter().filter(|s| **s == 429).count() >= 6,
        "left entries must not pick the bucket: {spoofed_left:?}"
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// CORS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_only_for_allowed_origins() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let allowed = "https://lessons.example.org";
    let with = spawn_app(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--allow-origin",
        allowed,
        "--rate-limit-per-second",
        "0",
    ])
    .await
    .server;
    let db2 = dir.path().join("e2.db");
    let without = spawn_app(&["--sqlite-path", db2.to_str().unwrap(), "--rate-limit-per-second", "0"])
        .await
        .server;
    let (a, b) = (with.local_addr(), without.local_addr());
    tokio::task::spawn_blocking(move || {
        let preflight = |addr, origin: &str| {
            raw_request(
                addr,
                format!(
                    "OPTIONS /batch HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                     Access-Control-Request-Headers: content-type, idempotency-key, x-client-time\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
                Duration::from_secs(10),
            )
            .unwrap()
        };
        let ok = preflight(a, allowed);
        assert_eq!(ok.header("access-control-allow-origin"), Some(allowed), "{ok:?}");
        let methods = ok.header("access-control-allow-methods").unwrap_or_default().to_uppercase();
        assert!(methods.contains("POST"), "{ok:?}");
        let headers = ok.header("access-control-allow-headers").unwrap_or_default().to_lowercase();
        assert!(headers.contains("idempotency-key") && headers.contains("x-client-time"), "{ok:?}");

        for origin in ["https://evil.example", "https://lessons.example.org.evil.example", "null", "http://lessons.example.org"] {
            let r = preflight(a, origin);
            assert_eq!(r.header("access-control-allow-origin"), None, "{origin}: {r:?}");
            let r = get_with(a, "/", &format!("Origin: {origin}\r\n"));
            assert_eq!(r.header("access-control-allow-origin"), None, "{origin}: {r:?}");
        }
        // A real request from the allowed origin carries the header, and exposes Retry-After.
        let r = get_with(a, "/", &format!("Origin: {allowed}\r\n"));
        assert_eq!(r.header("access-control-allow-origin"), Some(allowed));
        // No --allow-origin: no CORS headers for anyone.
        let r = preflight(b, allowed);
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
        let r = get_with(b, "/", &format!("Origin: {allowed}\r\n"));
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    })
    .await
    .unwrap();
    with.shutdown().await.unwrap();
    without.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Slow clients and the connection cap

/// Read until the server closes the connection; how long that took, or None if it
/// was still open after `limit` while we kept sending `drip` every 500 ms.
fn time_until_closed(s: &mut TcpStream, drip: &[u8], limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !drip.is_empty() && s.write_all(drip).is_err() {
                    return (Some(start.elapsed()), got);
                }
            }
            Err(_) => return (Some(start.elapsed()), got),
        }
    }
    (None, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let (app, _db) = spawn_sqlite_app(&[
        "--rate-limit-per-second",
        "0",
        "--header-timeout-secs",
        "2",
        "--body-timeout-secs",
        "2",
    ])
    .await;
    let server = app.server;
    let addr = server.local_addr();
    tokio::task::spawn_blocking(move || {
        // Headers dribbled one byte every 500 ms.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let (closed, _) = time_until_closed(&mut s, b"X", Duration::from_secs(20));
        eprintln!("slow headers: connection closed after {closed:?}");
        assert!(
            closed.is_some(),
            "a client dribbling headers kept its connection for 20 s"
        );

        // A connection that never says anything.
        let mut s = TcpStream::connect(addr).unwrap();
        let (closed, _) = time_until_closed(&mut s, b"", Duration::from_secs(20));
        eprintln!("silent connection: closed after {closed:?}");
        assert!(closed.is_some(), "a silent connection was kept for 20 s");

        // Idle on a keep-alive connection after one complete request.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (closed, got) = time_until_closed(&mut s, b"", Duration::from_secs(20));
        eprintln!("idle keep-alive connection: closed after {closed:?}");
        assert_eq!(parse_response(&got).map(|r| r.status), Some(200));
        assert!(closed.is_some(), "an idle keep-alive connection was kept for 20 s");

        // Body dribbled one byte every 500 ms: 408 with the JSON reason.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .unwrap();
        let (closed, got) = time_until_closed(&mut s, b" ", Duration::from_secs(20));
        let res = parse_response(&got);
        eprintln!(
            "slow body: closed after {closed:?}, answer {:?}",
            res.as_ref().map(|r| (r.status, r.text()))
        );
        assert!(
            closed.is_some(),
            "a client dribbling its body kept the connection for 20 s"
        );
        let res = res.expect("an answer before closing");
        assert_eq!(res.status, 408);
        assert_eq!(res.json_error().expect("JSON body")["field"], "body");

        // Everyone else is still served.
        assert_eq!(get_with(addr, "/healthz", "").status, 200);
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let (app, _db) = spawn_sqlite_app(&[
        "--rate-limit-per-second",
        "0",
        "--max-connections",
        "4",
        "--header-timeout-secs",
        "30",
    ])
    .await;
    let server = app.server;
    let addr = server.local_addr();
    tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        // The fifth is accepted by the kernel, then closed by the collector unanswered.
        let over = raw_request(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(over.is_none(), "a fifth connection was served: {over:?}");
        // The held ones are served.
        let s = &mut held[0];
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read_to_end(&mut buf);
        assert_eq!(parse_response(&buf).map(|r| r.status), Some(200));
        // Closing connections makes room again.
        held.clear();
        assert!(
            wait_for_status(addr, "/", 200, Duration::from_secs(10)),
            "no room after connections closed"
        );
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// TLS certificate replaced without a restart

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn ca_and_leaves() -> (rcgen::Certificate, Leaf, Leaf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hourofci test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    };
    let (a, b) = (leaf("first"), leaf("renewed"));
    (ca, a, b)
}

/// A fresh TLS connection that verifies the server against `ca`; returns the
/// certificate the server showed and the HTTP answer to `GET /`.
fn https_get_root(addr: SocketAddr, ca: &rcgen::Certificate) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let peer = tls.conn.peer_certificates().expect("server certificate")[0].to_vec();
    (peer, String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_replaced_on_disk_is_served_to_new_connections_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, first, renewed) = ca_and_leaves();
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let db = dir.path().join("e.db");
    let server = spawn_app(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--rate-limit-per-second",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-reload-secs",
        "1",
    ])
    .await
    .server;
    assert!(server.url().starts_with("https://"));
    let addr = server.local_addr();
    let ca = Arc::new(ca);
    let ca2 = ca.clone();
    let seen_after = tokio::task::spawn_blocking(move || {
        let (peer, answer) = https_get_root(addr, &ca2);
        assert!(peer == first.der, "the first certificate is served");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("Hello World!"),
            "{answer}"
        );
        // What certbot does: new key and certificate written in place.
        std::fs::write(&key, &renewed.key_pem).unwrap();
        std::fs::write(&cert, &renewed.cert_pem).unwrap();
        let replaced = Instant::now();
        loop {
            let (peer, answer) = https_get_root(addr, &ca2);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            if peer == renewed.der {
                return replaced.elapsed();
            }
            assert!(peer == first.der, "an unexpected certificate");
            assert!(
                replaced.elapsed() < Duration::from_secs(20),
                "the renewed certificate was not picked up"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    eprintln!("renewed certificate served to new connections {seen_after:?} after the files changed");
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Secrets and privacy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_password_never_appears_in_logs_answers_or_the_process_list() {
    let mut pg = Pg::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{}\n", pg.db.writer_url)).unwrap();
    let password = pg.db.writer_password.clone();
    let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let log = dir.path().join("collector.log");
    let args: Vec<String> = [
        "--database-url-file",
        url_file.to_str().unwrap(),
        "--rate-limit-per-second",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut bodies = String::new();

    // Debug logging on purpose: what an operator turns on when something is wrong.
    let mut proc = CollectorProc::spawn_full(addr, &args, &log, dir.path(), None, "debug");
    proc.wait_serving(Duration::from_secs(30));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", proc.pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&password),
        "password in the process list"
    );
    let event = |addr| {
        raw_request(
            addr,
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                event_path(false, "x"),
                Uuid::new_v4()
            )
            .as_bytes(),
            Duration::from_secs(20),
        )
        .expect("answer")
    };
    let ok = event(addr);
    assert_eq!(ok.status, 201);
    bodies.push_str(&ok.text());

    // Database down: every answer is a 503, nothing leaks.
    tokio::task::block_in_place(|| pg.cluster.stop_server().unwrap());
    for path in ["/healthz", "/metrics", "/"] {
        bodies.push_str(&get_with(addr, path, "").text());
    }
    let down = event(addr);
    assert_eq!(down.status, 503);
    bodies.push_str(&down.text());
    tokio::task::block_in_place(|| pg.cluster.start_server().unwrap());
    proc.signal(libc::SIGTERM);
    assert!(proc.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));

    // Wrong password (authentication fails): the attempted password must not leak either.
    let wrong = format!("wrong-{}", Uuid::new_v4().simple());
    std::fs::write(&url_file, pg.db.writer_url.replace(&password, &wrong)).unwrap();
    let mut proc = CollectorProc::spawn_full(addr, &args, &log, dir.path(), None, "debug");
    proc.wait_serving(Duration::from_secs(30));
    let refused = event(addr);
    assert_eq!(refused.status, 503);
    bodies.push_str(&refused.text());
    bodies.push_str(&get_with(addr, "/healthz", "").text());
    proc.signal(libc::SIGTERM);
    assert!(proc.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));

    // A malformed URL on the command line, and `migrate` against a closed port.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &format!("postgres://u:{password}@[::1/db"),
        ])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
        .args([
            "migrate",
            "--database-url",
            &format!("postgres://admin:{password}@127.0.0.1:{}/db", testkit::free_port()),
        ])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!bad.status.success() && !migrate.status.success());
    let mut logs = proc.log_text();
    for out in [&bad, &migrate] {
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    eprintln!(
        "{} bytes of logs and {} bytes of answers checked",
        logs.len(),
        bodies.len()
    );
    assert!(
        logs.contains("503") || logs.contains("group commit failed") || logs.contains("health check failed"),
        "the failures were not logged at all:\n{logs}"
    );
    for secret in [&password, &wrong] {
        assert!(!logs.contains(secret.as_str()), "password in the logs:\n{logs}");
        assert!(!bodies.contains(secret.as_str()), "password in an answer:\n{bodies}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_role_cannot_read_change_or_delete_rows_with_the_collectors_own_url() {
    use sqlx::Connection;
    let pg = Pg::start().await;
    let url = pg.db.writer_url.clone();
    let server = spawn_app(&["--database-url", &url, "--rate-limit-per-second", "0"])
        .await
        .server;
    let addr = server.local_addr();
    let id = Uuid::new_v4();
    let res = tokio::task::spawn_blocking(move || {
        raw_request(
            addr,
            format!("POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {id}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", event_path(false, "secret answer")).as_bytes(),
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap()
    .expect("answer");
    assert_eq!(res.status, 201);
    let before = pg.sql("SELECT count(*), string_agg(answer, ',') FROM loggingtable");

    // Exactly the credentials the collector runs with.
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("writer connects");
    let attempts = [
        "SELECT * FROM loggingtable",
        "SELECT answer FROM public.loggingtable_test",
        "SELECT count(*) FROM loggingtable",
        "UPDATE loggingtable SET answer = 'changed'",
        "DELETE FROM loggingtable",
        "TRUNCATE loggingtable",
        "INSERT INTO loggingtable (answer) VALUES ('forged')",
        "COPY loggingtable TO STDOUT",
        "ALTER TABLE loggingtable ADD COLUMN x int",
        "DROP TABLE loggingtable",
        "CREATE TABLE public.stolen AS SELECT * FROM loggingtable",
        "CREATE TEMP TABLE loggingtable (answer text)",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "GRANT SELECT ON loggingtable TO PUBLIC",
        "SET ROLE postgres",
    ];
    let mut allowed = Vec::new();
    for sql in attempts {
        match sqlx::raw_sql(sql).execute(&mut conn).await {
            Ok(_) => allowed.push(sql),
            Err(e) => {
                let code = e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned()));
                eprintln!("{sql:<60} -> {}", code.as_deref().unwrap_or("?"));
                // 42501 insufficient_privilege; SET ROLE: 42501 too ("permission denied to set role").
                assert_eq!(code.as_deref(), Some("42501"), "{sql}: {e}");
            }
        }
    }
    assert!(allowed.is_empty(), "the writer role may run: {allowed:?}");
    // What it may do: write through the functions, which return nothing readable.
    let written: bool =
        sqlx::query_scalar("SELECT log_event(false, $1, now(), 'ua', 'gateway', 'beginner', '1A', 'via function')")
            .bind(Uuid::new_v4())
            .fetch_one(&mut conn)
            .await
            .expect("log_event is granted");
    assert!(written);
    conn.close().await.unwrap();
    let after = pg.sql("SELECT count(*), string_agg(answer, ',') FROM loggingtable WHERE answer <> 'via function'");
    assert_eq!(after, before, "rows changed");
    // Nothing about the learner beyond the contract: no client address in any column.
    let rows = pg.sql("SELECT row_to_json(t)::text FROM loggingtable t");
    assert!(!rows.contains("127.0.0.1"), "a client address is stored: {rows}");
    server.shutdown().await.unwrap();
}
