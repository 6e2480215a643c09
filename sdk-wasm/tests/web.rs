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

const QUEUE_KEY: &str = "hourofci-log:queue:v1";
/// Nothing listens on the discard port of loopback: fetch fails at once.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
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
    let promise = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "1A".into(), "persist me / ?".into()).unwrap();
    // Nothing has been awaited yet: the request cannot have been made.
    let stored = storage().get_item(QUEUE_KEY).unwrap().expect("queue written before sending");
    assert!(stored.contains("persist me / ?"), "{stored}");
    assert_eq!(delivery(promise).await, "queued");
    assert_eq!(hourofci_sdk::pending().map_err(JsValue::from).unwrap(), 1);
    let after = storage().get_item(QUEUE_KEY).unwrap().unwrap();
    assert!(after.contains("persist me / ?"));
    storage().clear().unwrap();
}

#[wasm_bindgen_test]
async fn full_local_storage_falls_back_to_memory() {
    let ls = storage();
    ls.clear().unwrap();
    init_dead_endpoint().await;
    // Fill localStorage until the browser refuses more.
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
    let answers = ["first while full", "second while full"];
    for a in answers {
        let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "2B".into(), a.into()).unwrap();
        assert_eq!(delivery(p).await, "queued");
    }
    assert_eq!(hourofci_sdk::pending().map_err(JsValue::from).unwrap(), 2, "kept in memory");
    assert!(ls.get_item(QUEUE_KEY).unwrap().is_none_or(|q| !q.contains("while full")));
    // Space comes back: the next write puts the whole queue into localStorage again.
    ls.clear().unwrap();
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "2B".into(), "after space freed".into()).unwrap();
    assert_eq!(delivery(p).await, "queued");
    let stored = ls.get_item(QUEUE_KEY).unwrap().unwrap();
    for a in answers.iter().chain(&["after space freed"]) {
        assert!(stored.contains(a), "{a} missing from {stored}");
    }
    ls.clear().unwrap();
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
    ] {
        let e = hourofci_sdk::init(bad(key, value)).await.unwrap_err();
        let m = msg(e);
        assert!(m.contains(key), "{key}: {m}");
    }
    let e = hourofci_sdk::init(JsValue::from("http://x")).await.unwrap_err();
    assert!(msg(e).contains("options must be an object"));
}

#[wasm_bindgen_test]
async fn default_user_agent_is_md5_of_navigator_user_agent() {
    storage().clear().unwrap();
    init_dead_endpoint().await;
    let p = hourofci_sdk::log_answer("gateway".into(), "beginner".into(), "3C".into(), "ua check".into()).unwrap();
    let stored = storage().get_item(QUEUE_KEY).unwrap().unwrap();
    let ua = web_sys::window().unwrap().navigator().user_agent().unwrap();
    assert!(stored.contains(&hourofci_sdk::md5::md5_hex(&ua)), "{stored}");
    delivery(p).await;
    storage().clear().unwrap();
}
