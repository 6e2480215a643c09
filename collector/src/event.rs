//! What a learner's answer is once it has left HTTP: [`NewEvent`], plus the pure
//! parsers that build one from raw request parts (path segments, headers, batch JSON).
//!
//! Nothing here touches the network or a database, so it is unit-tested natively and
//! is the target of the fuzzers.

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Which table an event goes to: `/...` is production, `/test/...` development traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// `loggingtable`
    Production,
    /// `loggingtable_test`
    Test,
}

impl Table {
    pub fn is_test(self) -> bool {
        self == Table::Test
    }

    /// The table's name, the same in PostgreSQL and SQLite.
    pub fn sql_name(self) -> &'static str {
        match self {
            Table::Production => "loggingtable",
            Table::Test => "loggingtable_test",
        }
    }

    /// Label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Table::Production => "production",
            Table::Test => "test",
        }
    }
}

/// One answer to be stored. `id` is the client's event id (`Idempotency-Key`); legacy
/// GETs have none and are always written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Option<Uuid>,
    pub table: Table,
    pub user_agent: String,
    pub lesson: String,
    pub level: String,
    pub question: String,
    pub answer: String,
    pub client_time: Option<DateTime<Utc>>,
    /// The pseudonymous learner (`X-Learner-Id` header, or a batch event's
    /// `learner_id`); `None` for legacy requests and SDKs that do not send one.
    pub learner_id: Option<Uuid>,
}

/// What happened to one event of a write: a domain fact the stores answer and the
/// routes turn into a status (`ApiError`, collector/src/error.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new row was committed.
    Written,
    /// This event id is already stored (or came earlier in the same group) with the
    /// same content: a retry. Nothing changed.
    Duplicate,
    /// This event id is already stored with different content (user agent, lesson,
    /// level, question, answer or table). The stored row is unchanged. Final (409).
    Conflict,
    /// The database refused this event's own values (found by isolating it from its
    /// group); the rule says why. Final: answered 422 `invalid`.
    Rejected(&'static str),
}

impl Outcome {
    /// The status word in a `/batch` result (`log_events_v2` answers the first three).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict => "conflict",
            Outcome::Rejected(_) => "invalid",
        }
    }
}

/// Which kind of refusal an [`Invalid`] is. The HTTP layer gives each its code and
/// status (`ApiError`, collector/src/error.rs); nothing here knows about HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKind {
    /// A value broke a rule (code `invalid`).
    Value,
    /// A value or body is larger than allowed (`too_large`).
    TooLarge,
    /// A batch body is not the JSON object expected (`bad_json`).
    BadJson,
}

/// One value of a written column, typed as both stores bind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    Text(&'a str),
    Uuid(Option<Uuid>),
    Instant(Option<DateTime<Utc>>),
}

/// A column the collector writes from a [`NewEvent`]: [`Column::WRITTEN`] is the one
/// description of an event's columns that both stores bind from (PostgreSQL one array
/// per column to `log_events_v5`, by argument name; SQLite one `?` per column in its
/// INSERT). Adding a column means a row here, a migration in `sql/` and in
/// `collector/sqlite/`, and a new `log_events_vN`; collector/tests/schema_drift.rs fails
/// until all agree.
///
/// Not listed: `id` and `received_at` (the database fills them), `date_log` and
/// `time_log` (the write instant, one per group: PostgreSQL's `now()` in UTC).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Its name in both tables (`loggingtable`, `loggingtable_test`).
    pub name: &'static str,
    /// Its array argument of `log_events_v5` (sql/0008).
    pub pg_argument: &'static str,
    /// Part of an event's content: a repeated id with the same content is a duplicate,
    /// with other content a conflict. Ids, times and the learner are not (a retry from
    /// a queue filled before the SDK sent learner ids must stay a duplicate).
    pub is_content: bool,
    /// Its value in an event.
    pub value: fn(&NewEvent) -> ColumnValue<'_>,
}

impl Column {
    /// Every written column, in the order of `log_events_v5`'s arrays after `p_tests`.
    #[rustfmt::skip]
    pub const WRITTEN: [Column; 8] = [
        Column { name: "event_id", pg_argument: "p_event_ids", is_content: false, value: |e| ColumnValue::Uuid(e.id) },
        Column { name: "client_time", pg_argument: "p_client_times", is_content: false, value: |e| ColumnValue::Instant(e.client_time) },
        Column { name: "user_agent", pg_argument: "p_user_agents", is_content: true, value: |e| ColumnValue::Text(&e.user_agent) },
        Column { name: "lesson", pg_argument: "p_lessons", is_content: true, value: |e| ColumnValue::Text(&e.lesson) },
        Column { name: "lesson_level", pg_argument: "p_levels", is_content: true, value: |e| ColumnValue::Text(&e.level) },
        Column { name: "question", pg_argument: "p_questions", is_content: true, value: |e| ColumnValue::Text(&e.question) },
        Column { name: "answer", pg_argument: "p_answers", is_content: true, value: |e| ColumnValue::Text(&e.answer) },
        Column { name: "learner_id", pg_argument: "p_learner_ids", is_content: false, value: |e| ColumnValue::Uuid(e.learner_id) },
    ];
}

/// Why a request (or one event of a batch) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field:?}: {rule}")]
pub struct Invalid {
    pub kind: InvalidKind,
    /// The request field at fault, when there is one.
    pub field: Option<&'static str>,
    /// A sentence a person can act on.
    pub rule: String,
}

impl Invalid {
    /// A field broke a validation rule.
    pub fn field(field: &'static str, rule: impl Into<String>) -> Self {
        Invalid {
            kind: InvalidKind::Value,
            field: Some(field),
            rule: rule.into(),
        }
    }

    /// A field or body is larger than allowed (answered 413 rather than 422).
    pub fn too_large(field: Option<&'static str>, rule: impl Into<String>) -> Self {
        Invalid {
            kind: InvalidKind::TooLarge,
            field,
            rule: rule.into(),
        }
    }

    /// A batch body that is not the JSON expected.
    fn bad_json(field: Option<&'static str>, rule: impl Into<String>) -> Self {
        Invalid {
            kind: InvalidKind::BadJson,
            field,
            rule: rule.into(),
        }
    }

    /// The database refused the event's values ([`Outcome::Rejected`]).
    pub fn rejected(rule: &'static str) -> Self {
        Invalid {
            kind: InvalidKind::Value,
            field: None,
            rule: rule.into(),
        }
    }

    /// The reason of an `invalid` `/batch` result: `field: rule`, or the rule alone.
    pub fn describe(&self) -> String {
        match self.field {
            Some(f) => format!("{f}: {}", self.rule),
            None => self.rule.clone(),
        }
    }
}

/// Percent-decode one raw path segment into the value the client encoded.
///
/// `+` stays `+` (paths are not form data) and `%2F` becomes a `/` inside the value.
/// Malformed escapes such as `%zz` are kept literally, as Werkzeug did. The result must
/// be UTF-8 without NUL (PostgreSQL text cannot hold NUL).
pub fn decode_segment(raw: &str) -> Result<String, Invalid> {
    let text = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Invalid::field("path", "a path segment is not UTF-8 after percent-decoding"))?;
    if text.contains('\0') {
        return Err(Invalid::field("path", "a path segment contains a NUL character"));
    }
    Ok(text.into_owned())
}

/// The five decoded values of an event path (`/{ua}/{lesson}/{level}/{question}/{answer}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathValues {
    pub table: Table,
    pub user_agent: String,
    pub lesson: String,
    pub level: String,
    pub question: String,
    pub answer: String,
}

impl PathValues {
    /// The event these values describe, with its id, client time and learner (POST
    /// headers) or none (legacy GET).
    pub fn into_event(
        self,
        id: Option<Uuid>,
        client_time: Option<DateTime<Utc>>,
        learner_id: Option<Uuid>,
    ) -> NewEvent {
        NewEvent {
            id,
            table: self.table,
            user_agent: self.user_agent,
            lesson: self.lesson,
            level: self.level,
            question: self.question,
            answer: self.answer,
            client_time,
            learner_id,
        }
    }
}

/// Split and decode a raw request path of the form `/[test/]{ua}/{lesson}/{level}/{question}/{answer}`.
///
/// Splitting happens on the raw path, before decoding, so an encoded `%2F` stays
/// inside its value. Returns `None` when the path does not have that shape.
pub fn parse_event_path(raw_path: &str) -> Option<Result<PathValues, Invalid>> {
    let rest = raw_path.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (table, seg) = match parts.len() {
        5 => (Table::Production, &parts[..]),
        6 if parts[0] == "test" => (Table::Test, &parts[1..]),
        _ => return None,
    };
    let decode = |i: usize, field: &'static str| {
        decode_segment(seg[i]).map_err(|e| Invalid {
            field: Some(field),
            ..e
        })
    };
    Some((|| {
        Ok(PathValues {
            table,
            user_agent: decode(0, "user_agent")?,
            lesson: decode(1, "lesson")?,
            level: decode(2, "level")?,
            question: decode(3, "question")?,
            answer: decode(4, "answer")?,
        })
    })())
}

/// Parse `X-Client-Time`: RFC 3339 with an offset (e.g. `2026-11-28T07:31:02.123Z`),
/// normalised to UTC.
pub fn parse_client_time(header: &str) -> Result<DateTime<Utc>, Invalid> {
    DateTime::parse_from_rfc3339(header.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Invalid::field(
                "client_time",
                "must be an RFC 3339 timestamp with offset, e.g. 2026-11-28T07:31:02.123Z",
            )
        })
}

/// Parse an event id (`Idempotency-Key` or a batch event's `id`): a UUID in any form
/// the `uuid` crate reads (compared and stored canonically), and not the nil UUID.
pub fn parse_event_id(text: &str) -> Result<Uuid, Invalid> {
    let id = Uuid::parse_str(text.trim()).map_err(|_| Invalid::field("id", "the event id must be a UUID"))?;
    check_event_id(id)
}

/// The nil UUID is what a client without a random source sends for every event; taken
/// as an id, each of its events would be a duplicate or a conflict of the first.
pub fn check_event_id(id: Uuid) -> Result<Uuid, Invalid> {
    if id.is_nil() {
        return Err(Invalid::field(
            "id",
            "the event id must not be the nil UUID 00000000-0000-0000-0000-000000000000",
        ));
    }
    Ok(id)
}

/// Parse a learner id (`X-Learner-Id` or a batch event's `learner_id`): a UUID in any
/// form the `uuid` crate reads (stored canonically), not the nil UUID (which every
/// learner of a client without a random source would share).
pub fn parse_learner_id(text: &str) -> Result<Uuid, Invalid> {
    let rule = "the learner id must be a UUID other than the nil UUID, e.g. 0b6f3c1e-8f1d-4b7a-9c2e-5d4f3a2b1c0d";
    match Uuid::parse_str(text.trim()) {
        Ok(id) if !id.is_nil() => Ok(id),
        _ => Err(Invalid::field("learner_id", rule)),
    }
}

/// A parsed `/batch` body. Events that could not be read are kept in place as errors so
/// the response can answer in request order.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRequest {
    pub events: Vec<BatchItem>,
    /// Events the client had to discard (queue overflow), for metrics.
    pub dropped: u64,
}

/// One entry of a batch, in request order. Events carry the table of the route they
/// were sent to.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchItem {
    Event(NewEvent),
    /// The id as the client sent it (empty when absent or not a string), and why.
    Unreadable {
        id: String,
        reason: Invalid,
    },
}

/// Parse a batch body `{"events":[{..}],"dropped":N}` with at most `max_events` events.
///
/// The whole body fails (400/413) only when it is not JSON, not an object, has no
/// `events` array, or has too many events; a malformed single event becomes
/// [`BatchItem::Unreadable`] so the others still go through.
pub fn parse_batch(body: &[u8], max_events: usize, table: Table) -> Result<BatchRequest, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Invalid::bad_json(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(Invalid::bad_json(
            None,
            "the body must be a JSON object {\"events\":[...]}",
        ));
    };
    let Some(Value::Array(raw_events)) = top.remove("events") else {
        return Err(Invalid::bad_json(Some("events"), "\"events\" must be an array"));
    };
    if raw_events.len() > max_events {
        return Err(Invalid::too_large(
            Some("events"),
            format!("a batch holds at most {max_events} events; split it"),
        ));
    }
    let dropped = match top.get("dropped") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Invalid::bad_json(Some("dropped"), "\"dropped\" must be a non-negative integer"))?,
    };
    let events = raw_events
        .into_iter()
        .map(|event| parse_batch_event(event, table))
        .collect();
    Ok(BatchRequest { events, dropped })
}

fn parse_batch_event(value: Value, table: Table) -> BatchItem {
    let Value::Object(mut obj) = value else {
        return BatchItem::Unreadable {
            id: String::new(),
            reason: Invalid::field("event", "each event must be an object"),
        };
    };
    let raw_id = obj.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let parsed = (|| {
        let id = parse_event_id(&raw_id)?;
        let client_time = match obj.get("client_time") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_client_time(s)?),
            Some(_) => {
                return Err(Invalid::field(
                    "client_time",
                    "\"client_time\" must be an RFC 3339 string",
                ))
            }
        };
        let learner_id = match obj.get("learner_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_learner_id(s)?),
            Some(_) => return Err(Invalid::field("learner_id", "\"learner_id\" must be a UUID string")),
        };
        // Take the strings out of the parsed object rather than copy them.
        let mut text = |field: &'static str| -> Result<String, Invalid> {
            match obj.remove(field) {
                Some(Value::String(s)) => Ok(s),
                _ => Err(Invalid::field(field, format!("\"{field}\" must be a string"))),
            }
        };
        Ok(NewEvent {
            id: Some(id),
            table,
            user_agent: text("user_agent")?,
            lesson: text("lesson")?,
            level: text("level")?,
            question: text("question")?,
            answer: text("answer")?,
            client_time,
            learner_id,
        })
    })();
    match parsed {
        Ok(event) => BatchItem::Event(event),
        Err(reason) => BatchItem::Unreadable { id: raw_id, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_reserved_characters_inside_a_segment() {
        assert_eq!(decode_segment("a%2Fb%3F%23%25%2B+c%20d").unwrap(), "a/b?#%++c d");
        assert_eq!(decode_segment("%F0%9F%98%80").unwrap(), "😀");
        assert_eq!(decode_segment("%zz").unwrap(), "%zz");
    }

    #[test]
    fn refuses_invalid_utf8_and_nul() {
        assert_eq!(decode_segment("%FF").unwrap_err().kind, InvalidKind::Value);
        assert!(decode_segment("a%00b").is_err());
    }

    #[test]
    fn event_path_splits_before_decoding() {
        let v = parse_event_path("/ua/gateway/beginner/1A/x%2Fy").unwrap().unwrap();
        assert_eq!((v.table, v.answer.as_str()), (Table::Production, "x/y"));
        let v = parse_event_path("/test/ua/gateway/beginner/1A/z").unwrap().unwrap();
        assert_eq!((v.table, v.user_agent.as_str()), (Table::Test, "ua"));
        // Five segments starting with "test" is a production row whose user agent is "test".
        let v = parse_event_path("/test/gateway/beginner/1A/z").unwrap().unwrap();
        assert_eq!((v.table, v.user_agent.as_str()), (Table::Production, "test"));
        assert!(parse_event_path("/a/b/c/d").is_none());
        assert!(parse_event_path("/x/a/b/c/d/e").is_none());
        let bad = parse_event_path("/ua/gateway/beginner/1A/%FF").unwrap().unwrap_err();
        assert_eq!(bad.field, Some("answer"));
    }

    #[test]
    fn event_ids_are_canonical_and_never_nil() {
        let canonical = parse_event_id("6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01").unwrap();
        for form in [
            "6F1C1A5E-33A4-4D0B-9F57-8F8F5D6F4A01",
            "6f1c1a5e33a44d0b9f578f8f5d6f4a01",
            "{6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01}",
        ] {
            assert_eq!(parse_event_id(form).unwrap(), canonical, "{form}");
        }
        let nil = parse_event_id("00000000-0000-0000-0000-000000000000").unwrap_err();
        assert_eq!((nil.kind, nil.field), (InvalidKind::Value, Some("id")));
        assert!(nil.rule.contains("nil UUID"), "{}", nil.rule);
    }

    #[test]
    fn client_time_is_rfc3339_normalised_to_utc() {
        let t = parse_client_time("2026-11-28T09:00:00.5+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T07:00:00.500+00:00");
        assert!(parse_client_time("yesterday").is_err());
        assert!(
            parse_client_time("2026-11-28T07:00:00").is_err(),
            "an offset is required"
        );
    }

    #[test]
    fn batch_keeps_bad_events_in_place() {
        let body = br#"{"events":[
            {"id":"6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01","user_agent":"u","lesson":"gateway","level":"beginner","question":"1A","answer":"a","client_time":"2026-11-28T07:00:00Z"},
            {"id":"nope","user_agent":"u","lesson":"gateway","level":"beginner","question":"1A","answer":"a"},
            7
        ],"dropped":3}"#;
        let b = parse_batch(body, 500, Table::Test).unwrap();
        assert_eq!(b.dropped, 3);
        assert_eq!(b.events.len(), 3);
        assert!(matches!(&b.events[0], BatchItem::Event(e) if e.client_time.is_some() && e.table == Table::Test));
        assert!(
            matches!(&b.events[1], BatchItem::Unreadable { id, reason } if id == "nope" && reason.field == Some("id"))
        );
        assert!(matches!(&b.events[2], BatchItem::Unreadable { id, .. } if id.is_empty()));
    }

    #[test]
    fn learner_ids_are_optional_uuids_never_nil() {
        let learner = "0b6f3c1e-8f1d-4b7a-9c2e-5d4f3a2b1c0d";
        assert_eq!(parse_learner_id(&learner.to_uppercase()).unwrap().to_string(), learner);
        for bad in [
            "",
            "bob",
            "00000000-0000-0000-0000-000000000000",
            "0b6f3c1e-8f1d-4b7a-9c2e",
        ] {
            assert_eq!(parse_learner_id(bad).unwrap_err().field, Some("learner_id"), "{bad:?}");
        }
        let event = |extra: &str| {
            format!(
                r#"{{"id":"6f1c1a5e-33a4-4d0b-9f57-8f8f5d6f4a01","user_agent":"u","lesson":"l","level":"v","question":"1A","answer":"a"{extra}}}"#
            )
        };
        let body = format!(
            r#"{{"events":[{},{},{},{}]}}"#,
            event(&format!(r#","learner_id":"{learner}""#)),
            event(""),
            event(r#","learner_id":"nope""#),
            event(r#","learner_id":7"#)
        );
        let b = parse_batch(body.as_bytes(), 10, Table::Production).unwrap();
        assert!(
            matches!(&b.events[0], BatchItem::Event(e) if e.learner_id.map(|l| l.to_string()).as_deref() == Some(learner))
        );
        assert!(matches!(&b.events[1], BatchItem::Event(e) if e.learner_id.is_none()));
        for bad in &b.events[2..] {
            assert!(
                matches!(bad, BatchItem::Unreadable { reason, .. } if reason.field == Some("learner_id")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn batch_refuses_bad_shapes_and_too_many_events() {
        let kind = |body: &[u8]| parse_batch(body, 10, Table::Production).unwrap_err().kind;
        assert_eq!(kind(b"not json"), InvalidKind::BadJson);
        assert_eq!(kind(b"[1]"), InvalidKind::BadJson);
        assert_eq!(kind(br#"{"events":{}}"#), InvalidKind::BadJson);
        let many = format!("{{\"events\":[{}]}}", ["{}"; 11].join(","));
        assert_eq!(kind(many.as_bytes()), InvalidKind::TooLarge);
        let dropped = parse_batch(br#"{"events":[],"dropped":-1}"#, 10, Table::Production).unwrap_err();
        assert_eq!(dropped.field, Some("dropped"));
    }
}
