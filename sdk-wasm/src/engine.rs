//! The delivery engine as a pure state machine: every decision about what to
//! send, when an event leaves the queue, and when to try again. No browser API:
//! each method is one input (init, "what next?", "reply arrived", "idle",
//! "online"), its return value the effects the glue (`deliver`) carries out
//! (send this request, remove these ids, report, arm a timer). Native property
//! tests drive it with random replies (docs/DESIGN.md, "SDK delivery rules").

use crate::json::{self, Json};
use crate::policy::backoff_ms;
use crate::queue::{batch_body, Event, Queue};

/// Keeps batch bodies under the collector's 1 MiB limit.
pub const MAX_BATCH_BYTES: usize = 900 * 1024;

/// The error codes of the collector's JSON error body that mean "this event can
/// never be stored": the only non-2xx answers that take an event out of the queue.
pub const VERDICT_CODES: [&str; 3] = ["invalid", "too_large", "conflict"];

/// One request to make: a single event in the path form (`body` is `None`; its
/// id and client time go in headers) or a `/batch` body.
#[derive(Clone, Debug, PartialEq)]
pub struct Send {
    pub url: String,
    pub body: Option<String>,
    /// The events it carries, oldest first.
    pub events: Vec<Event>,
    /// The drop count reported in the batch body.
    pub dropped: u64,
}

/// What came back: `status` is `None` when there was no response at all
/// (offline, DNS, CORS, timeout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    pub status: Option<u16>,
    pub retry_after_ms: Option<u32>,
    pub body: String,
}

/// What to do after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Some events settled (or the batch is to be cut smaller): send the next request.
    Continue,
    /// Stop; arm the retry timer for this many ms.
    Retry(u32),
}

/// The effects of a reply: the ids to remove, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Stored by the collector (written or duplicate).
    pub delivered: Vec<String>,
    /// Refused by the collector itself, with its reason.
    pub rejected: Vec<(String, String)>,
    /// The drop count the collector received (to take off this tab's count).
    pub dropped_reported: u64,
    pub next: Next,
}

/// Can the path form carry `value` unchanged? Not an empty segment (the route
/// would not match), nor `.`/`..`, which every URL parser removes as dot segments.
/// `encodeURIComponent` escapes everything else a URL parser would touch (and never
/// yields `%2E`), so these three are all; the browser test checks it against `new URL`.
pub fn path_safe(value: &str) -> bool {
    !matches!(value, "" | "." | "..")
}

#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    /// The normalized endpoint this page sends to (and the only one).
    pub endpoint: String,
    /// Events stored without an endpoint (older SDKs) belong to this page's endpoint.
    pub owns_legacy: bool,
    pub retry_base_ms: u32,
    pub retry_cap_ms: u32,
    pub batch_size: u32,
    /// Failed attempts in a row (the backoff exponent).
    attempt: u32,
    /// No new answer tries the network before this (ms since epoch): backing off.
    not_before: f64,
    /// Largest batch to send: cut after a 413 that is not the collector's verdict
    /// (a middle box with a smaller body limit), down to 1.
    batch_limit: usize,
}

impl Engine {
    /// "init with endpoint E" (already normalized by the glue).
    pub fn new(endpoint: String, owns_legacy: bool, retry_base_ms: u32, retry_cap_ms: u32, batch_size: u32) -> Engine {
        Engine {
            endpoint,
            owns_legacy,
            retry_base_ms,
            retry_cap_ms,
            batch_size,
            attempt: 0,
            not_before: 0.0,
            batch_limit: usize::MAX,
        }
    }

    /// Is `e` this page's to send?
    pub fn owns(&self, e: &Event) -> bool {
        if e.endpoint.is_empty() {
            self.owns_legacy
        } else {
            e.endpoint == self.endpoint
        }
    }

    /// Should a new answer try the network now, or answer "queued" at once?
    /// Not while offline, nor while backing off.
    pub fn may_send_now(&self, online: bool, now_ms: f64) -> bool {
        online && now_ms >= self.not_before
    }

    /// "online": try again at once.
    pub fn online(&mut self) {
        self.attempt = 0;
        self.not_before = 0.0;
    }

    /// Nothing of ours is left to send: the next failure starts the backoff afresh.
    pub fn idle(&mut self) {
        self.attempt = 0;
        self.not_before = 0.0;
    }

    /// The next request for `queue` (all tabs' events, oldest first): this page's
    /// events only; one event alone goes in the path form when every value survives
    /// it, anything else through `/batch`.
    pub fn next(&self, queue: &Queue) -> Option<Send> {
        let mine = Queue {
            events: queue.events.iter().filter(|e| self.owns(e)).cloned().collect(),
            dropped: queue.dropped,
        };
        let first = mine.events.first()?;
        let mut url = self.endpoint.clone();
        if first.test {
            url.push_str("/test");
        }
        let values = [
            &first.user_agent,
            &first.lesson,
            &first.level,
            &first.question,
            &first.answer,
        ];
        if mine.events.len() == 1 && mine.dropped == 0 && values.iter().all(|v| path_safe(v)) {
            for v in values {
                url.push('/');
                url.push_str(&crate::encode::encode_uri_component(v));
            }
            return Some(Send {
                url,
                body: None,
                events: mine.events,
                dropped: 0,
            });
        }
        let chunk = mine.next_chunk((self.batch_size as usize).min(self.batch_limit), MAX_BATCH_BYTES);
        url.push_str("/batch");
        Some(Send {
            url,
            body: Some(batch_body(&chunk, mine.dropped)),
            events: chunk,
            dropped: mine.dropped,
        })
    }

    /// "reply arrived": which events of `send` leave the queue (rule: only a 2xx
    /// with the collector's JSON for them, or the collector's own verdict), and what
    /// next. `random` is a uniform u32 for the backoff jitter.
    pub fn reply(&mut self, send: &Send, reply: &Reply, now_ms: f64, random: u32) -> Verdict {
        let parsed = json::parse(&reply.body);
        let text = |v: Option<&Json>, k: &str| v.and_then(|v| v.get(k)).and_then(Json::as_str).map(str::to_string);
        let mut delivered = Vec::new();
        let mut rejected = Vec::new();
        let mut dropped_reported = 0;
        let ok = matches!(reply.status, Some(200..=299));
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if send.body.is_none() {
            let id = &send.events[0].id;
            let answered_id = text(parsed.as_ref(), "id").is_some_and(|i| same(&i, id));
            let status = text(parsed.as_ref(), "status");
            let error = text(parsed.as_ref(), "error");
            if ok && answered_id && matches!(status.as_deref(), Some("written" | "duplicate")) {
                delivered.push(id.clone());
            } else if let (Some(400..=499), Some(code), Some(rule), Some(_)) = (
                reply.status,
                error.as_deref(),
                text(parsed.as_ref(), "rule"),
                parsed.as_ref().and_then(|v| v.get("field")),
            ) {
                // The collector's own form, `{"error":..,"field":..,"rule":..}`, all three keys.
                if VERDICT_CODES.contains(&code) {
                    rejected.push((id.clone(), rule));
                }
            }
        } else if ok {
            let results = parsed
                .as_ref()
                .and_then(|v| v.get("results"))
                .and_then(Json::as_array)
                .unwrap_or(&[]);
            for r in results {
                let Some(id) = text(Some(r), "id") else { continue };
                let Some(e) = send.events.iter().find(|e| same(&e.id, &id)) else {
                    continue;
                };
                match text(Some(r), "status").as_deref() {
                    Some("written" | "duplicate") => delivered.push(e.id.clone()),
                    Some(code @ ("invalid" | "conflict")) => rejected.push((
                        e.id.clone(),
                        text(Some(r), "reason").unwrap_or_else(|| code.to_string()),
                    )),
                    _ => continue,
                }
                dropped_reported = send.dropped;
            }
        } else if reply.status == Some(413) && send.events.len() > 1 {
            // A body limit somewhere (a proxy's, or the collector's own for the whole
            // batch): never a verdict on the events, so send fewer at a time.
            self.batch_limit = send.events.len() / 2;
            return Verdict {
                delivered,
                rejected,
                dropped_reported,
                next: Next::Continue,
            };
        }
        let next = if delivered.is_empty() && rejected.is_empty() {
            let delay = backoff_ms(
                self.attempt,
                self.retry_base_ms,
                self.retry_cap_ms,
                random,
                reply.retry_after_ms,
            );
            self.attempt = self.attempt.saturating_add(1);
            self.not_before = now_ms + delay as f64;
            Next::Retry(delay)
        } else {
            self.idle();
            Next::Continue
        };
        Verdict {
            delivered,
            rejected,
            dropped_reported,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str = "https://collector.example";

    fn ev(n: u32, endpoint: &str, answer: &str) -> Event {
        Event {
            id: format!("00000000-0000-4000-8000-{n:012}"),
            test: false,
            endpoint: endpoint.into(),
            user_agent: "ua".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: answer.into(),
            client_time: "2026-11-28T07:35:44.123Z".into(),
            // Every third event comes from an SDK before learner ids.
            learner_id: if n % 3 == 2 {
                String::new()
            } else {
                crate::uuid::uuid_v4([n as u8; 16])
            },
        }
    }

    fn engine() -> Engine {
        Engine::new(MINE.into(), false, 1000, 60_000, 100)
    }

    fn queue(events: Vec<Event>) -> Queue {
        Queue { events, dropped: 0 }
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: Some(status),
            retry_after_ms: None,
            body: body.into(),
        }
    }

    #[test]
    fn dot_and_empty_values_go_through_batch() {
        for answer in ["", ".", ".."] {
            let send = engine().next(&queue(vec![ev(1, MINE, answer)])).unwrap();
            assert!(send.url.ends_with("/batch") && send.body.is_some(), "{answer:?}");
        }
        for answer in [" ", "./a", "a/..", "...", "%2e"] {
            let send = engine().next(&queue(vec![ev(1, MINE, answer)])).unwrap();
            assert!(send.body.is_none(), "{answer:?}: {}", send.url);
        }
    }

    #[test]
    fn a_backlog_carries_each_events_learner_id_in_the_batch_body() {
        // (A single event's goes as `X-Learner-Id`, set by `deliver`: sdk-e2e learner-id.test.mjs.)
        let batch = engine().next(&queue(vec![ev(1, MINE, "a"), ev(2, MINE, "b")])).unwrap();
        let body = json::parse(batch.body.as_deref().unwrap()).unwrap();
        let items = body.get("events").and_then(Json::as_array).unwrap();
        assert_eq!(
            items[0].get("learner_id").and_then(Json::as_str),
            Some(ev(1, MINE, "a").learner_id.as_str())
        );
        assert!(
            items[1].get("learner_id").is_none(),
            "an older SDK's event goes without one"
        );
    }

    #[test]
    fn only_the_collectors_own_verdict_removes_a_single_event() {
        let e = ev(1, MINE, "42");
        let mut en = engine();
        let send = en.next(&queue(vec![e.clone()])).unwrap();
        let ok = format!("{{\"id\":\"{}\",\"status\":\"written\"}}", e.id.to_uppercase());
        assert_eq!(en.reply(&send, &reply(201, &ok), 0.0, 0).delivered, vec![e.id.clone()]);
        let dup = format!("{{\"id\":\"{}\",\"status\":\"duplicate\"}}", e.id);
        assert_eq!(en.reply(&send, &reply(200, &dup), 0.0, 0).delivered, vec![e.id.clone()]);
        for code in VERDICT_CODES {
            let body = format!("{{\"error\":\"{code}\",\"field\":\"answer\",\"rule\":\"why\"}}");
            let v = en.reply(&send, &reply(422, &body), 0.0, 0);
            assert_eq!(v.rejected, vec![(e.id.clone(), "why".to_string())], "{code}");
            assert_eq!(v.next, Next::Continue);
        }
        let other = format!("{{\"id\":\"{}\",\"status\":\"written\"}}", ev(2, MINE, "").id);
        for (status, body) in [
            (404, "<html>Not Found</html>"),
            (
                404,
                "{\"error\":\"not_found\",\"field\":null,\"rule\":\"no such route\"}",
            ),
            (401, ""),
            (403, "{\"error\":\"forbidden\"}"),
            (405, ""),
            (413, "<html>too big</html>"),
            (200, "<html>portal</html>"),
            (200, "{}"),
            (201, other.as_str()),
            (503, "{\"error\":\"busy\",\"field\":null,\"rule\":\"retry later\"}"),
            (500, "{\"error\":\"invalid\",\"field\":null,\"rule\":\"not a 4xx\"}"),
        ] {
            let v = en.reply(&send, &reply(status, body), 0.0, 0);
            assert!(v.delivered.is_empty() && v.rejected.is_empty(), "{status} {body}");
            assert!(matches!(v.next, Next::Retry(_)), "{status} {body}");
        }
        let v = en.reply(&send, &Reply::default(), 0.0, 0);
        assert!(
            v.delivered.is_empty() && matches!(v.next, Next::Retry(_)),
            "no response"
        );
    }

    #[test]
    fn a_batch_refused_as_a_whole_is_kept_and_cut_smaller_after_a_413() {
        let events: Vec<Event> = (0..8).map(|n| ev(n, MINE, "x")).collect();
        let mut en = engine();
        let send = en.next(&queue(events.clone())).unwrap();
        assert_eq!(send.events.len(), 8);
        for (status, body) in [
            (400, "{\"error\":\"bad_json\",\"field\":null,\"rule\":\"x\"}"),
            (404, ""),
            (200, "<html/>"),
        ] {
            let v = en.reply(&send, &reply(status, body), 0.0, 0);
            assert!(
                v.delivered.is_empty() && v.rejected.is_empty() && matches!(v.next, Next::Retry(_)),
                "{status}"
            );
        }
        assert_eq!(
            en.reply(&send, &reply(413, "<html>limit</html>"), 0.0, 0).next,
            Next::Continue
        );
        let send = en.next(&queue(events.clone())).unwrap();
        assert_eq!(send.events.len(), 4);
        assert_eq!(send.events[0], events[0], "oldest first");
        // A batch result: per event, only written/duplicate/invalid/conflict settle.
        let body = format!(
            "{{\"results\":[{{\"id\":\"{}\",\"status\":\"written\"}},{{\"id\":\"{}\",\"status\":\"conflict\",\"reason\":\"id: reused\"}},{{\"id\":\"{}\",\"status\":\"pending\"}},{{\"id\":\"{}\",\"status\":\"written\"}}]}}",
            events[0].id, events[1].id, events[2].id, events[7].id
        );
        let v = en.reply(&send, &reply(200, &body), 0.0, 0);
        assert_eq!(
            v.delivered,
            vec![events[0].id.clone()],
            "an id not in the request is ignored"
        );
        assert_eq!(v.rejected, vec![(events[1].id.clone(), "id: reused".to_string())]);
    }

    #[test]
    fn a_page_sends_only_its_own_endpoints_events() {
        let q = queue(vec![
            ev(1, "https://other.example", "a"),
            ev(2, "", "b"),
            ev(3, MINE, "c"),
        ]);
        let send = engine().next(&q).unwrap();
        assert_eq!(send.events, vec![ev(3, MINE, "c")]);
        assert!(send.url.starts_with("https://collector.example/ua/"), "{}", send.url);
        let legacy_owner = Engine::new(MINE.into(), true, 1000, 60_000, 100);
        assert_eq!(
            legacy_owner.next(&q).unwrap().events,
            vec![ev(2, "", "b"), ev(3, MINE, "c")]
        );
        assert_eq!(engine().next(&queue(vec![ev(1, "https://other.example", "a")])), None);
    }

    #[test]
    fn backing_off_answers_without_the_network() {
        let mut en = engine();
        assert!(en.may_send_now(true, 0.0) && !en.may_send_now(false, 0.0));
        let send = en.next(&queue(vec![ev(1, MINE, "a")])).unwrap();
        let retry = Reply {
            status: Some(503),
            retry_after_ms: Some(5000),
            body: String::new(),
        };
        assert_eq!(en.reply(&send, &retry, 1000.0, 0).next, Next::Retry(5000));
        assert!(!en.may_send_now(true, 5999.0) && en.may_send_now(true, 6000.0));
        en.online();
        assert!(en.may_send_now(true, 1000.0));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use crate::policy::MAX_WAIT_MS;
        use proptest::prelude::*;
        use std::collections::{HashMap, HashSet};

        const OTHER: &str = "https://other.example";
        /// An answer the collector's rules refuse (its own verdict: `invalid`).
        const BAD: &str = "BAD";

        /// What the real collector does with a request (its database is `db`, id → rows).
        /// Returns the reply and the ids it judged (stored, duplicate or invalid).
        fn collector(send: &Send, db: &mut HashMap<String, u32>, conflict_code: bool) -> (Reply, HashSet<String>) {
            let mut judged = HashSet::new();
            let mut store = |e: &Event, judged: &mut HashSet<String>| -> &'static str {
                judged.insert(e.id.clone());
                if e.answer == BAD {
                    return if conflict_code { "conflict" } else { "invalid" };
                }
                let rows = db.entry(e.id.clone()).or_insert(0);
                if *rows == 0 {
                    *rows = 1;
                    "written"
                } else {
                    "duplicate"
                }
            };
            match &send.body {
                None => {
                    let mut path = send.url.strip_prefix(MINE).expect("sent to its own endpoint");
                    if send.events[0].test {
                        path = path.strip_prefix("/test").expect("test events go to /test");
                    }
                    let segments: Vec<&str> = path.split('/').skip(1).collect();
                    // The URL parser removes dot segments; the route needs 5 non-empty ones.
                    if segments.len() != 5 || segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
                        return (
                            reply(
                                404,
                                "{\"error\":\"not_found\",\"field\":null,\"rule\":\"no such route\"}",
                            ),
                            judged,
                        );
                    }
                    let e = &send.events[0];
                    let outcome = store(e, &mut judged);
                    let r = match outcome {
                        "written" => reply(201, &format!("{{\"id\":\"{}\",\"status\":\"written\"}}", e.id)),
                        "duplicate" => reply(200, &format!("{{\"id\":\"{}\",\"status\":\"duplicate\"}}", e.id)),
                        code => reply(
                            if code == "conflict" { 409 } else { 422 },
                            &format!("{{\"error\":\"{code}\",\"field\":\"answer\",\"rule\":\"no\"}}"),
                        ),
                    };
                    (r, judged)
                }
                Some(body) => {
                    assert!(
                        send.url == format!("{MINE}/batch") || send.url == format!("{MINE}/test/batch"),
                        "{}",
                        send.url
                    );
                    let parsed = json::parse(body).expect("batch body is JSON");
                    let mut results = Vec::new();
                    for item in parsed.get("events").and_then(Json::as_array).unwrap() {
                        let id = item.get("id").and_then(Json::as_str).unwrap();
                        let e = send.events.iter().find(|e| e.id == id).unwrap();
                        assert_eq!(
                            item.get("answer").and_then(Json::as_str),
                            Some(e.answer.as_str()),
                            "byte for byte"
                        );
                        assert_eq!(
                            item.get("learner_id").and_then(Json::as_str).unwrap_or_default(),
                            e.learner_id,
                            "learner_id, or none"
                        );
                        let status = store(e, &mut judged);
                        results.push(format!("{{\"id\":\"{id}\",\"status\":\"{status}\"}}"));
                    }
                    (reply(200, &format!("{{\"results\":[{}]}}", results.join(","))), judged)
                }
            }
        }

        /// Everything between the SDK and the collector that is not the collector.
        fn hostile(pick: u8) -> Reply {
            let (status, body): (Option<u16>, &str) = match pick % 12 {
                0 => (Some(404), "<html><body>404 Not Found</body></html>"),
                1 => (Some(401), "Unauthorized"),
                2 => (Some(403), "{\"message\":\"forbidden\"}"),
                3 => (Some(405), ""),
                4 => (Some(413), "<html>413 Request Entity Too Large</html>"),
                5 => (Some(200), "<html>captive portal: log in</html>"),
                6 => (Some(200), "{\"results\":[]}"),
                7 => (None, ""),
                8 => (Some(502), "Bad Gateway"),
                9 => (
                    Some(404),
                    "{\"error\":\"not_found\",\"field\":null,\"rule\":\"no such route\"}",
                ),
                10 => (Some(422), "{\"error\":\"invalid\"}"), // not the collector's form (no field, no rule)
                _ => (Some(201), "{\"id\":\"someone-else\",\"status\":\"written\"}"),
            };
            Reply {
                status,
                retry_after_ms: pick.is_multiple_of(5).then_some(pick as u32 * 100),
                body: body.into(),
            }
        }

        fn arb_event() -> impl Strategy<Value = (u8, u8, bool)> {
            (0u8..3, 0u8..9, any::<bool>())
        }

        fn answer(pick: u8) -> &'static str {
            ["", ".", "..", " ", "./a", "a/..", "42", BAD, "naïve/?#%"][pick as usize]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            #[test]
            fn no_answer_is_lost_whatever_answers_in_between(
                specs in proptest::collection::vec(arb_event(), 1..25),
                script in proptest::collection::vec((any::<bool>(), any::<u8>()), 0..60),
                owns_legacy in any::<bool>(),
                batch_size in 1u32..8,
                body_limit in 1usize..5,
                conflict_code in any::<bool>(),
                randoms in proptest::collection::vec(any::<u32>(), 1..8),
            ) {
                let events: Vec<Event> = specs.iter().enumerate().map(|(n, (owner, a, test))| {
                    let mut e = ev(n as u32, ["", MINE, OTHER][*owner as usize], answer(*a));
                    e.test = *test;
                    e
                }).collect();
                let mut en = Engine::new(MINE.into(), owns_legacy, 1000, 60_000, batch_size);
                let mut q = queue(events.clone());
                let mut db: HashMap<String, u32> = HashMap::new();
                let mut now = 0.0;
                // A hostile middle for a while (the script), then a proxy that only
                // refuses bodies of more than `body_limit` events, then the collector.
                let mut script = script.into_iter();
                for step in 0..2000usize {
                    let Some(send) = en.next(&q) else { break };
                    prop_assert!(send.events.iter().all(|e| en.owns(e)), "only its own endpoint's events");
                    prop_assert!(send.url.starts_with(MINE));
                    prop_assert!(send.events.iter().all(|e| e.test == send.events[0].test), "one table per request");
                    prop_assert!(send.url.contains("/test/") == send.events[0].test);
                    let (reply, judged) = match script.next() {
                        Some((false, pick)) => (hostile(pick), HashSet::new()),
                        _ if send.body.is_some() && send.events.len() > body_limit => (hostile(4), HashSet::new()),
                        _ => collector(&send, &mut db, conflict_code),
                    };
                    let random = randoms[step % randoms.len()];
                    let v = en.reply(&send, &reply, now, random);
                    for id in v.delivered.iter().chain(v.rejected.iter().map(|(id, _)| id)) {
                        prop_assert!(judged.contains(id), "{id} left the queue without the collector's word: {reply:?}");
                    }
                    for id in &v.delivered {
                        prop_assert_eq!(db.get(id), Some(&1));
                    }
                    q.events.retain(|e| !v.delivered.contains(&e.id) && !v.rejected.iter().any(|(id, _)| *id == e.id));
                    if let Next::Retry(delay) = v.next {
                        prop_assert!(delay <= MAX_WAIT_MS);
                        let floor = reply.retry_after_ms.unwrap_or(0).min(MAX_WAIT_MS);
                        prop_assert!(delay >= floor && delay <= floor.max(60_000), "{delay} {reply:?}");
                        if delay > 0 {
                            prop_assert!(!en.may_send_now(true, now), "backing off: answers don't wait for the network");
                        }
                        prop_assert!(!en.may_send_now(false, now));
                        now += delay as f64;
                        prop_assert!(en.may_send_now(true, now));
                    }
                }
                // Everything of this page's endpoint left the queue: the good ones are
                // stored exactly once, the bad ones judged; the others were never touched.
                for e in &events {
                    if en.owns(e) {
                        prop_assert!(!q.contains(&e.id), "{e:?} still queued");
                        prop_assert_eq!(db.get(&e.id).copied(), if e.answer == BAD { None } else { Some(1) });
                    } else {
                        prop_assert!(q.contains(&e.id) && !db.contains_key(&e.id));
                    }
                }
            }
        }
    }
}
