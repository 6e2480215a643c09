//! Where the queue lives: localStorage (shared by the tabs of one origin and kept
//! across reloads), with an in-memory copy that takes over when localStorage is
//! missing, disabled or full, so the SDK keeps working either way.

use crate::queue::{decode_events, encode_events, Queue};
use web_sys::Storage;

/// The stored queue (a JSON array of events), per DESIGN.md.
pub const QUEUE_KEY: &str = "hourofci-log:queue:v1";
/// Dropped events not yet reported to the collector (a decimal integer).
pub const DROPPED_KEY: &str = "hourofci-log:dropped:v1";

pub struct Store {
    local: Option<Storage>,
    /// The last queue written; the truth while `degraded` or without localStorage.
    memory: Queue,
    /// The last localStorage write failed (quota, disabled): use `memory` until one succeeds.
    degraded: bool,
}

impl Store {
    pub fn open() -> Store {
        // `window.localStorage` throws when storage is disabled; treat that as missing.
        let local = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
        Store { local, memory: Queue::default(), degraded: false }
    }

    /// The current queue (fresh from localStorage, so other tabs' changes are seen).
    pub fn load(&mut self) -> Queue {
        if let (Some(ls), false) = (&self.local, self.degraded) {
            if let (Ok(events), Ok(dropped)) = (ls.get_item(QUEUE_KEY), ls.get_item(DROPPED_KEY)) {
                return Queue {
                    events: events.map(|t| decode_events(&t)).unwrap_or_default(),
                    dropped: dropped.and_then(|d| crate::json::parse_uint(&d, 10)).unwrap_or(0),
                };
            }
            self.degraded = true;
        }
        self.memory.clone()
    }

    /// Writes the queue; on failure keeps it in memory (and retries localStorage next time).
    pub fn save(&mut self, queue: &Queue) {
        self.memory = queue.clone();
        if let Some(ls) = &self.local {
            let events_ok = if queue.events.is_empty() {
                ls.remove_item(QUEUE_KEY).is_ok()
            } else {
                ls.set_item(QUEUE_KEY, &encode_events(&queue.events)).is_ok()
            };
            let dropped_ok = if queue.dropped == 0 {
                ls.remove_item(DROPPED_KEY).is_ok()
            } else {
                let mut n = String::new();
                crate::json::write_u64(&mut n, queue.dropped);
                ls.set_item(DROPPED_KEY, &n).is_ok()
            };
            self.degraded = !(events_ok && dropped_ok);
        }
    }

    /// Is the queue currently shared with other tabs (and kept across reloads)?
    pub fn shared(&self) -> bool {
        self.local.is_some() && !self.degraded
    }

    pub fn local(&self) -> Option<&Storage> {
        self.local.as_ref()
    }
}
