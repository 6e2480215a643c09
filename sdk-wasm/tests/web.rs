//! Browser tests of the web-sys glue, in headless Chromium through
//! wasm-bindgen-test: `cargo test -p hourofci-sdk --target wasm32-unknown-unknown`
//! (never with `-q`: the runner rejects `--quiet`).
//!
//! No collector is needed here: the endpoint is a closed loopback port, so every
//! send fails like an offline network. Delivery against the real collector is
//! covered by the node end-to-end tests in `sdk-wasm/e2e/`.
#![cfg(target_arch = "wasm32")]

use hourofci_sdk::encode::encode_uri_component;
use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Every event is its own localStorage entry: `hourofci-log:ev:<order>:<id>`.
const EVENT_PREFIX: &str = "hourofci-log:ev:";
/// Where SDKs before per-event keys kept the whole queue (migrated on load).
const LEGACY_QUEUE_KEY: &str = "hourofci-log:queue:v1";
/// Nothing listens on the discard port of loopback: fetch fails at once.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

/// The stored event entries, oldest first: (key, value).
fn stored_events() -> Vec<(String, String)> {
    let ls = storage();
    let mut keys: Vec<String> = (0..ls.length().unwrap())
        .filter_map(|i| ls.key(i).unwrap())
        .filter(|k| k.starts_with(EVENT_PREFIX))
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|k| (k.clone(), ls.get_item(&k).unwrap().unwrap()))
        .collect()
}

/// All stored event values, oldest first, in one string.
fn stored_text() -> String {
    stored_events()
        .into_iter()
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn init_dead_endpoint() {
    let options = Object::new();
    Reflect::set(&options, &"endpoint".into(), &DEAD_ENDPOINT.into()).unwrap();
    Reflect::set(&options, &"retryBaseMs".into(), &JsValue::from(60_000)).unwrap();
    hourofci_sdk::init(options.into()).await.map_err(JsValue::from).unwrap();
}

async fn delivery(p: js_sys::Promise) -> String {
    JsFuture::from(p).await.unwrap().as_string().unwrap()
}

#[wasm_bindgen_test]
fn percent_encoding_equals_encode_uri_component() {
    let mut samples: Vec<String> = [
        "q/7?",
        "naïve & \"quoted\" 😀",
        "%#\n\r\t );+=,:@$&[]{}|\\^`<>",
        "A-Z_a.z!~*'()",
        "",
        "中文 العربية עברית",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every ASCII character, and a sweep through the BMP and the astral planes.
    samples.push((0u8..128).map(|b| b as char).collect());
    samples.push((0x80u32..0x11_0000).step_by(97).filter_map(char::from_u32).collect());
    for s in samples {
        let js: String = js_sys::encode_uri_component(&s).into();
        assert_eq!(encode_uri_component(&s), js, "{s:?}");
    }
}

#[wasm_bindgen_test]
async fn event_is_in_local_storage_before_the_send_starts() {
    storage().clear().unwrap();
    init_dead_endpoint().await;
    // Events an earlier test left in memory (storage was full) stay pending in this page.
    let before = hourofci_sdk::pending().map_err(JsValue::from).unwrap();
    let promise = hourofci_sdk::log_answer(
        "gateway".into(),
        "beginner".into(),
        "1A".into(),
        "persist me / ?".into(),
    )
    .unwrap();
    // Nothing has been awaited yet: the request cannot have been made.
    let stored: Vec<_> = stored_events()
        .into_iter()
        .filter(|(_, v)| v.contains("persist me"))
        .collect();
    assert_eq!(stored.len(), 1, "written before sending, under its own key: {stored:?}");
    assert!(stored[0].1.contains("persist me / ?"), "{stored:?}");
    let id = stored[0].0.rsplit(':').next().unwrap().to_string();
    assert!(stored[0].1.contains(&id), "the key names the event id: {stored:?}");
    assert_eq!(delivery(promise).await, "queued");
    assert_eq!(hourofci_sdk::pending().map_err(JsValue::from).unwrap(), before + 1);
    assert!(stored_events().contains(&stored[0]), "kept while undelivered");
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn full_local_storage_falls_back_to_memory() {
    let ls = storage();
    ls.clear().unwrap();
    init_dead_endpoint().await;
    let before = hourofci_sdk::pending().map_err(JsValue::from).unwrap();
    fill_local_storage();
    let answers = ["first while full", "second while full"];
    for a in answers {
        let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "2B".into(), a.into()).unwrap();
        assert_eq!(
            delivery(p).await,
            "queued-memory",
            "kept only while this page stays open, and says so"
        );
    }
    assert_eq!(
        hourofci_sdk::pending().map_err(JsValue::from).unwrap(),
        before + 2,
        "kept in memory"
    );
    assert!(!stored_text().contains("while full"));
    // Space comes back: new answers are stored again, the ones in memory still wait.
    ls.clear().unwrap();
    let p = hourofci_sdk::log_answer(
        "gateway".into(),
        "beginner".into(),
        "2B".into(),
        "after space freed".into(),
    )
    .unwrap();
    assert_eq!(delivery(p).await, "queued");
    assert!(stored_text().contains("after space freed"));
    assert_eq!(
        hourofci_sdk::pending().map_err(JsValue::from).unwrap(),
        before + 3,
        "memory and storage together"
    );
    ls.clear().unwrap();
}

/// Filled up until the browser refuses more (then cleared by the caller).
fn fill_local_storage() {
    let ls = storage();
    let chunk = "x".repeat(512 * 1024);
    let mut n = 0;
    while ls.set_item(&format!("filler-{n}"), &chunk).is_ok() {
        n += 1;
        assert!(n < 1000, "localStorage never filled up");
    }
    let mut small = 0;
    while ls.set_item(&format!("small-{small}"), "y").is_ok() && small < 100_000 {
        small += 1;
    }
}

#[wasm_bindgen_test]
async fn an_old_queue_stays_until_every_event_is_stored_under_its_own_key() {
    let ls = storage();
    ls.clear().unwrap();
    init_dead_endpoint().await;
    let before = hourofci_sdk::pending().map_err(JsValue::from).unwrap();
    let old = r#"[{"id":"00000000-0000-4000-8000-000000000071","user_agent":"ua","lesson":"gateway","level":"beginner","question":"1A","answer":"old while full","client_time":"2026-11-28T07:35:44.123Z","test":false}]"#;
    ls.set_item(LEGACY_QUEUE_KEY, old).unwrap();
    fill_local_storage();
    assert_eq!(
        hourofci_sdk::pending().map_err(JsValue::from).unwrap(),
        before + 1,
        "taken into memory"
    );
    assert_eq!(
        ls.get_item(LEGACY_QUEUE_KEY).unwrap().as_deref(),
        Some(old),
        "the old key keeps it for the next page"
    );
    assert_eq!(
        hourofci_sdk::pending().map_err(JsValue::from).unwrap(),
        before + 1,
        "taken once, not again on every look"
    );
    ls.clear().unwrap();
}

/// Which values the path form carries unchanged, asked of the browser's own URL parser.
#[wasm_bindgen_test]
fn path_form_is_used_only_for_values_the_url_parser_keeps() {
    let mut values: Vec<String> = [
        "", ".", "..", "...", " ", "./a", "a/..", "%2e", "%2E", ".%2e", "%2e%2e", "\\", "\u{0}", "?", "#", ";", "\t.",
        "．", "。",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let alphabet: Vec<char> = (0u8..128)
        .map(|b| b as char)
        .chain(['é', '．', '\u{3002}', '\u{FEFF}'])
        .collect();
    for a in &alphabet {
        values.push(a.to_string());
        for b in ['.', '%', '/', 'a'] {
            values.push(format!("{a}{b}"));
            values.push(format!("{b}{a}"));
        }
    }
    for v in values {
        let path = format!("/ua/{}/b", encode_uri_component(&v));
        let url = web_sys::Url::new(&format!("http://h{path}")).unwrap();
        let kept = url.pathname() == path;
        assert_eq!(
            kept && !v.is_empty(),
            hourofci_sdk::engine::path_safe(&v),
            "{v:?} -> {}",
            url.pathname()
        );
    }
}

#[wasm_bindgen_test]
async fn events_record_their_endpoint_as_the_url_parser_spells_it() {
    storage().clear().unwrap();
    for (given, normalized) in [
        ("HTTPS://127.0.0.1:443/", "https://127.0.0.1"),
        ("http://127.0.0.1:9//x/ ", "http://127.0.0.1:9//x"),
    ] {
        let options = Object::new();
        Reflect::set(&options, &"endpoint".into(), &given.into()).unwrap();
        Reflect::set(&options, &"retryBaseMs".into(), &JsValue::from(60_000)).unwrap();
        hourofci_sdk::init(options.into()).await.map_err(JsValue::from).unwrap();
        let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "1A".into(), given.into()).unwrap();
        let text = stored_text();
        assert!(
            text.contains(&format!("\"endpoint\":\"{normalized}\"")),
            "{given}: {text}"
        );
        delivery(p).await;
        storage().clear().unwrap();
    }
    init_dead_endpoint().await;
}

#[wasm_bindgen_test]
async fn wrong_arguments_reject_naming_them() {
    init_dead_endpoint().await;
    let msg = |e: JsError| js_sys::Error::from(JsValue::from(e)).message().as_string().unwrap();
    let e = hourofci_sdk::log_answer(JsValue::from(3), "beginner".into(), "1A".into(), "x".into()).unwrap_err();
    assert!(msg(e).contains("lesson must be a string"));
    let e = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "1A".into(), JsValue::UNDEFINED).unwrap_err();
    assert!(msg(e).contains("answer"));

    let bad = |k: &str, v: JsValue| {
        let o = Object::new();
        Reflect::set(&o, &"endpoint".into(), &DEAD_ENDPOINT.into()).unwrap();
        Reflect::set(&o, &k.into(), &v).unwrap();
        JsValue::from(o)
    };
    for (key, value) in [
        ("maxQueue", JsValue::from(2.5)),
        ("maxQueue", JsValue::from("ten")),
        ("test", JsValue::from(1)),
        ("batchSize", JsValue::from(501)),
        ("endPoint", JsValue::from("typo")),
        ("learnerId", JsValue::from(7)),
    ] {
        let e = hourofci_sdk::init(bad(key, value)).await.unwrap_err();
        let m = msg(e);
        assert!(m.contains(key), "{key}: {m}");
    }
    let e = hourofci_sdk::init(JsValue::from("http://x")).await.unwrap_err();
    assert!(msg(e).contains("options must be an object"));
}

/// The default user agent, the MD5 hex of navigator.userAgent, is computed by the shim
/// (js/hourofci-log.js, which always passes `userAgent`; checked end to end in
/// e2e/animation-early.test.mjs): the wasm itself stores what it is given, else the raw string.
#[wasm_bindgen_test]
async fn without_user_agent_the_wasm_stores_navigator_user_agent() {
    storage().clear().unwrap();
    init_dead_endpoint().await;
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "3C".into(), "ua check".into()).unwrap();
    let stored = stored_text();
    let ua = web_sys::window().unwrap().navigator().user_agent().unwrap();
    assert!(stored.contains(&format!("\"user_agent\":\"{ua}\"")), "{stored}");
    delivery(p).await;
    storage().clear().unwrap();
}

/// The learner id is made and checked by the shim (js/hourofci-log.js, which always passes
/// `learnerId`; end to end in sdk-wasm/e2e/learner-id.test.mjs): the wasm records the one it
/// is given in each stored event, and none without.
#[wasm_bindgen_test]
async fn events_store_the_learner_id_they_were_logged_with() {
    storage().clear().unwrap();
    let learner = "7d444840-9dc0-41d1-a8a4-1a2b3c4d5e6f";
    let options = Object::new();
    Reflect::set(&options, &"endpoint".into(), &DEAD_ENDPOINT.into()).unwrap();
    Reflect::set(&options, &"retryBaseMs".into(), &JsValue::from(60_000)).unwrap();
    Reflect::set(&options, &"learnerId".into(), &learner.into()).unwrap();
    hourofci_sdk::init(options.into()).await.map_err(JsValue::from).unwrap();
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "3D".into(), "with learner".into()).unwrap();
    let stored = stored_text();
    assert!(stored.contains(&format!("\"learner_id\":\"{learner}\"")), "{stored}");
    delivery(p).await;
    storage().clear().unwrap();
    init_dead_endpoint().await;
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "3D".into(), "without".into()).unwrap();
    let stored = stored_text();
    assert!(!stored.contains("learner_id"), "{stored}");
    delivery(p).await;
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn an_old_single_key_queue_is_migrated_in_order() {
    storage().clear().unwrap();
    let old = r#"[{"id":"00000000-0000-4000-8000-000000000001","user_agent":"ua","lesson":"gateway","level":"beginner","question":"1A","answer":"old first","client_time":"2026-11-28T07:35:44.123Z","test":false},{"id":5},{"id":"00000000-0000-4000-8000-000000000002","user_agent":"ua","lesson":"gateway","level":"beginner","question":"1A","answer":"old second","client_time":"2026-11-28T07:35:45.123Z","test":false}]"#;
    init_dead_endpoint().await;
    let before = hourofci_sdk::pending().map_err(JsValue::from).unwrap();
    storage().set_item(LEGACY_QUEUE_KEY, old).unwrap();
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "1A".into(), "new one".into()).unwrap();
    assert_eq!(delivery(p).await, "queued");
    assert_eq!(
        storage().get_item(LEGACY_QUEUE_KEY).unwrap(),
        None,
        "the old key is gone"
    );
    let answers: Vec<String> = stored_events()
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.contains("old ") || v.contains("new one"))
        .collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    for (text, answer) in answers.iter().zip(["old first", "old second", "new one"]) {
        assert!(text.contains(answer), "oldest first: {answers:?}");
    }
    assert_eq!(hourofci_sdk::pending().map_err(JsValue::from).unwrap(), before + 3);
    storage().clear().unwrap();
}

/// What another tab does while this one works: it stores its own events under its
/// own keys, and settles events this tab stored. Neither erases the other's
/// (the single-key queue lost answers exactly here, when the writes crossed).
#[wasm_bindgen_test]
async fn another_tabs_writes_are_never_erased() {
    storage().clear().unwrap();
    init_dead_endpoint().await;
    let before = hourofci_sdk::pending().map_err(JsValue::from).unwrap();
    let other = |n: u32| {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let key = format!("{EVENT_PREFIX}{:016}:{id}", 1_000 + n);
        let value = format!(
            r#"{{"id":"{id}","user_agent":"ua","lesson":"gateway","level":"beginner","question":"1A","answer":"other tab {n}","client_time":"2026-11-28T07:35:44.123Z","test":false}}"#
        );
        storage().set_item(&key, &value).unwrap();
        key
    };
    let mut pending = Vec::new();
    for n in 0..5 {
        other(n);
        pending.push(
            hourofci_sdk::log_answer(
                "gateway".into(),
                "beginner".into(),
                "1A".into(),
                format!("this tab {n}").into(),
            )
            .unwrap(),
        );
    }
    let settled_elsewhere = other(99);
    storage().remove_item(&settled_elsewhere).unwrap();
    for p in pending {
        assert_eq!(delivery(p).await, "queued");
    }
    let text = stored_text();
    for n in 0..5 {
        assert!(
            text.contains(&format!("other tab {n}")) && text.contains(&format!("this tab {n}")),
            "{n} lost: {text}"
        );
    }
    assert!(!text.contains("other tab 99"), "a removal by another tab stays removed");
    assert_eq!(hourofci_sdk::pending().map_err(JsValue::from).unwrap(), before + 10);
    storage().clear().unwrap();
}

/// In the browser `json::parse` is `JSON.parse` converted: the same tree the native reader builds.
#[wasm_bindgen_test]
fn json_parse_in_the_browser_reads_what_the_engine_needs() {
    use hourofci_sdk::json::{parse, Json};
    let error = parse(r#"{"error":"invalid","field":null,"rule":"answer: at most 4096 bytes"}"#).unwrap();
    assert_eq!(error.get("field"), Some(&Json::Null));
    assert_eq!(
        error.get("rule").and_then(Json::as_str),
        Some("answer: at most 4096 bytes")
    );
    let batch = parse(
        r#" {"results":[{"id":"a","status":"written"},{"id":"b","status":"invalid","reason":"x"}],"n":12,"t":true} "#,
    )
    .unwrap();
    let results = batch.get("results").and_then(Json::as_array).unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1].get("status").and_then(Json::as_str), Some("invalid"));
    assert_eq!(batch.get("n").and_then(Json::as_u64), Some(12));
    assert_eq!(batch.get("t").and_then(Json::as_bool), Some(true));
    assert_eq!(parse(r#""\ud83d\ude00 \u00e9\n""#).unwrap().as_str(), Some("😀 é\n"));
    for bad in ["", "{", "<html>404</html>", "{\"a\":1,}", "[1] x"] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(parse(&deep), None, "deep nesting is refused, as by the native reader");
}
