//! Thin wrappers over the browser APIs the SDK needs: randomness, clock, timers,
//! and the user agent. Anything missing (no `window`, no `crypto`) degrades
//! instead of throwing, because storage and network trouble must never reach the lesson.

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

pub fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

/// 16 bytes from `crypto.getRandomValues`.
pub fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Some(c) = window().and_then(|w| w.crypto().ok()) {
        let _ = c.get_random_values_with_u8_array(&mut b);
    }
    // Without crypto (never in a real browser) fall back to Math.random.
    if b == [0; 16] {
        for x in b.iter_mut() {
            *x = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    b
}

/// A uniform u32 for backoff jitter.
pub fn random_u32() -> u32 {
    let b = random_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Now as RFC 3339 with milliseconds in UTC (`Date.prototype.toISOString`).
pub fn now_rfc3339() -> String {
    js_sys::Date::new_0().to_iso_string().into()
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// False when the browser knows it has no network (`navigator.onLine`); true
/// when it may have one.
pub fn online() -> bool {
    window().is_none_or(|w| w.navigator().on_line())
}

/// `endpoint` as the browser's URL parser spells it: scheme and host lower-case,
/// default port dropped (`origin`), then the path without trailing slashes.
/// `None` when it is no URL.
pub fn normalize_endpoint(endpoint: &str) -> Option<String> {
    let url = web_sys::Url::new(endpoint).ok()?;
    let mut out = url.origin();
    let path = url.pathname();
    let mut end = path.len();
    // A byte loop (`trim_end_matches` is a few hundred bytes of wasm).
    while end > 0 && path.as_bytes()[end - 1] == b'/' {
        end -= 1;
    }
    out.push_str(path.get(..end).unwrap_or_default());
    Some(out)
}

pub fn user_agent() -> String {
    window()
        .and_then(|w| w.navigator().user_agent().ok())
        .unwrap_or_default()
}

/// A promise and the function that resolves it.
pub fn deferred() -> (Promise, Function) {
    let mut resolve_fn = None;
    let promise = Promise::new(&mut |resolve, _reject| resolve_fn = Some(resolve));
    (promise, resolve_fn.unwrap_or_else(|| Function::new_no_args("")))
}

/// Runs `callback` after `ms`; returns the timer id for [`cancel_timer`].
pub fn set_timer(ms: u32, callback: impl FnOnce() + 'static) -> Option<i32> {
    let cb = Closure::once_into_js(callback);
    window()?
        .set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), ms.min(i32::MAX as u32) as i32)
        .ok()
}

pub fn cancel_timer(id: i32) {
    if let Some(w) = window() {
        w.clear_timeout_with_handle(id);
    }
}

/// Resolves after `ms`.
pub async fn sleep(ms: u32) {
    let (promise, resolve) = deferred();
    if set_timer(ms, move || {
        let _ = resolve.call0(&JsValue::NULL);
    })
    .is_some()
    {
        let _ = JsFuture::from(promise).await;
    }
}

/// Registers `handler` for `event` on `target` for the life of the page.
pub fn listen(target: &web_sys::EventTarget, event: &str, handler: impl FnMut() + 'static) {
    let cb = Closure::<dyn FnMut()>::new(handler);
    let _ = target.add_event_listener_with_callback(event, cb.as_ref().unchecked_ref());
    cb.forget();
}
