//! Where the queue lives: localStorage (shared by the tabs of one origin and kept
//! across reloads), one entry per event, with an in-memory list for the events
//! localStorage refuses (missing, disabled or full), so the SDK keeps working either way.
//!
//! Nothing shared is ever read, modified and written back, because tabs in other
//! renderer processes see localStorage writes a moment late and such a rewrite
//! could erase another tab's event: an event is written once under its own key
//! (see `queue::event_key`) and removed once settled. The count of dropped events
//! is kept per tab, in memory (losing a count is acceptable, losing an event is not).

use crate::json::Json;
use crate::queue::{self, decode_event, encode_event, event_from_json, event_key, key_id, Event, Queue};
use web_sys::Storage;

/// Where SDKs before per-event keys kept the whole queue (a JSON array); migrated on load.
pub const LEGACY_QUEUE_KEY: &str = "hourofci-log:queue:v1";
/// The first endpoint initialised on this origin by an SDK that records endpoints:
/// events stored without one (older SDKs) are sent there, and nowhere else.
pub const LEGACY_ENDPOINT_KEY: &str = "hourofci-log:legacy-endpoint:v1";

pub struct Store {
    local: Option<Storage>,
    /// Events localStorage refused (missing, disabled, full), by key: they stay
    /// with this tab, which alone sends them, until delivered.
    memory_keys: Vec<String>,
    /// Their values (same index).
    memory_values: Vec<String>,
    /// The order of this tab's last event (`queue::next_order`).
    last_order: u64,
    /// Keys of old-queue events this page already took into memory (the old key
    /// stays while one of its events could not be stored): taken once per page.
    migrated_to_memory: Vec<String>,
    /// Events this tab dropped (over `maxQueue`) and has not reported yet: a per-tab
    /// count, reported with this tab's next batch (never a shared rewrite).
    dropped: u64,
}

impl Store {
    pub fn open() -> Store {
        // `window.localStorage` throws when storage is disabled; treat that as missing.
        let local = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
        Store {
            local,
            memory_keys: Vec::new(),
            memory_values: Vec::new(),
            last_order: 0,
            migrated_to_memory: Vec::new(),
            dropped: 0,
        }
    }

    /// Writes a new entry: to localStorage, else (refused) to memory. Returns
    /// whether it is in localStorage (kept on this device, not only in this page).
    fn set(&mut self, key: String, value: String) -> bool {
        let stored = self.local.as_ref().is_some_and(|ls| ls.set_item(&key, &value).is_ok());
        if !stored {
            self.memory_keys.push(key);
            self.memory_values.push(value);
        }
        stored
    }

    /// Whose are events stored without an endpoint? The first endpoint initialised
    /// on this origin (recorded now if none is); `true` when it is `endpoint`. When
    /// none is recorded and a full localStorage refuses the record, this page is
    /// still the first: it sends them (a later page records its own).
    pub fn owns_legacy(&self, endpoint: &str) -> bool {
        let Some(ls) = &self.local else { return false };
        match ls.get_item(LEGACY_ENDPOINT_KEY).ok().flatten() {
            Some(first) => first == endpoint,
            None => {
                let _ = ls.set_item(LEGACY_ENDPOINT_KEY, endpoint);
                true
            }
        }
    }

    /// Removes one entry (idempotent: clobbers nothing another tab wrote).
    fn delete(&mut self, key: &str) {
        if let Some(i) = self.memory_keys.iter().position(|k| k == key) {
            self.memory_keys.remove(i);
            self.memory_values.remove(i);
        }
        if let Some(ls) = &self.local {
            let _ = ls.remove_item(key);
        }
    }

    /// The keys of all pending events, this tab's and the others' (fresh from
    /// localStorage, so other tabs' changes are seen), oldest first: the stored ones
    /// sorted (their order field is fixed-width, so as strings), then the ones only
    /// this tab holds (storage refused them, so they are this tab's newest).
    fn keys(&mut self) -> Vec<String> {
        self.migrate();
        let mut keys = Vec::new();
        if let Some(ls) = &self.local {
            for key in js_sys::Object::keys(ls).sort().iter() {
                if let Some(key) = key.as_string().filter(|k| key_id(k).is_some()) {
                    keys.push(key);
                }
            }
        }
        for key in &self.memory_keys {
            keys.push(key.clone());
        }
        keys
    }

    /// The event stored under `key`; `None` when gone (another tab settled it) or unreadable.
    fn event(&mut self, key: &str) -> Option<Event> {
        let text = match self.memory_keys.iter().position(|k| k == key) {
            Some(i) => self.memory_values.get(i)?.clone(),
            None => self.local.as_ref()?.get_item(key).ok()??,
        };
        decode_event(&text)
    }

    /// The current queue, oldest first, and the drops not yet reported.
    pub fn load(&mut self) -> Queue {
        let mut events = Vec::new();
        let keys = self.keys();
        for key in &keys {
            if let Some(e) = self.event(key) {
                events.push(e);
            }
        }
        Queue {
            events,
            dropped: self.dropped,
        }
    }

    /// How many events are pending (all tabs).
    pub fn len(&mut self) -> u32 {
        self.keys().len() as u32
    }

    /// Stores a new event (before anything is sent); over `max_len` the oldest
    /// go and are counted. Returns how many were dropped now, the queue length, and
    /// whether the event is in localStorage (else only in this page's memory).
    pub fn add(&mut self, event: Event, max_len: usize) -> (u64, u32, bool) {
        self.last_order = queue::next_order(self.last_order, crate::browser::now_ms());
        let stored = self.set(event_key(self.last_order, &event.id), encode_event(&event));
        let keys = self.keys();
        let excess = queue::excess(keys.len(), max_len);
        for key in &keys[..excess] {
            self.delete(key);
        }
        self.dropped += excess as u64;
        (excess as u64, (keys.len() - excess) as u32, stored)
    }

    /// Removes the settled events `ids` (no-op for those another tab removed
    /// already) and takes `dropped_reported` off the drop count. Returns the queue length.
    pub fn remove(&mut self, ids: &[&str], dropped_reported: u64) -> u32 {
        let mut left = 0;
        let keys = self.keys();
        for key in &keys {
            if key_id(key).is_some_and(|id| ids.contains(&id)) {
                self.delete(key);
            } else {
                left += 1;
            }
        }
        self.dropped = self.dropped.saturating_sub(dropped_reported);
        left
    }

    /// Is the queue shared with other tabs (localStorage present)?
    pub fn shared(&self) -> bool {
        self.local.is_some()
    }

    pub fn local(&self) -> Option<&Storage> {
        self.local.as_ref()
    }

    /// Moves an old single-array queue (an SDK from before per-event keys, maybe
    /// still open in another tab) to per-event keys. Its events keep their order and
    /// sort before anything logged since; two tabs migrating at once write the same
    /// keys. Unreadable items are skipped, as the old SDK did. The old key goes only
    /// when every event in it is stored under its own key: one that localStorage
    /// refused lives in this page's memory, and the old key keeps it for the next.
    fn migrate(&mut self) {
        let Some(old) = self
            .local
            .as_ref()
            .and_then(|ls| ls.get_item(LEGACY_QUEUE_KEY).ok().flatten())
        else {
            return;
        };
        let mut all_stored = true;
        if let Some(Json::Array(items)) = crate::json::parse(&old) {
            for (order, item) in (0u64..).zip(&items) {
                if let Some(e) = event_from_json(item) {
                    let key = event_key(order, &e.id);
                    if self.migrated_to_memory.contains(&key) {
                        all_stored = false;
                    } else if !self.set(key.clone(), encode_event(&e)) {
                        all_stored = false;
                        self.migrated_to_memory.push(key);
                    }
                }
            }
        }
        if all_stored {
            self.delete(LEGACY_QUEUE_KEY);
        }
    }
}
