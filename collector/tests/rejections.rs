//! What each rejected request gets, whichever layer refuses it (the order is in
//! `hourofci_collector::app::router`): its status, the exact JSON body
//! `{"error","field","rule"}`, `Retry-After` where the client should wait, the CORS
//! headers of its kind (so a page can read the refusal), `nosniff`, and one count in
//! `hourofci_http_requests_total` by route, method and status. Preflights are answered
//! by the CORS layer and not counted.

mod common;

use std::time::Duration;

use common::{spawn_app, TestApp};
use reqwest::header::HeaderMap;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const ORIGIN: &str = "https://lesson.example.org";
const UA: &str = "3b5d5c3712955042212316173ccf37be";

/// Which CORS rule a request falls under.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `--allow-origin` (here: ORIGIN), with `Retry-After` exposed.
    Sdk,
    /// `--legacy-allow-origin` (default `*`).
    Legacy,
}

struct Expected {
    status: u16,
    body: String,
    retry_after: Option<String>,
    route: &'static str,
    kind: Kind,
}

fn expect(status: u16, body: &str, route: &'static str, kind: Kind) -> Expected {
    Expected {
        status,
        body: body.to_string(),
        retry_after: None,
        route,
        kind,
    }
}

fn error_body(code: &str, field: Option<&str>, rule: &str) -> String {
    serde_json::json!({ "error": code, "field": field, "rule": rule }).to_string()
}

/// A collector on a SQLite file, with CORS for ORIGIN and /metrics on its own listener
/// (where no limit applies, so reading it changes nothing that is measured).
async fn app(dir: &tempfile::TempDir, extra: &[&str]) -> TestApp {
    let db = dir.path().join("rejections.db");
    let mut args = vec![
        "--sqlite-path",
        db.to_str().unwrap(),
        "--allow-origin",
        ORIGIN,
        "--admin-bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

async fn requests_counted(app: &TestApp, route: &str, method: &str, status: u16) -> f64 {
    let admin = app.server.admin_url().expect("--admin-bind");
    let text = app
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(r#"hourofci_http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#);
    hourofci_collector::metrics::sample(&text, &series).unwrap_or(0.0)
}

fn check_headers(what: &str, headers: &HeaderMap, expected: &Expected) {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{what}");
    assert_eq!(header("content-type").as_deref(), Some("application/json"), "{what}");
    assert_eq!(header("retry-after"), expected.retry_after, "{what}: Retry-After");
    match expected.kind {
        Kind::Sdk => {
            assert_eq!(
                header("access-control-allow-origin").as_deref(),
                Some(ORIGIN),
                "{what}: CORS"
            );
            let exposed = header("access-control-expose-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(
                exposed.contains("retry-after"),
                "{what}: Retry-After readable by the page ({exposed:?})"
            );
        }
        Kind::Legacy => assert_eq!(
            header("access-control-allow-origin").as_deref(),
            Some("*"),
            "{what}: CORS"
        ),
    }
}

/// Send `request` (with an Origin) and check everything it gets.
async fn check(app: &TestApp, what: &str, request: reqwest::RequestBuilder, expected: Expected) -> HeaderMap {
    let request = request.header("Origin", ORIGIN).build().unwrap();
    let method = request.method().to_string();
    let before = requests_counted(app, expected.route, &method, expected.status).await;
    let res = app
        .client
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(res.status().as_u16(), expected.status, "{what}");
    let headers = res.headers().clone();
    check_headers(what, &headers, &expected);
    assert_eq!(res.text().await.unwrap(), expected.body, "{what}: body");
    let after = requests_counted(app, expected.route, &method, expected.status).await;
    assert_eq!(
        after - before,
        1.0,
        "{what}: counted once as route {} {method} {}",
        expected.route,
        expected.status
    );
    headers
}

#[tokio::test]
async fn each_rejection_gets_its_status_body_cors_and_one_count() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &["--max-answer-bytes", "16", "--max-header-bytes", "4096"]).await;
    let url = |path: &str| format!("{}{path}", app.url);
    let post_event = |path: &str| {
        app.client
            .post(url(path))
            .header("Idempotency-Key", Uuid::new_v4().to_string())
    };
    let event_path = format!("/{UA}/gateway/beginner/1A/yes");

    // The fallbacks.
    let not_found = error_body("not_found", None, "no such route");
    check(
        &app,
        "no such route",
        app.client.get(url("/nope")),
        expect(404, &not_found, "unmatched", Kind::Sdk),
    )
    .await;
    let no_method = error_body("method_not_allowed", None, "this route does not take that method");
    check(
        &app,
        "DELETE /batch",
        app.client.delete(url("/batch")),
        expect(405, &no_method, "batch", Kind::Sdk),
    )
    .await;

    // count_and_limit: a request target over 3 x 16 + 4096 bytes.
    let long = format!("/{UA}/gateway/beginner/1A/{}", "x".repeat(4200));
    let body = error_body("too_large", Some("path"), "the request path is longer than 4144 bytes");
    check(
        &app,
        "414",
        app.client.get(url(&long)),
        expect(414, &body, "event", Kind::Legacy),
    )
    .await;

    // limits::guard: headers, then bodies on routes that take none.
    let body = error_body(
        "too_large",
        Some("headers"),
        "the request headers are larger than 4096 bytes",
    );
    let big_header = app.client.get(url("/")).header("X-Padding", "p".repeat(5000));
    check(&app, "431", big_header, expect(431, &body, "root", Kind::Sdk)).await;
    let body = error_body(
        "too_large",
        Some("body"),
        "this route takes no request body; events with a body go to /batch",
    );
    let headers = check(
        &app,
        "a body on the event route",
        post_event(&event_path).body("abc"),
        expect(413, &body, "event", Kind::Sdk),
    )
    .await;
    assert_eq!(
        headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "the unread body is not drained"
    );

    // The handlers.
    let body = error_body(
        "unsupported_media_type",
        Some("Content-Type"),
        "a batch must be sent as application/json",
    );
    let text_batch = app
        .client
        .post(url("/batch"))
        .header("Content-Type", "text/plain")
        .body(r#"{"events":[]}"#);
    check(&app, "415", text_batch, expect(415, &body, "batch", Kind::Sdk)).await;
    let body = error_body("bad_json", None, r#"the body must be a JSON object {"events":[...]}"#);
    let array = app
        .client
        .post(url("/test/batch"))
        .header("Content-Type", "application/json")
        .body("[1]");
    check(&app, "400 bad_json", array, expect(400, &body, "batch", Kind::Sdk)).await;
    let body = error_body(
        "bad_header",
        Some("Idempotency-Key"),
        "the Idempotency-Key header (the event's UUID) is required",
    );
    check(
        &app,
        "no Idempotency-Key",
        app.client.post(url(&event_path)),
        expect(400, &body, "event", Kind::Sdk),
    )
    .await;
    let body = error_body(
        "bad_header",
        Some("X-Learner-Id"),
        "X-Learner-Id must be a UUID other than the nil UUID",
    );
    let nil_learner = post_event(&event_path).header("X-Learner-Id", Uuid::nil().to_string());
    check(
        &app,
        "nil learner id",
        nil_learner,
        expect(400, &body, "event", Kind::Sdk),
    )
    .await;
    let question_rule = "must be a digit 1-9 then a capital letter A-Z, e.g. 1A";
    let body = error_body("invalid", Some("question"), question_rule);
    let bad_question = post_event(&format!("/{UA}/gateway/beginner/1a/yes"));
    check(&app, "422", bad_question, expect(422, &body, "event", Kind::Sdk)).await;
    let body = error_body("too_large", Some("answer"), "must be at most 16 bytes");
    let long_answer = post_event(&format!("/{UA}/gateway/beginner/1A/{}", "a".repeat(17)));
    check(&app, "413 answer", long_answer, expect(413, &body, "event", Kind::Sdk)).await;
    let body = error_body("invalid", Some("question"), question_rule);
    let legacy = app.client.get(url(&format!("/test/{UA}/gateway/beginner/1a/yes")));
    check(
        &app,
        "legacy GET, invalid",
        legacy,
        expect(404, &body, "event", Kind::Legacy),
    )
    .await;

    // 409: the same id with another answer.
    let id = Uuid::new_v4().to_string();
    let first = app
        .client
        .post(url(&event_path))
        .header("Idempotency-Key", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let body = error_body(
        "conflict",
        None,
        "this event id is already stored with different content (user agent, lesson, level, question, answer or table); the stored event is kept",
    );
    let again = app
        .client
        .post(url(&format!("/{UA}/gateway/beginner/1A/no")))
        .header("Idempotency-Key", &id);
    check(&app, "409", again, expect(409, &body, "event", Kind::Sdk)).await;

    // A preflight is answered by the CORS layer: allowed, and not counted.
    let preflight = app
        .client
        .request(Method::OPTIONS, url("/batch"))
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers().get("access-control-allow-origin").unwrap(), ORIGIN);
    let admin = app.server.admin_url().unwrap();
    let metrics = app
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains(r#"method="OPTIONS""#),
        "preflights are not counted:\n{metrics}"
    );

    // 503 while draining (/healthz), with Retry-After (--retry-after-secs, default 2).
    app.server.begin_drain();
    let body = error_body("shutting_down", None, "the collector is restarting; retry later");
    let draining = Expected {
        retry_after: Some("2".into()),
        ..expect(503, &body, "healthz", Kind::Sdk)
    };
    check(&app, "draining", app.client.get(url("/healthz")), draining).await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_cors_and_retry_after_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    // One request per 100 s after a burst of 2: nobody refills during the test.
    let app = app(&dir, &["--rate-limit-per-second", "0.01", "--rate-limit-burst", "2"]).await;
    for _ in 0..2 {
        assert_eq!(
            app.client.get(format!("{}/", app.url)).send().await.unwrap().status(),
            200
        );
    }
    let before = requests_counted(&app, "root", "GET", 429).await;
    let res = app
        .client
        .get(format!("{}/", app.url))
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // The wait is what is left of 100 s, rounded up: the same number in header and body.
    let secs: u64 = res
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&secs), "{secs}");
    let rule = format!("too many requests from this address; retry after {secs} s with the same event id");
    let expected = Expected {
        retry_after: Some(secs.to_string()),
        ..expect(429, &error_body("rate_limited", None, &rule), "root", Kind::Sdk)
    };
    check_headers("429", res.headers(), &expected);
    assert_eq!(res.text().await.unwrap(), expected.body);
    assert_eq!(requests_counted(&app, "root", "GET", 429).await - before, 1.0);
}

#[tokio::test]
async fn a_body_slower_than_the_deadline_gets_408_with_cors_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &["--body-timeout-secs", "1"]).await;
    let before = requests_counted(&app, "batch", "POST", 408).await;
    let mut socket = tokio::net::TcpStream::connect(app.server.local_addr()).await.unwrap();
    let head = format!(
        "POST /batch HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes; the collector answers and closes.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), socket.read_to_end(&mut answer))
        .await
        .expect("closed")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert!(lines.next().unwrap().starts_with("HTTP/1.1 408 "), "{head}");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    let expected = expect(
        408,
        &error_body("timeout", Some("body"), "the request body did not arrive within 1 s"),
        "batch",
        Kind::Sdk,
    );
    check_headers("408", &headers, &expected);
    assert_eq!(headers.get("connection").unwrap(), "close");
    assert_eq!(body, expected.body);
    assert_eq!(requests_counted(&app, "batch", "POST", 408).await - before, 1.0);
}
