//! Hostile requests, table-driven, sent byte for byte over a real socket to the real
//! collector (in-process, embedded SQLite): every one gets a clear answer (a 4xx with
//! the JSON error body wherever the application sees the request), values that are
//! merely odd are stored byte for byte, and the process stays healthy afterwards.
//!
//! Also replays the fuzzers' seeds and every crash they ever found
//! (`fuzz/regressions/<target>/`) through the same invariants the fuzz targets check.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Datelike;
use common::*;
use hourofci_collector::event::{
    decode_segment, parse_batch, parse_client_time, parse_event_path, BatchItem, InvalidKind, Table,
};
use hourofci_collector::validate::Rules;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use uuid::Uuid;

/// What a case expects back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status with the JSON error body naming `field` (None: any or null).
    Json(u16, Option<&'static str>),
    /// This status from hyper itself, before the application sees the request (no body).
    Transport(u16),
    /// Stored: 201, and the row's answer equals this text exactly.
    Stored(&'static str),
    /// 200 from `/batch` with every result `invalid`.
    BatchAllInvalid,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    expect: Expect,
    /// The event id of a `Stored` case.
    id: Option<Uuid>,
}

fn post_event(path: &str, id: Uuid, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: {id}\r\nContent-Length: 0\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n").into_bytes()
}

fn post_batch(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let mut r = format!(
        "POST /batch HTTP/1.1\r\nHost: localhost\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn event_json(id: Uuid, answer: &str) -> String {
    serde_json::json!({"id": id.to_string(), "user_agent": UA, "lesson": "gateway", "level": "beginner",
        "question": "1A", "answer": answer, "client_time": "2026-11-28T07:00:00.000Z"})
    .to_string()
}

fn seg(prefix: &str, answer_raw: &str) -> String {
    format!("{prefix}/{UA}/gateway/beginner/1A/{answer_raw}")
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: &'static str, request: Vec<u8>, expect: Expect| {
        v.push(Case {
            name,
            request,
            expect,
            id: None,
        })
    };
    let id = Uuid::new_v4;

    // Sizes.
    add(
        "path of 60 000 bytes (POST)",
        post_event(&seg("", &"a".repeat(60_000)), id(), ""),
        Expect::Json(414, Some("path")),
    );
    add(
        "path of 100 000 bytes (hyper's own URI limit)",
        post_event(&seg("", &"a".repeat(100_000)), id(), ""),
        Expect::Transport(414),
    );
    add(
        "answer of 16 KiB + 1 (POST)",
        post_event(&seg("", &"a".repeat(16 * 1024 + 1)), id(), ""),
        Expect::Json(413, Some("answer")),
    );
    add(
        "answer of 16 KiB + 1 (legacy GET answers 404 as the original)",
        get(&seg("", &"a".repeat(16 * 1024 + 1)), ""),
        Expect::Json(404, Some("answer")),
    );
    add(
        "user agent of 300 bytes",
        post_event(&format!("/{}/gateway/beginner/1A/x", "u".repeat(300)), id(), ""),
        Expect::Json(422, Some("user_agent")),
    );
    add(
        "one header of 20 KiB",
        post_event(&seg("", "x"), id(), &format!("X-Junk: {}\r\n", "j".repeat(20 * 1024))),
        Expect::Json(431, Some("headers")),
    );
    add(
        "150 headers",
        get("/", &(0..150).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        Expect::Transport(431),
    );
    add(
        "one header of 600 KiB (hyper's own head limit)",
        get("/", &format!("X-Junk: {}\r\n", "j".repeat(600 * 1024))),
        Expect::Transport(431),
    );
    add(
        "batch body of 2 MiB",
        post_batch(Some("application/json"), &vec![b' '; 2 * 1024 * 1024]),
        Expect::Json(413, None),
    );
    add(
        "batch of 10 000 empty events",
        post_batch(
            Some("application/json"),
            format!("{{\"events\":[{}]}}", vec!["{}"; 10_000].join(",")).as_bytes(),
        ),
        Expect::Json(413, Some("events")),
    );
    let ten_thousand = (0..10_000)
        .map(|_| event_json(Uuid::new_v4(), "a"))
        .collect::<Vec<_>>()
        .join(",");
    add(
        "batch of 10 000 real events (about 2 MiB)",
        post_batch(
            Some("application/json"),
            format!("{{\"events\":[{ten_thousand}]}}").as_bytes(),
        ),
        Expect::Json(413, None),
    );
    let five_hundred_one = (0..501)
        .map(|_| event_json(Uuid::new_v4(), "a"))
        .collect::<Vec<_>>()
        .join(",");
    add(
        "batch of 501 events",
        post_batch(
            Some("application/json"),
            format!("{{\"events\":[{five_hundred_one}]}}").as_bytes(),
        ),
        Expect::Json(413, Some("events")),
    );
    let mut chunked = b"POST /batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    add(
        "chunked batch body of 2.5 MiB (no Content-Length)",
        chunked,
        Expect::Json(413, None),
    );

    // Encoding.
    add(
        "invalid UTF-8 after decoding (%FF) in the answer",
        post_event(&seg("", "%FF"), id(), ""),
        Expect::Json(422, Some("answer")),
    );
    add(
        "overlong UTF-8 slash (%C0%AF) in the answer",
        post_event(&seg("", "%C0%AF"), id(), ""),
        Expect::Json(422, Some("answer")),
    );
    add(
        "invalid UTF-8 (%C3%28) in the lesson",
        post_event(&format!("/{UA}/%C3%28/beginner/1A/x"), id(), ""),
        Expect::Json(422, Some("lesson")),
    );
    add(
        "NUL (%00) in the answer",
        post_event(&seg("", "a%00b"), id(), ""),
        Expect::Json(422, Some("answer")),
    );
    add(
        "NUL (%00) in the user agent (legacy GET)",
        get("/u%00a/gateway/beginner/1A/x", ""),
        Expect::Json(404, Some("user_agent")),
    );
    add(
        "raw NUL byte in the request line",
        b"GET /a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::Transport(400),
    );
    add(
        "raw non-ASCII bytes in the path",
        b"GET /\xff\xfe/gateway/beginner/1A/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::Transport(400),
    );
    add(
        "`..` as the lesson",
        post_event(&format!("/{UA}/../beginner/1A/x"), id(), ""),
        Expect::Json(422, Some("lesson")),
    );
    add(
        "`%2F` in the lesson",
        post_event(&format!("/{UA}/gate%2Fway/beginner/1A/x"), id(), ""),
        Expect::Json(422, Some("lesson")),
    );
    add(
        "six segments",
        post_event(&seg("", "a/b"), id(), ""),
        Expect::Json(404, None),
    );
    add(
        "question `1A%0D%0ASet-Cookie:x`",
        post_event(&format!("/{UA}/gateway/beginner/1A%0D%0ASet-Cookie:x/x"), id(), ""),
        Expect::Json(422, Some("question")),
    );

    // Headers.
    add(
        "missing Idempotency-Key",
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            seg("", "x")
        )
        .into_bytes(),
        Expect::Json(400, Some("Idempotency-Key")),
    );
    add("Idempotency-Key not a UUID", format!("POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: '; DROP TABLE x;--\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", seg("", "x")).into_bytes(), Expect::Json(400, Some("Idempotency-Key")));
    let mut non_utf8_key = format!("POST {} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ", seg("", "x")).into_bytes();
    non_utf8_key.extend_from_slice(b"\xff\xfe\xfd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    add(
        "Idempotency-Key with non-UTF-8 bytes",
        non_utf8_key,
        Expect::Json(400, Some("Idempotency-Key")),
    );
    add(
        "X-Client-Time not a time",
        post_event(&seg("", "x"), id(), "X-Client-Time: yesterday\r\n"),
        Expect::Json(400, Some("X-Client-Time")),
    );
    add(
        "X-Client-Time of 10 KiB",
        post_event(
            &seg("", "x"),
            id(),
            &format!("X-Client-Time: {}\r\n", "9".repeat(10 * 1024)),
        ),
        Expect::Json(400, Some("X-Client-Time")),
    );
    add("Content-Length and Transfer-Encoding both (smuggling)", b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(), Expect::Transport(400));
    add(
        "unknown method",
        b"BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::Json(405, None),
    );
    add(
        "DELETE on an event path",
        format!(
            "DELETE {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            seg("", "x")
        )
        .into_bytes(),
        Expect::Json(405, None),
    );

    // Batch JSON.
    add(
        "batch as text/plain",
        post_batch(Some("text/plain"), br#"{"events":[]}"#),
        Expect::Json(415, Some("Content-Type")),
    );
    add(
        "batch without Content-Type",
        post_batch(None, br#"{"events":[]}"#),
        Expect::Json(415, Some("Content-Type")),
    );
    add(
        "batch that is not JSON",
        post_batch(Some("application/json"), b"\x00\x01events"),
        Expect::Json(400, None),
    );
    add(
        "batch that is a JSON array",
        post_batch(Some("application/json"), b"[1,2,3]"),
        Expect::Json(400, None),
    );
    let deep = format!("{{\"events\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    add(
        "batch nested 100 000 deep",
        post_batch(Some("application/json"), deep.as_bytes()),
        Expect::Json(400, None),
    );
    let deep_in_event = format!(
        "{{\"events\":[{{\"id\":{}{}}}]}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    add(
        "event field nested 5 000 deep",
        post_batch(Some("application/json"), deep_in_event.as_bytes()),
        Expect::Json(400, None),
    );
    add("batch with dropped = u64::MAX and junk events", post_batch(Some("application/json"), br#"{"events":[7,null,{"id":"x"},{"id":"6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01","answer":[1]}],"dropped":18446744073709551615}"#), Expect::BatchAllInvalid);
    add(
        "batch with a 900 KB answer",
        post_batch(
            Some("application/json"),
            format!("{{\"events\":[{}]}}", event_json(Uuid::new_v4(), &"z".repeat(900_000))).as_bytes(),
        ),
        Expect::BatchAllInvalid,
    );

    // Odd but legitimate values: stored byte for byte.
    let mut stored = |name: &'static str, raw: String, answer: &'static str| {
        let event_id = Uuid::new_v4();
        v.push(Case {
            name,
            request: post_event(&seg("", &raw), event_id, ""),
            expect: Expect::Stored(answer),
            id: Some(event_id),
        })
    };
    stored("`..` as the answer", "..".into(), "..");
    stored(
        "`%2E%2E%2F%2E%2E%2Fetc%2Fpasswd` as the answer",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".into(),
        "../../etc/passwd",
    );
    stored(
        "CR LF in the answer",
        "a%0D%0AInjected:%20yes".into(),
        "a\r\nInjected: yes",
    );
    stored(
        "SQL in the answer",
        utf8_percent_encode("');DROP TABLE loggingtable;--", NON_ALPHANUMERIC).to_string(),
        "');DROP TABLE loggingtable;--",
    );
    stored("malformed escapes kept literally", "%zz%4".into(), "%zz%4");
    stored(
        "right-to-left override and emoji",
        utf8_percent_encode("\u{202e}abc😀", NON_ALPHANUMERIC).to_string(),
        "\u{202e}abc😀",
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_clear_answers_and_the_process_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = dir.path().join("sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    std::fs::write(sdk.join("hourofci-log.js"), "export {}").unwrap();
    let db = dir.path().join("events.db");
    let server = spawn_app(&[
        "--sqlite-path",
        db.to_str().unwrap(),
        "--sdk-dir",
        sdk.to_str().unwrap(),
        "--rate-limit-per-second",
        "0",
    ])
    .await
    .server;
    let addr = server.local_addr();

    let cases = cases();
    let total = cases.len();
    let results = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|c| {
                let res = raw_request(addr, &c.request, Duration::from_secs(20));
                (c, res)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let mut failures = Vec::new();
    for (case, res) in &results {
        let Some(res) = res else {
            failures.push(format!("{}: no response (connection closed)", case.name));
            continue;
        };
        let problem = match case.expect {
            Expect::Json(status, field) => {
                let json = res.json_error();
                if res.status != status {
                    Some(format!(
                        "status {} (want {status}), body {:.200}",
                        res.status,
                        res.text()
                    ))
                } else if json.is_none() {
                    Some(format!("no JSON error body: {:.200}", res.text()))
                } else if field.is_some_and(|f| json.as_ref().unwrap()["field"] != f) {
                    Some(format!("field {} (want {field:?})", json.unwrap()["field"]))
                } else {
                    None
                }
            }
            Expect::Transport(status) => {
                (res.status != status).then(|| format!("status {} (want {status})", res.status))
            }
            Expect::Stored(answer) => {
                let stored: Option<String> = sqlx::query_scalar("SELECT answer FROM loggingtable WHERE event_id = ?")
                    .bind(case.id.unwrap().to_string())
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
                (res.status != 201 || stored.as_deref() != Some(answer))
                    .then(|| format!("status {}, stored {stored:?} (want 201, {answer:?})", res.status))
            }
            Expect::BatchAllInvalid => {
                let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap_or_default();
                let results = v["results"].as_array().cloned().unwrap_or_default();
                (res.status != 200
                    || results.is_empty()
                    || results
                        .iter()
                        .any(|r| r["status"] != "invalid" || !r["reason"].is_string()))
                .then(|| format!("status {}, body {:.300}", res.status, res.text()))
            }
        };
        eprintln!(
            "{:<60} -> {} {}",
            case.name,
            res.status,
            if problem.is_some() { "FAIL" } else { "ok" }
        );
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", case.name));
        }
    }

    // Path traversal out of --sdk-dir.
    let traversal = tokio::task::spawn_blocking(move || {
        [
            "/sdk/../../../../../../etc/passwd",
            "/sdk/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
            "/sdk/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/sdk/....//....//etc/passwd",
        ]
        .into_iter()
        .map(|p| (p, raw_get(addr, p)))
        .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (path, res) in traversal {
        let res = res.expect("answer");
        eprintln!("{path:<60} -> {}", res.status);
        if !(400..500).contains(&res.status) || res.text().contains("root:") {
            failures.push(format!("{path}: {} {:.100}", res.status, res.text()));
        }
    }

    // Healthy afterwards: health, a normal event, the table intact.
    let after = tokio::task::spawn_blocking(move || {
        let health = raw_get(addr, "/healthz").map(|r| r.status);
        let ok = raw_request(
            addr,
            &post_event(&seg("", "still%20fine"), Uuid::new_v4(), ""),
            Duration::from_secs(10),
        )
        .map(|r| r.status);
        (health, ok)
    })
    .await
    .unwrap();
    assert_eq!(
        after,
        (Some(200), Some(201)),
        "the collector must stay healthy after hostile input"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable")
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!("{total} hostile cases; rows stored in the end: {rows}");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server.shutdown().await.unwrap();
}

/// Inputs that once crashed a fuzz target (`fuzz/regressions/<target>/`) and the
/// fuzzers' seeds, replayed through the fuzz targets' invariants on every test run.
#[test]
fn fuzz_seeds_and_regressions_keep_their_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("fuzz");
    let files = |target: &str| -> Vec<PathBuf> {
        let mut all = Vec::new();
        for kind in ["seeds", "regressions"] {
            if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
                all.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
        all.sort();
        all
    };
    let mut replayed = 0;
    for path in files("path_segment") {
        check_path_segment(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    for path in files("batch_json") {
        check_batch_json(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    for path in files("client_time") {
        check_client_time(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(
        replayed >= 9,
        "expected the committed seeds in fuzz/seeds/, found {replayed} files"
    );
}

/// Same invariants as `fuzz/fuzz_targets/path_segment.rs`.
fn check_path_segment(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(value) = decode_segment(raw) {
        assert!(!value.contains('\0'));
        let encoded = utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string();
        assert_eq!(decode_segment(&encoded).as_deref(), Ok(value.as_str()));
    }
    let rules = Rules::original();
    for path in [
        format!("/{raw}"),
        format!("/test/{raw}"),
        format!("/ua/gateway/beginner/1A/{raw}"),
    ] {
        if let Some(Ok(v)) = parse_event_path(&path) {
            let e = v.into_event(None, None, None);
            if let Err(r) = rules.check(&e) {
                assert!(r.field.is_some());
            }
        }
    }
}

/// Same invariants as `fuzz/fuzz_targets/batch_json.rs`.
fn check_batch_json(data: &[u8]) {
    let rules = Rules::original();
    match parse_batch(data, 500, Table::Production) {
        Ok(batch) => {
            assert!(batch.events.len() <= 500);
            for item in &batch.events {
                match item {
                    BatchItem::Event(e) => {
                        assert!(e.id.is_some());
                        if let Err(r) = rules.check(e) {
                            assert!(r.field.is_some());
                        }
                    }
                    BatchItem::Unreadable { reason, .. } => assert!(reason.field.is_some()),
                }
            }
        }
        Err(e) => assert!(matches!(e.kind, InvalidKind::BadJson | InvalidKind::TooLarge), "{e:?}"),
    }
}

/// Same invariants as `fuzz/fuzz_targets/client_time.rs`.
fn check_client_time(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = parse_client_time(text) else { return };
    if (0..=9999).contains(&t.year()) {
        let printed = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        assert_eq!(parse_client_time(&printed), Ok(t), "{text:?}");
    }
}
