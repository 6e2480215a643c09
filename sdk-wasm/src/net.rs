//! One HTTP request to the collector, reduced to what the delivery loop needs:
//! status, `Retry-After`, body text. Never fails: a network error is a reply
//! without status. The request is built with gloo-net's `RequestBuilder` and sent
//! with `fetch` (web-sys); gloo-net's `send`/`Response::text` are avoided because
//! their should-not-happen paths format a `JsValue` with `Debug` (0.8 KB gzipped).

use crate::engine::Reply;
use crate::policy::retry_after_seconds_ms;
use gloo_net::http::{Method, RequestBuilder};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Gives up on a request after this long (a hung request would hold the flush lock).
const REQUEST_TIMEOUT_MS: u32 = 20_000;

/// `POST url` with `headers` (those with a value) and an optional body. `keepalive` lets the request
/// outlive the page (pagehide).
pub async fn post(url: &str, headers: &[(&str, &str)], body: Option<&str>, keepalive: bool) -> Reply {
    let failed = Reply {
        status: None,
        retry_after_ms: None,
        body: String::new(),
    };
    let mut builder = RequestBuilder::new(url).method(Method::POST);
    for (k, v) in headers {
        if !v.is_empty() {
            builder = builder.header(k, v);
        }
    }
    if !keepalive {
        builder = builder.abort_signal(Some(&web_sys::AbortSignal::timeout_with_u32(REQUEST_TIMEOUT_MS)));
    }
    let request = match body {
        Some(b) => builder.body(b),
        None => builder.build(),
    };
    let Ok(request) = request else { return failed };
    let mut request: web_sys::Request = request.into();
    if keepalive {
        // gloo-net's builder has no keepalive: copy the request with it set (and the body again).
        let init = web_sys::RequestInit::new();
        let _ = js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::TRUE);
        if let Some(b) = body {
            init.set_body(&JsValue::from_str(b));
        }
        let Ok(copy) = web_sys::Request::new_with_request_and_init(&request, &init) else {
            return failed;
        };
        request = copy;
    }
    let Some(window) = web_sys::window() else { return failed };
    let Ok(response) = JsFuture::from(window.fetch_with_request(&request)).await else {
        return failed;
    };
    let response: web_sys::Response = response.unchecked_into();
    let retry_after_ms = response.headers().get("retry-after").ok().flatten().and_then(|v| {
        retry_after_seconds_ms(&v).or_else(|| {
            // An HTTP date instead of seconds.
            let at = js_sys::Date::parse(&v);
            (at.is_finite()).then(|| (at - js_sys::Date::now()).clamp(0.0, u32::MAX as f64) as u32)
        })
    });
    let body = match response.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Reply {
        status: Some(response.status()),
        retry_after_ms,
        body,
    }
}
