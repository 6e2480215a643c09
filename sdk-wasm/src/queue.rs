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
    /// The normalized endpoint it is for (only a page initialised with it sends it);
    /// empty for events stored by SDKs before endpoints were recorded.
    pub endpoint: String,
    pub user_agent: String,
    pub lesson: String,
    pub level: String,
    pub question: String,
    pub answer: String,
    /// RFC 3339 with milliseconds, UTC: when the learner acted.
    pub client_time: String,
    /// The pseudonymous learner (a non-nil UUID, `uuid::is_learner_id`), sent as
    /// `X-Learner-Id` / batch `learner_id`; empty for events stored by SDKs before
    /// learner ids (sent without one: the collector stores NULL).
    pub learner_id: String,
}

/// The pending events, oldest first, and how many were dropped and not yet reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub events: Vec<Event>,
    pub dropped: u64,
}

impl Queue {
    pub fn contains(&self, id: &str) -> bool {
        self.events.iter().any(|e| e.id == id)
    }

    /// The next events to send together: the oldest event and the events after it
    /// with the same `test` flag (one table per request), at most `max_count` and
    /// at most `max_bytes` of batch body (always at least one event).
    pub fn next_chunk(&self, max_count: usize, max_bytes: usize) -> Vec<Event> {
        let Some(first) = self.events.first() else {
            return Vec::new();
        };
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

// ---- Storage layout: one localStorage entry per event ----
//
// Tabs of one origin share localStorage, but a tab in another renderer process
// sees the other's writes a moment later. A read-modify-write of one shared
// entry can therefore erase what another tab just wrote; so nothing shared is
// ever rewritten: an event is its own key (`setItem` once, `removeItem` once
// settled, both idempotent), and the queue is the set of keys with [`EVENT_PREFIX`].

/// Prefix of every event entry: `hourofci-log:ev:<order>:<event id>`. The queue,
/// oldest first, is these keys sorted as strings (the store sorts them with the
/// browser's `Array.prototype.sort`, which for these ASCII keys is byte order, as here).
pub const EVENT_PREFIX: &str = "hourofci-log:ev:";
/// Digits of the order field, zero-padded so that keys sort as their order does.
const ORDER_DIGITS: usize = 16;

/// The order of an event logged at `now_ms` (client clock) by a tab whose last
/// event had order `last`: client ms × 1000, plus a per-tab sequence so that the
/// events of one tab keep the order they were logged in, even within one ms or
/// when the clock steps back.
pub fn next_order(last: u64, now_ms: f64) -> u64 {
    let now = if now_ms > 0.0 { now_ms as u64 } else { 0 };
    // Capped to 16 digits (a clock past the year 2286): the key must stay readable.
    now.saturating_mul(1000).max(last.saturating_add(1)).min(MAX_ORDER)
}

const MAX_ORDER: u64 = 9_999_999_999_999_999;

/// The localStorage key of an event: `hourofci-log:ev:<order, 16 digits>:<id>`.
pub fn event_key(order: u64, id: &str) -> String {
    let mut digits = String::new();
    json::write_u64(&mut digits, order);
    let mut key = String::from(EVENT_PREFIX);
    key.push_str("0000000000000000".get(digits.len()..).unwrap_or(""));
    key.push_str(&digits);
    key.push(':');
    key.push_str(id);
    key
}

/// The event id in an event key; `None` for any other key.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(EVENT_PREFIX)?;
    // The order field is fixed-width: no search (and no `memchr` in the wasm).
    (rest.as_bytes().get(ORDER_DIGITS) == Some(&b':'))
        .then(|| rest.get(ORDER_DIGITS + 1..))
        .flatten()
        .filter(|id| !id.is_empty())
}

/// How many of the oldest of `len` pending events go when at most `max` may stay.
pub fn excess(len: usize, max: usize) -> usize {
    len.saturating_sub(max.max(1))
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
    if !e.learner_id.is_empty() {
        out.push_str(",\"learner_id\":");
        json::write_str(out, &e.learner_id);
    }
    if with_test {
        out.push_str(if e.test { ",\"test\":true" } else { ",\"test\":false" });
        out.push_str(",\"endpoint\":");
        json::write_str(out, &e.endpoint);
    }
    out.push('}');
}

/// The stored form of one event (the value of its key): a JSON object.
pub fn encode_event(e: &Event) -> String {
    let mut out = String::new();
    write_event(&mut out, e, true);
    out
}

/// Reads one stored event; `None` when unreadable.
pub fn decode_event(text: &str) -> Option<Event> {
    event_from_json(&json::parse(text)?)
}

/// An event from its JSON object (stored per key, or an item of the single array
/// SDKs before per-event keys kept under `hourofci-log:queue:v1`); `None` when
/// unreadable, so one bad write loses at most itself.
pub fn event_from_json(v: &Json) -> Option<Event> {
    // Every field checked first, then taken: no partly built event to drop (smaller wasm).
    let fields = [
        "id",
        "user_agent",
        "lesson",
        "level",
        "question",
        "answer",
        "client_time",
    ];
    if fields.iter().any(|k| string_field(v, k).is_none()) || string_field(v, "id") == Some("") {
        return None;
    }
    let s = |k| string_field(v, k).unwrap_or_default().to_string();
    Some(Event {
        id: s("id"),
        test: v.get("test").and_then(Json::as_bool).unwrap_or(false),
        endpoint: s("endpoint"),
        user_agent: s("user_agent"),
        lesson: s("lesson"),
        level: s("level"),
        question: s("question"),
        answer: s("answer"),
        client_time: s("client_time"),
        // Absent (an older SDK's event): empty, sent without one.
        learner_id: s("learner_id"),
    })
}

/// Not inlined: once in the wasm rather than once per field.
#[inline(never)]
fn string_field<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str)
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
            endpoint: "http://127.0.0.1:4000".into(),
            user_agent: "4eccc97c41f6b9e0815db3fe80057180".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: format!("answer {n} \"/?#%\n"),
            client_time: "2026-11-28T07:35:44.123Z".into(),
            learner_id: LEARNER.into(),
        }
    }

    const LEARNER: &str = "0b7e6f4c-3a8d-4f2e-9c1b-5d6a7e8f9a0b";

    fn queue(events: Vec<Event>) -> Queue {
        Queue { events, dropped: 0 }
    }

    #[test]
    fn event_keys_carry_the_id_and_sort_by_order() {
        let id = ev(7, false).id;
        let key = event_key(1_764_316_484_123_000, &id);
        assert_eq!(key, format!("hourofci-log:ev:1764316484123000:{id}"));
        assert_eq!(key_id(&key), Some(id.as_str()));
        // Zero-padded: an order with fewer digits still sorts first as a string.
        assert_eq!(event_key(5, "x"), "hourofci-log:ev:0000000000000005:x");
        assert!(event_key(5, "z") < event_key(1_000, "a"));
        // An id with a colon (migrated from an old queue) survives.
        assert_eq!(key_id(&event_key(1, "a:b")), Some("a:b"));
        for other in [
            "hourofci-log:queue:v1",
            "hourofci-log:dropped:v1",
            "hourofci-log:lease:v1",
            "hourofci-log:ev:",
            "hourofci-log:ev:12:",
            "hourofci-log:ev::id",
            "hourofci-log:ev:1x:id",
            "filler-3",
            "hourofci-log:ev:12",
        ] {
            assert_eq!(key_id(other), None, "{other}");
        }
    }

    #[test]
    fn one_tab_keeps_its_order_within_a_millisecond_and_when_the_clock_steps_back() {
        let mut order = 0;
        let mut keys = Vec::new();
        for (i, now) in [1_000.0, 1_000.0, 1_000.0, 999.0, 1_001.0, 5_000.0, -3.0]
            .iter()
            .enumerate()
        {
            order = next_order(order, *now);
            keys.push(event_key(order, &format!("e{i}")));
        }
        let mut sorted = keys.clone();
        sorted.reverse();
        sorted.sort();
        assert_eq!(sorted, keys, "logged order is key order");
        assert_eq!(next_order(0, 1_764_316_484_123.0), 1_764_316_484_123_000);
        assert_eq!(
            key_id(&event_key(next_order(0, 1e300), "future")),
            Some("future"),
            "a wild clock still gives a readable key"
        );
        // Migrated events (order = index) sort before anything logged since.
        assert!(event_key(999, "old") < event_key(next_order(0, 1.0), "new"));
    }

    #[test]
    fn two_tabs_interleave_by_client_time() {
        // Tab A logs at 10 and 12 ms, tab B at 11 ms: one queue, oldest first.
        let a1 = event_key(next_order(0, 10.0), "a1");
        let a2 = event_key(next_order(next_order(0, 10.0), 12.0), "a2");
        let b1 = event_key(next_order(0, 11.0), "b1");
        let mut keys = vec![a2.clone(), b1.clone(), "filler".to_string(), a1.clone()];
        keys.retain(|k| key_id(k).is_some());
        keys.sort();
        assert_eq!(keys, vec![a1, b1, a2]);
    }

    #[test]
    fn over_max_the_oldest_go() {
        assert_eq!(excess(5, 3), 2);
        assert_eq!(excess(3, 3), 0);
        assert_eq!(excess(0, 3), 0);
        assert_eq!(excess(2, 0), 1, "at least one event is always kept");
    }

    #[test]
    fn chunks_are_oldest_first_one_table_and_bounded() {
        let q = queue((0..7).map(|n| ev(n, n == 2)).collect());
        let c = q.next_chunk(3, 1 << 20);
        assert_eq!(c, vec![ev(0, false), ev(1, false), ev(3, false)]);
        let one = q.next_chunk(100, 10);
        assert_eq!(one, vec![ev(0, false)], "a huge event still goes alone");
        let rest = queue(q.events[2..].to_vec());
        assert_eq!(rest.next_chunk(100, 1 << 20), vec![ev(2, true)]);
        assert!(rest.contains(&ev(4, false).id) && !rest.contains(&ev(0, false).id));
    }

    #[test]
    fn stored_events_round_trip_and_corrupt_ones_are_skipped() {
        assert_eq!(decode_event(&encode_event(&ev(1, true))), Some(ev(1, true)));
        assert_eq!(decode_event("not json"), None);
        // Stored by an SDK before endpoints were recorded: no endpoint (the first one's, see `store`).
        let older = encode_event(&ev(1, true)).replace(",\"endpoint\":\"http://127.0.0.1:4000\"", "");
        assert!(!older.contains("endpoint"), "{older}");
        assert_eq!(
            decode_event(&older),
            Some(Event {
                endpoint: String::new(),
                ..ev(1, true)
            })
        );
        assert_eq!(decode_event("{\"id\":5}"), None);
        // Stored by an SDK before learner ids: none, and sent without one.
        let no_learner = encode_event(&ev(1, true)).replace(&format!(",\"learner_id\":\"{LEARNER}\""), "");
        assert!(!no_learner.contains("learner_id"), "{no_learner}");
        let read = decode_event(&no_learner).unwrap();
        assert_eq!(
            read,
            Event {
                learner_id: String::new(),
                ..ev(1, true)
            }
        );
        assert_eq!(
            encode_event(&read),
            no_learner,
            "an event without a learner id is stored without one"
        );
        assert_eq!(decode_event("{\"a\":1}"), None);
        // The old single-array queue, for the migration: its items are read one by one.
        let old = format!(
            "[{{\"id\":5}},{},null,{}]",
            encode_event(&ev(1, true)),
            encode_event(&ev(2, false))
        );
        let Some(Json::Array(items)) = json::parse(&old) else {
            panic!("{old}")
        };
        let read: Vec<Event> = items.iter().filter_map(event_from_json).collect();
        assert_eq!(read, vec![ev(1, true), ev(2, false)]);
    }

    #[test]
    fn batch_body_matches_the_collector_contract() {
        let body = batch_body(&[ev(1, true)], 4);
        let v = json::parse(&body).unwrap();
        assert_eq!(v.get("dropped").and_then(Json::as_u64), Some(4));
        let e = &v.get("events").unwrap().as_array().unwrap()[0];
        for k in [
            "id",
            "user_agent",
            "lesson",
            "level",
            "question",
            "answer",
            "client_time",
        ] {
            assert!(e.get(k).and_then(Json::as_str).is_some(), "{k}");
        }
        assert_eq!(e.get("answer").unwrap().as_str(), Some("answer 1 \"/?#%\n"));
        assert_eq!(e.get("learner_id").and_then(Json::as_str), Some(LEARNER));
        assert!(
            e.get("test").is_none() && e.get("endpoint").is_none(),
            "only the collector's fields"
        );
        // An event from an older SDK goes without `learner_id` (the collector stores NULL).
        let old = batch_body(
            &[
                Event {
                    learner_id: String::new(),
                    ..ev(2, false)
                },
                ev(3, false),
            ],
            0,
        );
        let v = json::parse(&old).unwrap();
        let items = v.get("events").unwrap().as_array().unwrap();
        assert!(items[0].get("learner_id").is_none(), "{old}");
        assert_eq!(items[1].get("learner_id").and_then(Json::as_str), Some(LEARNER));
        assert!(body.len() <= 32 + event_json_len(&ev(1, true)) + "\"dropped\":4".len() + 2);
    }

    /// The wire contract with the collector: the SDK's own batch body is, byte for byte,
    /// the fixture the collector's parser is tested against (collector/tests/schema_drift.rs).
    /// A change on either side fails one of the two tests until the fixture is updated.
    #[test]
    fn batch_body_is_the_shared_wire_fixture() {
        let fixture = include_str!("../../collector/tests/fixtures/sdk_batch.json").trim_end();
        let first = Event {
            id: "6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01".into(),
            // Neither the table nor the endpoint goes in a batch body (they pick the URL).
            test: true,
            endpoint: "http://127.0.0.1:4000".into(),
            user_agent: "4eccc97c41f6b9e0815db3fe80057180".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: "a \"quoted\" /?#% answer\nline two\\ \u{1} é 😀".into(),
            client_time: "2026-11-28T07:35:44.123Z".into(),
            learner_id: LEARNER.into(),
        };
        let stored_before_learner_ids = Event {
            id: "0d9a3c55-7b2e-4f61-8a0c-2e4b6d8f1a3c".into(),
            lesson: "geospatial".into(),
            level: "advanced".into(),
            question: "12".into(),
            answer: "stored by an SDK before learner ids".into(),
            client_time: "2026-11-28T07:36:01.007Z".into(),
            learner_id: String::new(),
            ..first.clone()
        };
        let events = [first, stored_before_learner_ids];
        assert_eq!(batch_body(&events, 3), fixture);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn arb_event() -> impl Strategy<Value = Event> {
            let learner = prop_oneof![Just(String::new()), any::<[u8; 16]>().prop_map(crate::uuid::uuid_v4)];
            (
                any::<bool>(),
                any::<String>(),
                any::<String>(),
                "[a-f0-9-]{1,36}",
                learner,
            )
                .prop_map(|(test, answer, lesson, id, learner_id)| Event {
                    id,
                    test,
                    endpoint: "https://x".into(),
                    user_agent: "ua".into(),
                    lesson,
                    level: "gateway".into(),
                    question: "1A".into(),
                    answer,
                    client_time: "2026-11-28T07:35:44.123Z".into(),
                    learner_id,
                })
        }

        proptest! {
            #[test]
            fn storage_codec_round_trips(events in proptest::collection::vec(arb_event(), 0..8)) {
                for e in &events {
                    prop_assert_eq!(decode_event(&encode_event(e)), Some(e.clone()));
                }
                let old: Vec<String> = events.iter().map(encode_event).collect();
                let Some(Json::Array(items)) = json::parse(&format!("[{}]", old.join(","))) else { panic!() };
                prop_assert_eq!(items.iter().filter_map(event_from_json).collect::<Vec<_>>(), events);
            }

            #[test]
            fn keys_sort_in_order_whatever_the_ids(orders in proptest::collection::vec(0u64..1u64 << 52, 0..40),
                                                   ids in proptest::collection::vec("[a-f0-9:-]{1,36}", 40)) {
                let mut keys: Vec<String> = orders.iter().zip(&ids).map(|(o, id)| event_key(*o, id)).collect();
                for (k, id) in keys.iter().zip(&ids) {
                    prop_assert_eq!(key_id(k), Some(id.as_str()));
                }
                keys.sort();
                let mut expected: Vec<(u64, &String)> = orders.iter().copied().zip(&ids).collect();
                expected.sort();
                let expected: Vec<String> = expected.iter().map(|(o, id)| event_key(*o, id)).collect();
                prop_assert_eq!(keys, expected);
            }

            #[test]
            fn one_tab_orders_strictly_increase(clock in proptest::collection::vec(-1e3f64..2e12, 1..50)) {
                let mut last = 0;
                for now in clock {
                    let next = next_order(last, now);
                    prop_assert!(next > last);
                    last = next;
                }
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
