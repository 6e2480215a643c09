//! hourofci-sdk: the browser SDK that records what Hour of CI learners answer.
//!
//! Each answer becomes an [`queue::Event`] with a random id, is written to
//! localStorage before the first send, and leaves the queue only when the
//! collector acknowledged it (or itself refused it as one that can never be stored). See docs/DESIGN.md,
//! "SDK delivery rules" and "SDK JavaScript API"; `js/hourofci-log.js` is the
//! ES module lessons import, and it re-exports the functions below.
//!
//! Pure logic (natively tested; depends on nothing below): [`encode`], `text`, `uuid`,
//! [`json`], `queue`, `policy`, `config`, and the delivery [`engine`]. Browser glue:
//! `browser`, `store`, `net`, `lock`, `deliver`, and the exports here. Public are only
//! the exports and what the browser tests in `tests/web.rs` check.

mod config;
pub mod encode;
pub mod engine;
pub mod json;
mod policy;
mod queue;
mod text;
mod uuid;

#[cfg(target_arch = "wasm32")]
mod alloc;
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SizeClassAlloc = alloc::SizeClassAlloc::new();

mod browser;
mod deliver;
mod lock;
mod net;
mod store;

use js_sys::{Function, Object, Promise};
use text::cat;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

fn err(message: &str) -> JsError {
    JsError::new(&cat(&["hourofci: ", message]))
}

fn not_initialized() -> JsError {
    err("call init() first")
}

/// `init(options)` for JS: a promise that rejects when an option is wrong.
#[wasm_bindgen(js_name = init)]
pub fn init_js(options: JsValue) -> Promise {
    match init_now(options) {
        Ok(()) => Promise::resolve(&JsValue::UNDEFINED),
        Err(e) => Promise::reject(&e.into()),
    }
}

/// `init(options)`: reads and checks the options, then delivers what earlier
/// pages left queued. May be called again to reconfigure.
pub async fn init(options: JsValue) -> Result<(), JsError> {
    init_now(options)
}

fn init_now(options: JsValue) -> Result<(), JsError> {
    if !options.is_object() {
        return Err(err(
            "init(options): options must be an object such as {endpoint: \"https://check.hourofci.org:4000\"}",
        ));
    }
    let mut raw = config::RawOptions::default();
    for entry in Object::entries(options.unchecked_ref::<Object>()).iter() {
        let entry: js_sys::Array = entry.unchecked_into();
        let key = entry.get(0).as_string().unwrap_or_default();
        raw.set(&key, option_value(entry.get(1))).map_err(|m| err(&m))?;
    }
    // One spelling per endpoint, what the browser's URL parser makes of it (`HTTPS://X:443/`
    // is `https://x`): events record it, and a page sends only the events recorded for its
    // own. Checked (http or https) as spelled.
    raw.endpoint = raw.endpoint.map(|e| browser::normalize_endpoint(&e).unwrap_or(e));
    // The shim always passes `userAgent` (its MD5 of navigator.userAgent: calls made before
    // the wasm loads need it too), so the wasm carries no MD5 (1,028 B gzip, measured).
    let cfg = config::Config::from_raw(raw, browser::user_agent).map_err(|m| err(&m))?;
    deliver::with(|s| {
        let owns_legacy = s.store.owns_legacy(&cfg.endpoint);
        s.engine = Some(engine::Engine::new(
            cfg.endpoint.clone(),
            owns_legacy,
            cfg.retry_base_ms,
            cfg.retry_cap_ms,
            cfg.batch_size,
        ));
        s.config = Some(cfg);
    });
    deliver::install_hooks();
    // What earlier page loads left queued goes out now, without holding up init.
    deliver::flush_soon();
    Ok(())
}

/// What [`config::RawOptions::set`] checks: the JS type of one option value.
fn option_value(v: JsValue) -> config::Value {
    use config::Value;
    if v.is_undefined() || v.is_null() {
        Value::Absent
    } else if let Some(b) = v.as_bool() {
        Value::Bool(b)
    } else if let Some(n) = v.as_f64() {
        Value::Number(n)
    } else if let Some(s) = v.as_string() {
        Value::Str(s)
    } else {
        Value::Other
    }
}

fn string_arg(function: &str, name: &str, value: JsValue) -> Result<String, JsError> {
    value
        .as_string()
        .ok_or_else(|| err(&cat(&[function, ": ", name, " must be a string"])))
}

/// JSON text of any serializable value (`JSON.stringify`).
fn json_arg(function: &str, name: &str, value: &JsValue) -> Result<String, JsError> {
    js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| {
            err(&cat(&[
                function,
                ": ",
                name,
                " must be a string or a JSON-serializable value",
            ]))
        })
}

fn log(function: &str, lesson: JsValue, level: JsValue, question: JsValue, answer: String) -> Result<Promise, JsError> {
    let cfg = deliver::with(|s| s.config.clone()).ok_or_else(not_initialized)?;
    let event = queue::Event {
        id: uuid::uuid_v4(browser::random_bytes()),
        test: cfg.test,
        endpoint: cfg.endpoint,
        user_agent: cfg.user_agent,
        lesson: string_arg(function, "lesson", lesson)?,
        level: string_arg(function, "level", level)?,
        question: string_arg(function, "question", question)?,
        answer,
        client_time: browser::now_rfc3339(),
        learner_id: cfg.learner_id,
    };
    Ok(deliver::enqueue(event, cfg.max_queue))
}

/// `logAnswer(lesson, level, question, answer)`: strings go as they are, other
/// values as their JSON text. The event is stored before this returns; the
/// promise resolves to "sent", "queued", "queued-memory" or "rejected".
#[wasm_bindgen(js_name = logAnswer)]
pub fn log_answer(lesson: JsValue, level: JsValue, question: JsValue, answer: JsValue) -> Result<Promise, JsError> {
    let text = match answer.as_string() {
        Some(s) => s,
        None if answer.is_undefined() => return Err(err("logAnswer: answer is missing")),
        None => json_arg("logAnswer", "answer", &answer)?,
    };
    log("logAnswer", lesson, level, question, text)
}

/// `logInteraction(lesson, level, question, detail)`: `detail` stored as its JSON text.
#[wasm_bindgen(js_name = logInteraction)]
pub fn log_interaction(
    lesson: JsValue,
    level: JsValue,
    question: JsValue,
    detail: JsValue,
) -> Result<Promise, JsError> {
    let text = json_arg("logInteraction", "detail", &detail)?;
    log("logInteraction", lesson, level, question, text)
}

/// `flush()` for JS (through the shared [`deliver::promise`]).
#[wasm_bindgen(js_name = flush)]
pub fn flush_js() -> Promise {
    deliver::promise(Box::pin(async { flush().await.map_err(JsValue::from) }))
}

/// `flush()`: tries to send everything now; resolves to `{sent, pending}`.
pub async fn flush() -> Result<JsValue, JsError> {
    if deliver::with(|s| s.config.is_none()) {
        return Err(not_initialized());
    }
    let (sent, pending) = deliver::flush_now().await;
    Ok(deliver::object(&[
        ("sent", Some(sent.into())),
        ("pending", Some(pending.into())),
    ]))
}

/// `pending()`: how many events wait in the queue (all tabs of this origin).
#[wasm_bindgen(js_name = pending)]
pub fn pending() -> Result<u32, JsError> {
    deliver::with(|s| {
        s.config.as_ref().ok_or_else(not_initialized)?;
        Ok(s.store.load().events.len() as u32)
    })
}

/// `onStatus(callback)`: reports sent / queued / queued-memory / dropped / rejected; returns the unsubscribe function.
#[wasm_bindgen(js_name = onStatus)]
pub fn on_status(callback: JsValue) -> Result<Function, JsError> {
    let callback: Function = callback
        .dyn_into()
        .map_err(|_| err("onStatus: callback must be a function"))?;
    let id = deliver::subscribe(callback);
    Ok(Closure::once_into_js(move || deliver::unsubscribe(id)).unchecked_into())
}
