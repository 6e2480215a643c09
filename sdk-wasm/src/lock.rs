//! Only one flusher at a time, across the tabs of an origin and within a tab:
//! the Web Locks API where present, else a short lease in localStorage.
//! Within a tab, callers also queue behind each other on a promise chain.

use crate::browser::{deferred, now_ms, sleep};
use js_sys::{Function, Promise, Reflect};
use std::cell::RefCell;
use std::future::Future;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Storage;

const LOCK_NAME: &str = "hourofci-log:flush";
const LEASE_KEY: &str = "hourofci-log:lease:v1";
/// How long a lease holds when its tab vanishes without releasing it.
const LEASE_MS: u64 = 30_000;
/// Time for another tab's localStorage writes to reach this tab (other process):
/// waited after taking the lock, and before a new lease counts.
const SETTLE_MS: u32 = 60;

thread_local! {
    /// Settles when the last in-tab holder is done.
    static TAIL: RefCell<Option<Promise>> = const { RefCell::new(None) };
    static TAB_ID: String = crate::uuid::uuid_v4(crate::browser::random_bytes());
}

/// Runs `work` while holding the flush lock. `storage` is the shared queue's
/// localStorage (for the lease fallback); `None` means the queue is not shared.
pub async fn exclusive<T>(storage: Option<Storage>, work: impl Future<Output = T>) -> T {
    let (mine, release_tab) = deferred();
    let before = TAIL.with(|t| t.replace(Some(mine)));
    if let Some(p) = before {
        let _ = JsFuture::from(p).await;
    }
    let out = match storage {
        Some(ls) => cross_tab(&ls, work).await,
        None => work.await,
    };
    let _ = release_tab.call0(&JsValue::NULL);
    out
}

async fn cross_tab<T>(ls: &Storage, work: impl Future<Output = T>) -> T {
    if let Some((locks, request)) = web_locks() {
        let (acquired, on_acquired) = deferred();
        let (held, release) = deferred();
        let callback = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
            let _ = on_acquired.call1(&JsValue::NULL, &JsValue::TRUE);
            held.into()
        });
        // `request` rejects instead of granting in some contexts (opaque origins):
        // then `granted` ends false and the lease below is used instead.
        let granted = request
            .call2(&locks, &JsValue::from_str(LOCK_NAME), &callback)
            .ok()
            .and_then(|done| {
                let refused = Closure::once_into_js(|_error: JsValue| JsValue::FALSE);
                let catch = Reflect::get(&done, &JsValue::from_str("catch"))
                    .ok()?
                    .dyn_into::<Function>()
                    .ok()?;
                let refused = catch.call1(&done, &refused).ok()?;
                let either = js_sys::Array::new();
                either.push(&acquired);
                either.push(&refused);
                Some(Promise::race(&either))
            });
        if let Some(granted) = granted {
            if JsFuture::from(granted).await.ok().and_then(|v| v.as_bool()) != Some(true) {
                return lease(ls, work).await;
            }
            // The lock is granted at once, but the previous holder's localStorage writes
            // reach this tab's copy (another process) a moment later; without this pause
            // a tab could resend what the other just delivered (harmless, but wasteful).
            sleep(SETTLE_MS).await;
            let out = work.await;
            let _ = release.call0(&JsValue::NULL);
            return out;
        }
    }
    lease(ls, work).await
}

/// The fallback without Web Locks: a lease in localStorage that expires if its tab vanishes.
async fn lease<T>(ls: &Storage, work: impl Future<Output = T>) -> T {
    let me = TAB_ID.with(|t| t.clone());
    loop {
        if take_lease(ls, &me) {
            // Tabs in other processes see localStorage writes a little later: if two
            // wrote at once, the last write wins everywhere after this pause.
            sleep(SETTLE_MS).await;
            if lease_holder(ls, &me).is_some_and(|(mine, _)| mine) {
                break;
            }
        }
        sleep(SETTLE_MS).await;
    }
    let out = work.await;
    if lease_holder(ls, &me).is_some_and(|(mine, _)| mine) {
        let _ = ls.remove_item(LEASE_KEY);
    }
    out
}

/// `navigator.locks` and its `request` method, when the browser has them (secure contexts).
fn web_locks() -> Option<(JsValue, Function)> {
    let nav = crate::browser::window()?.navigator();
    let locks = Reflect::get(&nav, &JsValue::from_str("locks"))
        .ok()
        .filter(|l| l.is_object())?;
    let request = Reflect::get(&locks, &JsValue::from_str("request"))
        .ok()?
        .dyn_into::<Function>()
        .ok()?;
    Some((locks, request))
}

/// Whether the lease is `me`'s, and until when it holds.
fn lease_holder(ls: &Storage, me: &str) -> Option<(bool, u64)> {
    let v = ls.get_item(LEASE_KEY).ok()??;
    // "<tab id> <until>": the tab id is a UUID, 36 characters (no search: smaller wasm).
    Some((v.get(..36)? == me, crate::json::parse_uint(v.get(37..)?, 10)?))
}

/// Takes the lease when it is free, expired or already ours, and checks it stuck
/// (another tab may have written at the same moment). Without working storage
/// there is nothing to share, so the lease is granted.
fn take_lease(ls: &Storage, me: &str) -> bool {
    let now = now_ms() as u64;
    match lease_holder(ls, me) {
        Some((mine, until)) if !mine && until > now => false,
        _ => {
            let mut v = String::from(me);
            v.push(' ');
            crate::json::write_u64(&mut v, now + LEASE_MS);
            if ls.set_item(LEASE_KEY, &v).is_err() {
                return true;
            }
            lease_holder(ls, me).is_none_or(|(mine, _)| mine)
        }
    }
}
