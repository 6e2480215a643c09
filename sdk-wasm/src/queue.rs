//! The delivery queue: what an event is, how the queue grows and shrinks, how a
//! backlog is cut into batches, and how it is stored as a JSON string.
//!
//! Pure logic; the browser glue (`store`, `deliver`) only moves strings in and out.

use crate::json::{self, Json};

/// One answer to deliver, as stored and as sent (DESIGN.md, "SDK delivery rules").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// UUID v4; the collector's `Idempotency-Key`, so a resend is harmless.
    pub id: String,
    /// `true` sends to the test table (`/test/...`).
    pub test: bool,
    pub user_agent: String,
    pub lesson: String,
    pub level: String,
    pub question: String,
    pub answer: String,
    /// RFC 3339 with milliseconds, UTC: when the learner acted.
    pub client_time: String,
}

/// The pending events, oldest first, and how many were dropped and not yet reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub events: Vec<Event>,
    pub dropped: u64,
}

impl Queue {
    /// Appends `event`; over `max_len`, drops the oldest. Returns how many were dropped now.
    pub fn push(&mut self, event: Event, max_len: usize) -> u64 {
        self.events.push(event);
        let excess = self.events.len().saturating_sub(max_len.max(1));
        self.events.drain(..excess);
        self.dropped += excess as u64;
        excess as u64
    }

    /// Removes the event `id` (acknowledged or rejected). False when it was not queued
    /// (another tab delivered it already).
    pub fn settle(&mut self, id: &str) -> bool {
        match self.events.iter().position(|e| e.id == id) {
            Some(i) => {
                self.events.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.events.iter().any(|e| e.id == id)
    }

    /// The next events to send together: the oldest event and the events after it
    /// with the same `test` flag (one table per request), at most `max_count` and
    /// at most `max_bytes` of batch body (always at least one event).
    pub fn next_chunk(&self, max_count: usize, max_bytes: usize) -> Vec<Event> {
        let Some(first) = self.events.first() else { return Vec::new() };
        let mut chunk = Vec::new();
        let mut bytes = 32;
        for e in self.events.iter().filter(|e| e.test == first.test) {
            let size = event_json_len(e);
            if chunk.len() == max_count.max(1) || (!chunk.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size + 1;
            chunk.push(e.clone());
        }
        chunk
    }
}

fn event_json_len(e: &Event) -> usize {
    let mut s = String::new();
    write_event(&mut s, e, false);
    s.len()
}

fn write_event(out: &mut String, e: &Event, with_test: bool) {
    let fields: [(&str, &str); 7] = [
        ("id", &e.id),
        ("user_agent", &e.user_agent),
        ("lesson", &e.lesson),
        ("level", &e.level),
        ("question", &e.question),
        ("answer", &e.answer),
        ("client_time", &e.client_time),
    ];
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(out, k);
        out.push(':');
        json::write_str(out, v);
    }
    if with_test {
        out.push_str(if e.test { ",\"test\":true" } else { ",\"test\":false" });
    }
    out.push('}');
}

/// The stored form of the queue: a JSON array of events (localStorage `hourofci-log:queue:v1`).
pub fn encode_events(events: &[Event]) -> String {
    let mut out = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_event(&mut out, e, true);
    }
    out.push(']');
    out
}

/// Reads the stored queue. Corrupt storage never fails: unreadable text gives an
/// empty queue and unreadable entries are skipped, so one bad write loses at most itself.
pub fn decode_events(text: &str) -> Vec<Event> {
    let Some(Json::Array(items)) = json::parse(text) else { return Vec::new() };
    items.iter().filter_map(event_from_json).collect()
}

fn event_from_json(v: &Json) -> Option<Event> {
    let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
    let id = s("id")?;
    if id.is_empty() {
        return None;
    }
    Some(Event {
        id,
        test: v.get("test").and_then(Json::as_bool).unwrap_or(false),
        user_agent: s("user_agent")?,
        lesson: s("lesson")?,
        level: s("level")?,
        question: s("question")?,
        answer: s("answer")?,
        client_time: s("client_time")?,
    })
}

/// The body of `POST /batch`: `{"events":[...],"dropped":N}`.
pub fn batch_body(events: &[Event], dropped: u64) -> String {
    let mut out = String::from("{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_event(&mut out, e, false);
    }
    out.push_str("],\"dropped\":");
    json::write_u64(&mut out, dropped);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn ev(n: u32, test: bool) -> Event {
        Event {
            id: format!("00000000-0000-4000-8000-{n:012}"),
            test,
            user_agent: "4eccc97c41f6b9e0815db3fe80057180".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: format!("answer {n} \"/?#%\n"),
            client_time: "2026-11-28T07:35:44.123Z".into(),
        }
    }

    #[test]
    fn over_max_drops_the_oldest_and_counts_them() {
        let mut q = Queue::default();
        for n in 0..5 {
            q.push(ev(n, false), 3);
        }
        assert_eq!(q.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![ev(2, false).id, ev(3, false).id, ev(4, false).id]);
        assert_eq!(q.dropped, 2);
    }

    #[test]
    fn settle_removes_only_that_event() {
        let mut q = Queue::default();
        for n in 0..3 {
            q.push(ev(n, false), 10);
        }
        assert!(q.settle(&ev(1, false).id));
        assert!(!q.settle(&ev(1, false).id));
        assert_eq!(q.events, vec![ev(0, false), ev(2, false)]);
    }

    #[test]
    fn chunks_are_oldest_first_one_table_and_bounded() {
        let mut q = Queue::default();
        for n in 0..7 {
            q.push(ev(n, n == 2), 100);
        }
        let c = q.next_chunk(3, 1 << 20);
        assert_eq!(c, vec![ev(0, false), ev(1, false), ev(3, false)]);
        let one = q.next_chunk(100, 10);
        assert_eq!(one, vec![ev(0, false)], "a huge event still goes alone");
        q.settle(&ev(0, false).id);
        q.settle(&ev(1, false).id);
        assert_eq!(q.next_chunk(100, 1 << 20), vec![ev(2, true)]);
    }

    #[test]
    fn corrupt_storage_gives_what_can_be_read() {
        assert_eq!(decode_events("not json"), vec![]);
        assert_eq!(decode_events("{\"a\":1}"), vec![]);
        let good = encode_events(&[ev(1, true)]);
        let mixed = format!("[{{\"id\":5}},{},null]", &good[1..good.len() - 1]);
        assert_eq!(decode_events(&mixed), vec![ev(1, true)]);
    }

    #[test]
    fn batch_body_matches_the_collector_contract() {
        let body = batch_body(&[ev(1, true)], 4);
        let v = json::parse(&body).unwrap();
        assert_eq!(v.get("dropped").and_then(Json::as_u64), Some(4));
        let e = &v.get("events").unwrap().as_array().unwrap()[0];
        for k in ["id", "user_agent", "lesson", "level", "question", "answer", "client_time"] {
            assert!(e.get(k).and_then(Json::as_str).is_some(), "{k}");
        }
        assert_eq!(e.get("answer").unwrap().as_str(), Some("answer 1 \"/?#%\n"));
        assert!(body.len() <= 32 + event_json_len(&ev(1, true)) + "\"dropped\":4".len() + 2);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn arb_event() -> impl Strategy<Value = Event> {
            (any::<bool>(), any::<String>(), any::<String>(), "[a-f0-9-]{1,36}").prop_map(|(test, answer, lesson, id)| Event {
                id,
                test,
                user_agent: "ua".into(),
                lesson,
                level: "gateway".into(),
                question: "1A".into(),
                answer,
                client_time: "2026-11-28T07:35:44.123Z".into(),
            })
        }

        proptest! {
            #[test]
            fn storage_codec_round_trips(events in proptest::collection::vec(arb_event(), 0..8)) {
                prop_assert_eq!(decode_events(&encode_events(&events)), events);
            }

            #[test]
            fn queue_never_exceeds_max_and_counts_every_drop(n in 0usize..60, max in 1usize..20) {
                let mut q = Queue::default();
                for i in 0..n {
                    q.push(super::ev(i as u32, false), max);
                }
                prop_assert!(q.events.len() <= max);
                prop_assert_eq!(q.events.len() as u64 + q.dropped, n as u64);
                // the newest are kept, in order
                let kept: Vec<_> = (n.saturating_sub(max)..n).map(|i| super::ev(i as u32, false)).collect();
                prop_assert_eq!(&q.events, &kept);
            }

            #[test]
            fn chunks_respect_limits_and_take_the_oldest(events in proptest::collection::vec(arb_event(), 1..30),
                                                        max_count in 1usize..10, max_bytes in 1usize..4000) {
                let q = Queue { events: events.clone(), dropped: 0 };
                let c = q.next_chunk(max_count, max_bytes);
                prop_assert!(!c.is_empty() && c.len() <= max_count);
                prop_assert_eq!(&c[0], &events[0]);
                prop_assert!(c.iter().all(|e| e.test == events[0].test));
                if c.len() > 1 {
                    prop_assert!(batch_body(&c, 0).len() <= max_bytes + 16);
                }
                // order preserved: the chunk is a subsequence of the queue
                let mut it = events.iter();
                prop_assert!(c.iter().all(|e| it.any(|x| x == e)));
            }
        }
    }
}
