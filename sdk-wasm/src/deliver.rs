//! The delivery glue: the SDK's state, one flush pass, status reports, timers
//! and page hooks. Every decision (what to send, what leaves the queue, how long
//! to wait) is the pure [`Engine`]'s; this file carries out its effects around
//! `await`s. The state is never borrowed across an `await` or while calling
//! lesson callbacks.

use crate::browser::{self, cancel_timer, now_ms, random_u32, set_timer};
use crate::config::Config;
use crate::engine::{Engine, Next};
use crate::policy::Outcome;
use crate::queue::Event;
use crate::store::Store;
use crate::{lock, net};
use js_sys::Function;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

pub struct Sdk {
    pub config: Option<Config>,
    pub engine: Option<Engine>,
    pub store: Store,
    listeners: Vec<(u32, Function)>,
    next_listener: u32,
    retry_timer: Option<i32>,
    hooks_installed: bool,
    /// Recent verdicts of this tab, newest last: a `logAnswer` whose event went out in
    /// another call's pass (e.g. init's) still learns whether it was sent or rejected.
    recent: Vec<(String, Outcome)>,
}

thread_local! {
    static SDK: RefCell<Sdk> = RefCell::new(Sdk {
        config: None,
        engine: None,
        store: Store::open(),
        listeners: Vec::new(),
        next_listener: 0,
        retry_timer: None,
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

/// A plain JS object with `fields` (those with a value). Built with `Reflect.set`
/// rather than serde-wasm-bindgen: its serializer cost 0.x KB gzipped (docs/BENCHMARKS.md).
pub fn object(fields: &[(&str, Option<JsValue>)]) -> JsValue {
    let o = js_sys::Object::new();
    for (key, value) in fields {
        if let Some(v) = value {
            let _ = js_sys::Reflect::set(&o, &JsValue::from_str(key), v);
        }
    }
    o.into()
}

impl Status<'_> {
    fn to_js(&self) -> JsValue {
        let num = |n: u32| JsValue::from(n);
        object(&[
            ("kind", Some(JsValue::from_str(self.kind))),
            ("id", self.id.map(JsValue::from_str)),
            ("count", self.count.map(num)),
            ("reason", self.reason.map(JsValue::from_str)),
            ("pending", Some(num(self.pending))),
        ])
    }
}

pub fn emit(status: Status) {
    let listeners: Vec<Function> = with(|s| s.listeners.iter().map(|(_, f)| f.clone()).collect());
    if listeners.is_empty() {
        return;
    }
    let value = status.to_js();
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

fn pending_len() -> u32 {
    with(|s| s.store.len())
}

/// Sends the next request the engine asks for, once, and carries out its verdict.
/// Returns `None` when nothing is left to send, else what next.
async fn step(keepalive: bool, settled: &mut Settled) -> Option<Next> {
    let send = with(|s| {
        let q = s.store.load();
        s.engine.as_ref()?.next(&q)
    })?;
    let reply = match &send.body {
        None => {
            let e = &send.events[0];
            let headers = [
                ("Idempotency-Key", e.id.as_str()),
                ("X-Client-Time", e.client_time.as_str()),
                ("X-Learner-Id", e.learner_id.as_str()),
            ];
            net::post(&send.url, &headers, None, keepalive).await
        }
        Some(body) => {
            net::post(
                &send.url,
                &[("Content-Type", "application/json")],
                Some(body),
                keepalive,
            )
            .await
        }
    };
    let verdict = with(|s| Some(s.engine.as_mut()?.reply(&send, &reply, now_ms(), random_u32())))?;
    if !verdict.delivered.is_empty() || !verdict.rejected.is_empty() {
        let mut ids: Vec<&str> = verdict.delivered.iter().map(String::as_str).collect();
        ids.extend(verdict.rejected.iter().map(|(id, _)| id.as_str()));
        let pending = with(|s| s.store.remove(&ids, verdict.dropped_reported));
        for id in &verdict.delivered {
            record(settled, id, Outcome::Done);
        }
        match verdict.delivered.as_slice() {
            [] => {}
            [one] if send.body.is_none() => emit(Status {
                kind: "sent",
                id: Some(one),
                pending,
                ..Default::default()
            }),
            many => emit(Status {
                kind: "sent",
                count: Some(many.len() as u32),
                pending,
                ..Default::default()
            }),
        }
        for (id, reason) in &verdict.rejected {
            record(settled, id, Outcome::Rejected);
            emit(Status {
                kind: "rejected",
                id: Some(id),
                reason: Some(reason),
                pending,
                ..Default::default()
            });
        }
    }
    Some(verdict.next)
}

/// Sends until nothing of this page's is left or a request must be retried later,
/// holding the flush lock.
pub async fn flush_pass(settled: &mut Settled) {
    let storage = with(|s| {
        if s.store.shared() {
            s.store.local().cloned()
        } else {
            None
        }
    });
    let outcome = lock::exclusive(storage, async {
        loop {
            match step(false, settled).await {
                Some(Next::Continue) => continue,
                None => return None,
                Some(Next::Retry(delay)) => return Some(delay),
            }
        }
    })
    .await;
    let timer = with(|s| {
        if outcome.is_none() {
            if let Some(engine) = s.engine.as_mut() {
                engine.idle();
            }
        }
        s.retry_timer.take()
    });
    if let Some(t) = timer {
        cancel_timer(t);
    }
    if let Some(delay) = outcome {
        let timer = set_timer(delay, || {
            with(|s| s.retry_timer = None);
            flush_soon();
        });
        with(|s| s.retry_timer = timer);
    }
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
/// Resolves to "sent", "queued" (in localStorage), "queued-memory" (localStorage
/// refused it: kept only while this page stays open) or "rejected".
pub fn enqueue(event: Event, max_queue: u32) -> js_sys::Promise {
    let id = event.id.clone();
    let (dropped, pending, stored) = with(|s| s.store.add(event, max_queue as usize));
    let queued = if stored { "queued" } else { "queued-memory" };
    if dropped > 0 {
        emit(Status {
            kind: "dropped",
            count: Some(dropped as u32),
            pending,
            ..Default::default()
        });
    }
    promise(Box::pin(async move {
        let mut settled = Vec::new();
        // Offline, a send can only fail: the event is stored, so answer "queued" at
        // once; the `online` listener sends it.
        let tried = with(|s| {
            s.engine
                .as_ref()
                .is_some_and(|e| e.may_send_now(browser::online(), now_ms()))
        });
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
                emit(Status {
                    kind: queued,
                    id: Some(&id),
                    pending,
                    ..Default::default()
                });
                queued
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
        with(|s| s.engine.as_mut().map(Engine::online));
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
