//! hourofci-sdk: the browser SDK that records what Hour of CI learners answer.
//!
//! Each answer becomes an [`queue::Event`] with a random id, is written to
//! localStorage before the first send, and leaves the queue only when the
//! collector acknowledged it (or refused it as invalid). See docs/DESIGN.md,
//! "SDK delivery rules" and "SDK JavaScript API"; `js/hourofci-log.js` is the
//! ES module lessons import, and it re-exports the functions below.
//!
//! Pure logic (natively tested): [`encode`], [`md5`], [`uuid`], [`json`],
//! [`queue`], [`policy`], [`config`]. Browser glue: `browser`, `store`, `net`,
//! `lock`, `deliver`, and the exports here.

pub mod config;
pub mod encode;
pub mod json;
pub mod md5;
pub mod policy;
pub mod queue;
pub mod uuid;

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
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Joins string pieces (`[..].concat()` costs a generic 1 KB in the wasm).
pub(crate) fn cat(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(p);
    }
    out
}

fn err(message: &str) -> JsError {
    JsError::new(&cat(&["hourofci: ", message]))
}

fn not_initialized() -> JsError {
    err("call init() first")
}

/// `init(options)`: reads and checks the options, then delivers what earlier
/// pages left queued. May be called again to reconfigure.
#[wasm_bindgen(js_name = init)]
pub async fn init(options: JsValue) -> Result<(), JsError> {
    if !options.is_object() {
        return Err(err("init(options): options must be an object such as {endpoint: \"https://check.hourofci.org:4000\"}"));
    }
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if config::unknown_option([key.as_str()]).is_some() {
            return Err(err(&cat(&["unknown option `", &key, "` (known: endpoint, test, userAgent, maxQueue, retryBaseMs, retryCapMs, batchSize)"])));
        }
    }
    let raw = read_options(&options).map_err(|m| err(&m))?;
    let cfg = config::Config::from_raw(raw, || md5::md5_hex(&browser::user_agent())).map_err(|m| err(&m))?;
    deliver::with(|s| s.config = Some(cfg));
    deliver::install_hooks();
    // What earlier page loads left queued goes out now, without holding up init.
    wasm_bindgen_futures::spawn_local(async {
        deliver::flush_pass(&mut Vec::new()).await;
    });
    Ok(())
}

/// Reads the known options off the JS object; `undefined`/`null` mean "not given".
fn read_options(options: &JsValue) -> Result<config::RawOptions, String> {
    let get = |name: &str| {
        let v = js_sys::Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
        (!v.is_undefined() && !v.is_null()).then_some(v)
    };
    let wrong = |name: &str, what: &str| cat(&["option `", name, "` must be ", what]);
    let string = |name: &str| match get(name) {
        None => Ok(None),
        Some(v) => v.as_string().map(Some).ok_or_else(|| wrong(name, "a string")),
    };
    let number = |name: &str| match get(name) {
        None => Ok(None),
        Some(v) => config::whole_number(name, v.as_f64().ok_or_else(|| wrong(name, "a whole number"))?).map(Some),
    };
    Ok(config::RawOptions {
        endpoint: string("endpoint")?,
        test: match get("test") {
            None => None,
            Some(v) => Some(v.as_bool().ok_or_else(|| wrong("test", "true or false"))?),
        },
        user_agent: string("userAgent")?,
        max_queue: number("maxQueue")?,
        retry_base_ms: number("retryBaseMs")?,
        retry_cap_ms: number("retryCapMs")?,
        batch_size: number("batchSize")?,
    })
}

fn string_arg(function: &str, name: &str, value: JsValue) -> Result<String, JsError> {
    value.as_string().ok_or_else(|| err(&cat(&[function, ": ", name, " must be a string"])))
}

/// JSON text of any serializable value (`JSON.stringify`).
fn json_arg(function: &str, name: &str, value: &JsValue) -> Result<String, JsError> {
    js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| err(&cat(&[function, ": ", name, " must be a string or a JSON-serializable value"])))
}

fn log(function: &str, lesson: JsValue, level: JsValue, question: JsValue, answer: String) -> Result<Promise, JsError> {
    let cfg = deliver::with(|s| s.config.clone()).ok_or_else(not_initialized)?;
    let event = queue::Event {
        id: uuid::uuid_v4(browser::random_bytes()),
        test: cfg.test,
        user_agent: cfg.user_agent,
        lesson: string_arg(function, "lesson", lesson)?,
        level: string_arg(function, "level", level)?,
        question: string_arg(function, "question", question)?,
        answer,
        client_time: browser::now_rfc3339(),
    };
    Ok(deliver::enqueue(event, cfg.max_queue))
}

/// `logAnswer(lesson, level, question, answer)`: strings go as they are, other
/// values as their JSON text. The event is stored before this returns; the
/// promise resolves to "sent", "queued" or "rejected".
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
pub fn log_interaction(lesson: JsValue, level: JsValue, question: JsValue, detail: JsValue) -> Result<Promise, JsError> {
    let text = json_arg("logInteraction", "detail", &detail)?;
    log("logInteraction", lesson, level, question, text)
}


/// `flush()`'s result, `{sent, pending}`.
struct FlushResult {
    sent: u32,
    pending: u32,
}

impl serde::Serialize for FlushResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("sent", &self.sent)?;
        map.serialize_entry("pending", &self.pending)?;
        map.end()
    }
}

/// `flush()`: tries to send everything now; resolves to `{sent, pending}`.
#[wasm_bindgen(js_name = flush)]
pub async fn flush() -> Result<JsValue, JsError> {
    if deliver::with(|s| s.config.is_none()) {
        return Err(not_initialized());
    }
    let (sent, pending) = deliver::flush_now().await;
    // `{sent, pending}` (a map serializes to a plain object, see `deliver::Status`).
    deliver::to_js(&FlushResult { sent, pending }).ok_or_else(|| err("flush: could not build the result"))
}

/// `pending()`: how many events wait in the queue (all tabs of this origin).
#[wasm_bindgen(js_name = pending)]
pub fn pending() -> Result<u32, JsError> {
    deliver::with(|s| {
        s.config.as_ref().ok_or_else(not_initialized)?;
        Ok(s.store.load().events.len() as u32)
    })
}

/// `onStatus(callback)`: reports sent / queued / dropped / rejected; returns the unsubscribe function.
#[wasm_bindgen(js_name = onStatus)]
pub fn on_status(callback: JsValue) -> Result<Function, JsError> {
    let callback: Function = callback.dyn_into().map_err(|_| err("onStatus: callback must be a function"))?;
    let id = deliver::subscribe(callback);
    Ok(Closure::once_into_js(move || deliver::unsubscribe(id)).unchecked_into())
}
