//! The delivery engine: the SDK's state, one flush pass (single POST or
//! `/batch` chunks, oldest first), status reports, and when to try again.
//!
//! Every decision is made by the pure modules (`queue`, `policy`); this file
//! sequences them around `await`s. The state is never borrowed across an
//! `await` or while calling lesson callbacks.

use crate::browser::{self, cancel_timer, now_ms, random_u32, set_timer};
use crate::config::Config;
use crate::encode::encode_uri_component as enc;
use crate::json::{self, Json};
use crate::policy::{backoff_ms, classify, Outcome};
use crate::queue::{batch_body, Event};
use crate::store::Store;
use crate::{lock, net};
use js_sys::Function;
use serde::Serialize;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// Keeps batch bodies under the collector's 1 MiB limit.
const MAX_BATCH_BYTES: usize = 900 * 1024;

pub struct Sdk {
    pub config: Option<Config>,
    pub store: Store,
    listeners: Vec<(u32, Function)>,
    next_listener: u32,
    /// Failed passes in a row (the backoff exponent).
    attempt: u32,
    retry_timer: Option<i32>,
    /// The collector's `Retry-After`: new answers wait until then (ms since epoch).
    not_before: f64,
    hooks_installed: bool,
    /// Recent verdicts of this tab, newest last: a `logAnswer` whose event went out in
    /// another call's pass (e.g. init's) still learns whether it was sent or rejected.
    recent: Vec<(String, Outcome)>,
}

thread_local! {
    static SDK: RefCell<Sdk> = RefCell::new(Sdk {
        config: None,
        store: Store::open(),
        listeners: Vec::new(),
        next_listener: 0,
        attempt: 0,
        retry_timer: None,
        not_before: 0.0,
        hooks_installed: false,
        recent: Vec::new(),
    });
}

/// Runs `f` on the SDK state (never across an `await`).
pub fn with<R>(f: impl FnOnce(&mut Sdk) -> R) -> R {
    SDK.with(|s| f(&mut s.borrow_mut()))
}

/// What `onStatus` callbacks receive (`StatusEvent` in index.d.ts).
#[derive(Default)]
pub struct Status<'a> {
    pub kind: &'a str,
    pub id: Option<&'a str>,
    pub count: Option<u32>,
    pub reason: Option<&'a str>,
    pub pending: u32,
}

/// Written as a map, not derived: serde-wasm-bindgen's struct path interns field
/// names in a hash map, about 4 KB of wasm; its map path (as a plain object) does not.
impl Serialize for Status<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        if let Some(count) = self.count {
            map.serialize_entry("count", &count)?;
        }
        if let Some(reason) = self.reason {
            map.serialize_entry("reason", reason)?;
        }
        map.serialize_entry("pending", &self.pending)?;
        map.end()
    }
}

/// A JS value from anything serializable, maps as plain objects.
pub fn to_js<T: Serialize>(value: &T) -> Option<JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true)).ok()
}

pub fn emit(status: Status) {
    let listeners: Vec<Function> = with(|s| s.listeners.iter().map(|(_, f)| f.clone()).collect());
    if listeners.is_empty() {
        return;
    }
    let Some(value) = to_js(&status) else { return };
    for f in listeners {
        // A throwing callback is the lesson's bug; it must not stop delivery.
        let _ = f.call1(&JsValue::NULL, &value);
    }
}

pub fn subscribe(callback: Function) -> u32 {
    with(|s| {
        s.next_listener += 1;
        s.listeners.push((s.next_listener, callback));
        s.next_listener
    })
}

pub fn unsubscribe(id: u32) {
    with(|s| s.listeners.retain(|(i, _)| *i != id));
}

/// How the events of one pass ended.
pub type Settled = Vec<(String, Outcome)>;

/// How many verdicts [`Sdk::recent`] keeps.
const RECENT: usize = 1024;

fn record(settled: &mut Settled, id: &str, outcome: Outcome) {
    settled.push((id.to_string(), outcome));
    with(|s| {
        if s.recent.len() >= RECENT {
            // The oldest goes (not `drain`: a generic instance more in the wasm).
            s.recent.remove(0);
        }
        s.recent.push((id.to_string(), outcome));
    });
}

enum Step {
    /// Nothing (left) to send.
    Idle,
    /// Some events left the queue; go on.
    Progress,
    /// Stop and try later, not before the server's `Retry-After` if any.
    Retry(Option<u32>),
}

fn pending_len() -> u32 {
    with(|s| s.store.len())
}

/// Removes the settled `ids` from the queue; returns how many events are left.
fn settle(ids: &[&str], dropped_reported: u64) -> u32 {
    with(|s| s.store.remove(ids, dropped_reported))
}

/// The collector's reason for refusing an event, from its JSON error body.
fn reason_of(body: &str, status: Option<u16>) -> String {
    // Every 4xx body of the collector is `{"error":..,"field":..,"rule":"<sentence>"}`.
    let rule = json::parse(body).and_then(|v| v.get("rule").and_then(Json::as_str).map(str::to_string));
    rule.unwrap_or_else(|| {
        let mut s = String::from("HTTP ");
        json::write_u64(&mut s, status.unwrap_or(0) as u64);
        s
    })
}

fn base_url(cfg: &Config, test: bool) -> String {
    let mut url = cfg.endpoint.clone();
    if test {
        url.push_str("/test");
    }
    url
}

/// `POST {endpoint}[/test]/{ua}/{lesson}/{level}/{question}/{answer}` for one event.
async fn send_single(cfg: &Config, e: &Event, keepalive: bool, settled: &mut Settled) -> Step {
    let mut url = base_url(cfg, e.test);
    for segment in [&e.user_agent, &e.lesson, &e.level, &e.question, &e.answer] {
        url.push('/');
        url.push_str(&enc(segment));
    }
    let headers = [("Idempotency-Key", e.id.as_str()), ("X-Client-Time", e.client_time.as_str())];
    let reply = net::post(&url, &headers, None, keepalive).await;
    let outcome = classify(reply.status);
    if outcome == Outcome::Retry {
        return Step::Retry(reply.retry_after_ms);
    }
    let pending = settle(&[&e.id], 0);
    record(settled, &e.id, outcome);
    if outcome == Outcome::Done {
        emit(Status { kind: "sent", id: Some(&e.id), pending, ..Default::default() });
    } else {
        let reason = reason_of(&reply.body, reply.status);
        emit(Status { kind: "rejected", id: Some(&e.id), reason: Some(&reason), pending, ..Default::default() });
    }
    Step::Progress
}

/// Sends the oldest pending event(s) once.
async fn step(keepalive: bool, settled: &mut Settled) -> Step {
    let Some((cfg, q)) = with(|s| Some((s.config.clone()?, s.store.load()))) else { return Step::Idle };
    let Some(first) = q.events.first() else { return Step::Idle };
    // The path form cannot carry an empty value; the batch form can.
    let path_form_ok = [&first.user_agent, &first.lesson, &first.level, &first.question, &first.answer].iter().all(|v| !v.is_empty());
    if q.events.len() == 1 && q.dropped == 0 && path_form_ok {
        return send_single(&cfg, first, keepalive, settled).await;
    }
    let chunk = q.next_chunk(cfg.batch_size as usize, MAX_BATCH_BYTES);
    let mut url = base_url(&cfg, first.test);
    url.push_str("/batch");
    let body = batch_body(&chunk, q.dropped);
    let reply = net::post(&url, &[("Content-Type", "application/json")], Some(&body), keepalive).await;
    match classify(reply.status) {
        Outcome::Retry => Step::Retry(reply.retry_after_ms),
        Outcome::Rejected => {
            // The batch as a whole was refused (too large, malformed): send its events
            // one by one so each gets its own verdict instead of losing them all.
            for e in &chunk {
                if let Step::Retry(after) = send_single(&cfg, e, keepalive, settled).await {
                    return Step::Retry(after);
                }
            }
            Step::Progress
        }
        Outcome::Done => {
            let parsed = json::parse(&reply.body);
            let results = parsed.as_ref().and_then(|v| v.get("results")).and_then(Json::as_array).unwrap_or(&[]);
            let mut delivered: Vec<&str> = Vec::new();
            let mut rejected: Vec<(&str, &str)> = Vec::new();
            for r in results {
                let Some(id) = r.get("id").and_then(Json::as_str) else { continue };
                if !chunk.iter().any(|e| e.id == id) {
                    continue;
                }
                match r.get("status").and_then(Json::as_str) {
                    Some("written" | "duplicate") => delivered.push(id),
                    Some("invalid") => rejected.push((id, r.get("reason").and_then(Json::as_str).unwrap_or("invalid"))),
                    _ => {}
                }
            }
            if delivered.is_empty() && rejected.is_empty() {
                return Step::Retry(None);
            }
            let all: Vec<&str> = delivered.iter().copied().chain(rejected.iter().map(|(id, _)| *id)).collect();
            let pending = settle(&all, q.dropped);
            for id in &delivered {
                record(settled, id, Outcome::Done);
            }
            if !delivered.is_empty() {
                emit(Status { kind: "sent", count: Some(delivered.len() as u32), pending, ..Default::default() });
            }
            for (id, reason) in rejected {
                record(settled, id, Outcome::Rejected);
                emit(Status { kind: "rejected", id: Some(id), reason: Some(reason), pending, ..Default::default() });
            }
            Step::Progress
        }
    }
}

/// Sends until the queue is empty or a request must be retried later, holding the flush lock.
pub async fn flush_pass(settled: &mut Settled) {
    let storage = with(|s| if s.store.shared() { s.store.local().cloned() } else { None });
    let outcome = lock::exclusive(storage, async {
        loop {
            match step(false, settled).await {
                Step::Progress => continue,
                Step::Idle => return None,
                Step::Retry(after) => return Some(after),
            }
        }
    })
    .await;
    match outcome {
        None => with(|s| {
            s.attempt = 0;
            if let Some(t) = s.retry_timer.take() {
                cancel_timer(t);
            }
        }),
        Some(after) => schedule_retry(after),
    }
}

/// Arms the retry timer: exponential backoff with full jitter, at least `Retry-After`.
fn schedule_retry(retry_after_ms: Option<u32>) {
    let Some(delay) = with(|s| {
        let cfg = s.config.as_ref()?;
        let delay = backoff_ms(s.attempt, cfg.retry_base_ms, cfg.retry_cap_ms, random_u32(), retry_after_ms);
        s.attempt = s.attempt.saturating_add(1);
        if let Some(after) = retry_after_ms {
            s.not_before = now_ms() + after as f64;
        }
        if let Some(t) = s.retry_timer.take() {
            cancel_timer(t);
        }
        Some(delay)
    }) else {
        return;
    };
    let timer = set_timer(delay, || {
        with(|s| s.retry_timer = None);
        flush_soon();
    });
    with(|s| s.retry_timer = timer);
}

/// Runs `future` in the background. Every task goes through this one
/// (type-erased) call, so the executor's spawn code is in the wasm once rather
/// than once per future type.
pub fn spawn(future: Pin<Box<dyn Future<Output = ()>>>) {
    spawn_local(future);
}

/// A JS promise settled by `future`; like [`spawn`], one instance for all callers.
pub fn promise(future: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>>) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(future)
}

/// Starts a flush pass in the background.
pub fn flush_soon() {
    spawn(Box::pin(async {
        flush_pass(&mut Vec::new()).await;
    }));
}

/// Queues `event` (persisted before anything is sent) and tries to deliver it.
/// Resolves to "sent", "queued" or "rejected".
pub fn enqueue(event: Event, max_queue: u32) -> js_sys::Promise {
    let id = event.id.clone();
    let (dropped, pending) = with(|s| s.store.add(event, max_queue as usize));
    if dropped > 0 {
        emit(Status { kind: "dropped", count: Some(dropped as u32), pending, ..Default::default() });
    }
    promise(Box::pin(async move {
        let mut settled = Vec::new();
        // Offline, a send can only fail: the event is stored, so answer "queued" at
        // once; the `online` listener sends it.
        let tried = browser::online() && with(|s| now_ms() >= s.not_before);
        if tried {
            flush_pass(&mut settled).await;
        }
        let mine = with(|s| s.recent.iter().rev().find(|(i, _)| *i == id).map(|(_, o)| *o));
        let delivery = match mine {
            Some(Outcome::Rejected) => "rejected",
            Some(_) => "sent",
            // Another tab delivered it while we waited for the lock. (Not tried: it
            // was stored just now, so it is still queued; don't parse the queue.)
            None if tried && !with(|s| s.store.load().contains(&id)) => "sent",
            None => {
                // Not tried: the count `add` just took is still right.
                let pending = if tried { pending_len() } else { pending };
                emit(Status { kind: "queued", id: Some(&id), pending, ..Default::default() });
                "queued"
            }
        };
        Ok(JsValue::from_str(delivery))
    }))
}

/// `flush()`: one pass now, whatever the backoff timer says.
pub async fn flush_now() -> (u32, u32) {
    let mut settled = Vec::new();
    flush_pass(&mut settled).await;
    let sent = settled.iter().filter(|(_, o)| *o == Outcome::Done).count() as u32;
    (sent, pending_len())
}

/// Page-level triggers, installed once: retry at once when the browser comes back
/// online; send with `keepalive` when the page is hidden or unloaded.
pub fn install_hooks() {
    if with(|s| std::mem::replace(&mut s.hooks_installed, true)) {
        return;
    }
    let Some(window) = browser::window() else { return };
    browser::listen(&window, "online", || {
        with(|s| {
            s.attempt = 0;
            s.not_before = 0.0;
        });
        flush_soon();
    });
    let send_before_leaving = || {
        // Offline, the send could only fail; the events stay stored for the next visit.
        if !browser::online() {
            return;
        }
        // No lock: the page may be frozen before a lock is granted, and a resend is
        // harmless (the event id makes the collector answer "duplicate").
        spawn(Box::pin(async {
            let _ = step(true, &mut Vec::new()).await;
        }));
    };
    browser::listen(&window, "pagehide", send_before_leaving);
    if let Some(document) = window.document() {
        let doc = document.clone();
        browser::listen(&document, "visibilitychange", move || {
            if doc.visibility_state() == web_sys::VisibilityState::Hidden {
                send_before_leaving();
            }
        });
    }
}
