//! What every browser and scanner sees of the collector, over real HTTP on loopback:
//! the two CORS rules (legacy GET routes `*` by default, SDK routes `--allow-origin`
//! with `https://*.domain` patterns), `HEAD` never writing (SQLite and PostgreSQL),
//! `X-Content-Type-Options: nosniff` on every answer, `/sdk/` serving only regular
//! files inside its folder, and `--admin-bind` moving `/metrics` off the public port.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{raw_request, serve_args, spawn_app, spawn_sqlite_app, RawResponse, UA};
use uuid::Uuid;

const EVENT: &str = "gateway/beginner/1A/true";

async fn start(args: &[&str]) -> hourofci_collector::RunningServer {
    spawn_app(args).await.server
}

/// One request with `Connection: close`, off the async runtime (blocking socket).
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || raw_request(addr, req.as_bytes(), Duration::from_secs(20)).expect("an answer"))
        .await
        .unwrap()
}

/// Method, path, headers, expected status.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16);

fn acao(r: &RawResponse) -> Option<&str> {
    r.header("access-control-allow-origin")
}

async fn sqlite_count(db: &std::path::Path, table: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let n = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

// ---------------------------------------------------------------------------------
// CORS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_gets_answer_any_origin_while_sdk_routes_follow_allow_origin_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let sdk = dir.path().join("sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    std::fs::write(sdk.join("hourofci-log.js"), "export {}").unwrap();
    let server = start(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--sdk-dir",
        sdk.to_str().unwrap(),
        "--rate-limit-per-second",
        "0",
        "--allow-origin",
        "https://*.mybinder.org,https://lab.example.org",
    ])
    .await;
    let a = server.local_addr();
    let legacy = format!("/{UA}/{EVENT}");

    // An old lesson's jQuery GET, from any page (or none): 200 and `*`, as the original.
    for origin in [Some("https://anything.example"), Some("null"), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let r = send(a, "GET", &legacy, &headers).await;
        assert_eq!(
            (r.status, acao(&r)),
            (200, Some("*")),
            "legacy GET from {origin:?}: {r:?}"
        );
    }
    let r = send(
        a,
        "GET",
        &format!("/test/{UA}/{EVENT}"),
        &[("Origin", "https://anything.example")],
    )
    .await;
    assert_eq!((r.status, acao(&r)), (200, Some("*")), "{r:?}");
    // An invalid legacy value: the lesson can read the 404 too (no opaque failure).
    let r = send(
        a,
        "GET",
        &format!("/{UA}/no-such-lesson/beginner/1A/x"),
        &[("Origin", "https://anything.example")],
    )
    .await;
    assert_eq!((r.status, acao(&r)), (404, Some("*")), "{r:?}");
    // The preflight a legacy GET with custom headers would need follows the legacy rule.
    let r = send(
        a,
        "OPTIONS",
        &legacy,
        &[
            ("Origin", "https://anything.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(acao(&r), Some("*"), "{r:?}");
    assert_eq!(
        sqlite_count(&db, "loggingtable").await,
        3,
        "three legacy GETs wrote three rows"
    );

    // The SDK's POST preflight on the same path follows --allow-origin, patterns included.
    let preflight = |origin: &'static str, path: String| async move {
        send(
            a,
            "OPTIONS",
            &path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type, idempotency-key, x-client-time",
                ),
            ],
        )
        .await
    };
    for origin in [
        "https://hub.mybinder.org",
        "https://gke.a-b.mybinder.org",
        "https://lab.example.org",
    ] {
        for path in [legacy.clone(), "/batch".to_string()] {
            let r = preflight(origin, path.clone()).await;
            assert_eq!(acao(&r), Some(origin), "{origin} {path}: {r:?}");
            let allowed = r
                .header("access-control-allow-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(
                allowed.contains("idempotency-key") && allowed.contains("x-client-time"),
                "{r:?}"
            );
        }
    }
    for origin in [
        "https://evil.mybinder.org.attacker.com",
        "https://mybinder.org",
        "http://hub.mybinder.org",
        "https://hub.mybinder.org:8443",
        "https://evilmybinder.org",
        "https://lab.example.org.evil.example",
        "null",
    ] {
        for path in [legacy.clone(), "/batch".to_string()] {
            let r = preflight(origin, path.clone()).await;
            assert_eq!(acao(&r), None, "{origin} {path}: {r:?}");
        }
        let r = send(a, "GET", "/sdk/hourofci-log.js", &[("Origin", origin)]).await;
        assert_eq!((r.status, acao(&r)), (200, None), "{origin}: {r:?}");
    }
    // Real SDK requests from a matching origin carry the header (and Vary: Origin).
    let id = Uuid::new_v4().to_string();
    let r = send(
        a,
        "POST",
        &legacy,
        &[
            ("Origin", "https://x.mybinder.org"),
            ("Idempotency-Key", &id),
            ("Content-Length", "0"),
        ],
    )
    .await;
    assert_eq!((r.status, acao(&r)), (201, Some("https://x.mybinder.org")), "{r:?}");
    assert!(
        r.header("vary")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("origin"),
        "{r:?}"
    );
    let r = send(
        a,
        "GET",
        "/sdk/hourofci-log.js",
        &[("Origin", "https://x.mybinder.org")],
    )
    .await;
    assert_eq!((r.status, acao(&r)), (200, Some("https://x.mybinder.org")), "{r:?}");
    let r = send(
        a,
        "POST",
        &legacy,
        &[
            ("Origin", "https://evil.mybinder.org.attacker.com"),
            ("Idempotency-Key", &Uuid::new_v4().to_string()),
            ("Content-Length", "0"),
        ],
    )
    .await;
    assert_eq!(acao(&r), None, "{r:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_allow_origin_restricts_only_the_legacy_routes() {
    let (app, db) = spawn_sqlite_app(&[
        "--rate-limit-per-second",
        "0",
        "--legacy-allow-origin",
        "https://*.hourofci.org",
    ])
    .await;
    let server = app.server;
    let a = server.local_addr();
    let legacy = format!("/{UA}/{EVENT}");
    let r = send(a, "GET", &legacy, &[("Origin", "https://jupyter.hourofci.org")]).await;
    assert_eq!(
        (r.status, acao(&r)),
        (200, Some("https://jupyter.hourofci.org")),
        "{r:?}"
    );
    let r = send(
        a,
        "GET",
        &legacy,
        &[("Origin", "https://jupyter.hourofci.org.attacker.com")],
    )
    .await;
    assert_eq!(acao(&r), None, "{r:?}");
    // The simple GET is written anyway (CORS only hides the answer): that is why the
    // default is `*`.
    assert_eq!(r.status, 200);
    assert_eq!(sqlite_count(&db.path, "loggingtable").await, 2);
    // The SDK routes have no --allow-origin here: no CORS headers, even for that origin.
    let r = send(
        a,
        "OPTIONS",
        "/batch",
        &[
            ("Origin", "https://jupyter.hourofci.org"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .await;
    assert_eq!(acao(&r), None, "{r:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_origin_rules_stop_the_collector_from_starting() {
    for (flag, value) in [
        ("--allow-origin", "https://*.org"),
        ("--allow-origin", "https://a.*.example.org"),
        ("--legacy-allow-origin", "*.example.org"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let err = hourofci_collector::start(&serve_args(&[
            "--bind",
            "127.0.0.1:0",
            "--sqlite-path",
            db.to_str().unwrap(),
            flag,
            value,
        ]))
        .await
        .err()
        .unwrap_or_else(|| panic!("{flag} {value} was accepted"));
        assert!(err.to_string().contains(flag.trim_start_matches('-')), "{err:#}");
    }
}

// ---------------------------------------------------------------------------------
// HEAD never writes

/// HEAD on valid and invalid legacy paths: the GET's status, no body, no row; then
/// one GET to show the same path does write.
async fn head_then_get(a: SocketAddr) -> Vec<u16> {
    let mut statuses = Vec::new();
    for path in [
        format!("/{UA}/{EVENT}"),
        format!("/test/{UA}/{EVENT}"),
        format!("/{UA}/no-such-lesson/beginner/1A/x"),
    ] {
        let r = send(a, "HEAD", &path, &[]).await;
        assert!(r.body.is_empty(), "a HEAD answer has no body: {r:?}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        statuses.push(r.status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_legacy_paths_never_writes_sqlite() {
    let (app, db) = spawn_sqlite_app(&["--rate-limit-per-second", "0"]).await;
    let server = app.server;
    let a = server.local_addr();
    assert_eq!(head_then_get(a).await, [200, 200, 404]);
    assert_eq!(
        (
            sqlite_count(&db.path, "loggingtable").await,
            sqlite_count(&db.path, "loggingtable_test").await
        ),
        (0, 0),
        "HEAD wrote a row"
    );
    assert_eq!(send(a, "GET", &format!("/{UA}/{EVENT}"), &[]).await.status, 200);
    assert_eq!(
        sqlite_count(&db.path, "loggingtable").await,
        1,
        "the same path by GET writes"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_legacy_paths_never_writes_postgres() {
    let db = common::fresh_db(&common::PG).await;
    let server = start(&["--database-url", &db.writer_url, "--rate-limit-per-second", "0"]).await;
    let a = server.local_addr();
    assert_eq!(head_then_get(a).await, [200, 200, 404]);
    assert_eq!(
        (
            common::count(&db.admin, "loggingtable").await,
            common::count(&db.admin, "loggingtable_test").await
        ),
        (0, 0)
    );
    assert_eq!(send(a, "GET", &format!("/{UA}/{EVENT}"), &[]).await.status, 200);
    assert_eq!(common::count(&db.admin, "loggingtable").await, 1);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// nosniff

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_says_nosniff_including_errors_and_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let sdk = dir.path().join("sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    std::fs::write(sdk.join("hourofci-log.js"), "export {}").unwrap();
    let server = start(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--sdk-dir",
        sdk.to_str().unwrap(),
        "--allow-origin",
        "https://lab.example.org",
        "--rate-limit-per-second",
        "0.01",
        "--rate-limit-burst",
        "14",
        "--max-answer-bytes",
        "100",
    ])
    .await;
    let a = server.local_addr();
    let long = format!("/{UA}/gateway/beginner/1A/{}", "a".repeat(5_000));
    let cases: Vec<Case> = vec![
        ("GET", "/".into(), vec![], 200),
        ("GET", "/healthz".into(), vec![], 200),
        ("GET", "/metrics".into(), vec![], 200),
        ("GET", format!("/{UA}/{EVENT}"), vec![], 200),
        ("GET", format!("/{UA}/nope/beginner/1A/x"), vec![], 404),
        ("GET", "/no/such/route".into(), vec![], 404),
        ("GET", "/sdk/hourofci-log.js".into(), vec![], 200),
        ("GET", "/sdk/missing.js".into(), vec![], 404),
        ("DELETE", "/batch".into(), vec![], 405),
        ("POST", format!("/{UA}/{EVENT}"), vec![("Content-Length", "0")], 400),
        (
            "POST",
            "/batch".into(),
            vec![("Content-Type", "text/plain"), ("Content-Length", "0")],
            415,
        ),
        ("GET", long, vec![], 414),
        (
            "OPTIONS",
            "/batch".into(),
            vec![
                ("Origin", "https://lab.example.org"),
                ("Access-Control-Request-Method", "POST"),
            ],
            200,
        ),
        ("HEAD", "/".into(), vec![], 200),
    ];
    let mut failures = Vec::new();
    for (method, path, headers, want) in &cases {
        let r = send(a, method, path, headers).await;
        if r.status != *want || r.header("x-content-type-options") != Some("nosniff") {
            failures.push(format!(
                "{method} {:.60}: {} (want {want}), nosniff {:?}",
                path,
                r.status,
                r.header("x-content-type-options")
            ));
        }
    }
    // Spend the rest of the burst of 14: the rate limiter's own 429 carries it too.
    let mut r = send(a, "GET", "/", &[]).await;
    for _ in 0..20 {
        if r.status == 429 {
            break;
        }
        r = send(a, "GET", "/", &[]).await;
    }
    if r.status != 429 || r.header("x-content-type-options") != Some("nosniff") {
        failures.push(format!(
            "rate-limited GET /: {} nosniff {:?}",
            r.status,
            r.header("x-content-type-options")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// /sdk/ files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_serves_only_regular_files_inside_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let sdk = dir.path().join("sdk");
    std::fs::create_dir_all(sdk.join("snippets/sub")).unwrap();
    std::fs::write(sdk.join("hourofci-log.js"), "export const sdk = 1;\n").unwrap();
    std::fs::write(sdk.join("snippets/sub/part.js"), "export const part = 2;\n").unwrap();
    std::fs::write(sdk.join("snippets/index.html"), "<p>index</p>").unwrap();
    std::fs::write(sdk.join(".secret"), "TOP-SECRET-DOTFILE").unwrap();
    std::fs::create_dir_all(sdk.join(".git")).unwrap();
    std::fs::write(sdk.join(".git/config"), "TOP-SECRET-GIT").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "TOP-SECRET-OUTSIDE").unwrap();
    let link = |target: &std::path::Path, name: &str| std::os::unix::fs::symlink(target, sdk.join(name)).unwrap();
    link(std::path::Path::new("/etc/passwd"), "passwd.js");
    link(std::path::Path::new("/etc"), "etc");
    link(&dir.path().join("outside.txt"), "outside.js");
    link(std::path::Path::new(".secret"), "secret.js");
    link(std::path::Path::new("hourofci-log.js"), "latest.js"); // inside: allowed
    let server = start(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--sdk-dir",
        sdk.to_str().unwrap(),
        "--rate-limit-per-second",
        "0",
    ])
    .await;
    let a = server.local_addr();

    for (path, body) in [
        ("/sdk/hourofci-log.js", "export const sdk = 1;\n"),
        ("/sdk/latest.js", "export const sdk = 1;\n"),
        ("/sdk/snippets/sub/part.js", "export const part = 2;\n"),
    ] {
        let r = send(a, "GET", path, &[]).await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}: {r:?}");
        assert!(
            r.header("content-type").unwrap_or_default().contains("javascript"),
            "{path}: {r:?}"
        );
    }
    let refused = [
        "/sdk/.secret",
        "/sdk/%2esecret",
        "/sdk/.git/config",
        "/sdk/secret.js",
        "/sdk/passwd.js",
        "/sdk/etc/passwd",
        "/sdk/outside.js",
        "/sdk/snippets",
        "/sdk/snippets/",
        "/sdk/snippets/sub/",
        "/sdk/",
        "/sdk",
        "/sdk/./hourofci-log.js",
        "/sdk/snippets/../hourofci-log.js",
        "/sdk/snippets/..%2f..%2foutside.txt",
        "/sdk/%2e%2e/outside.txt",
        "/sdk/snippets//sub/part.js",
    ];
    for path in refused {
        for method in ["GET", "HEAD"] {
            let r = send(a, method, path, &[]).await;
            let text = r.text();
            assert!(
                (400..500).contains(&r.status)
                    && !text.contains("TOP-SECRET")
                    && !text.contains("root:")
                    && !text.contains("index"),
                "{method} {path} must be refused: {} {text:.200}",
                r.status
            );
        }
    }
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// --admin-bind

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bind_serves_metrics_off_the_public_port() {
    let (app, db) = spawn_sqlite_app(&["--rate-limit-per-second", "0", "--admin-bind", "127.0.0.1:0"]).await;
    let server = app.server;
    let public = server.local_addr();
    let admin: SocketAddr = server
        .admin_url()
        .expect("admin listener")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    assert_ne!(public, admin);

    assert_eq!(send(public, "GET", &format!("/{UA}/{EVENT}"), &[]).await.status, 200);
    let r = send(public, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 404, "/metrics must not be public with --admin-bind: {r:?}");
    assert!(!r.text().contains("hourofci_"), "{r:?}");
    let r = send(public, "GET", "/healthz", &[]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "load balancers keep /healthz on the public port"
    );

    let r = send(admin, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // It is the same collector's metrics: the public GET above is counted.
    let events = hourofci_collector::metrics::sample(
        &r.text(),
        r#"hourofci_http_requests_total{route="event",method="GET",status="200"}"#,
    );
    assert_eq!(events, Some(1.0), "{}", r.text());
    assert_eq!(send(admin, "GET", "/healthz", &[]).await.status, 200);
    // Nothing else is served there: no writes through the admin port.
    assert_eq!(send(admin, "GET", &format!("/{UA}/{EVENT}"), &[]).await.status, 404);
    assert_eq!(send(admin, "GET", "/", &[]).await.status, 404);
    assert_eq!(sqlite_count(&db.path, "loggingtable").await, 1);
    // Every client is rate limited there too (20/s, a burst of 40), and no body is read.
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(send(admin, "GET", "/metrics", &[]).await.status);
    }
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        limited > 0 && statuses[..30].iter().all(|&s| s == 200),
        "60 scrapes at once: {statuses:?}"
    );
    let r = send(admin, "POST", "/metrics", &[("content-length", "5")]).await;
    assert!(r.status >= 400, "{r:?}");

    server.shutdown().await.unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).is_err(),
        "the admin listener stops with the collector"
    );
}
