//! Path-segment decoding and validation: any request path the collector can be sent.
//!
//! Invariants: nothing panics; a decoded value never holds NUL; re-encoding a decoded
//! segment and decoding it again gives the same value (what the SDK's
//! `encodeURIComponent` sends comes back byte for byte); validation of whatever was
//! decoded answers Ok or a named field, never a panic.
#![no_main]

use hourofci_collector::event::{decode_segment, parse_event_path, NewEvent, Table};
use hourofci_collector::validate::Rules;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };

    if let Ok(value) = decode_segment(raw) {
        assert!(!value.contains('\0'), "decoded value holds NUL: {value:?}");
        let encoded = utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string();
        assert_eq!(decode_segment(&encoded).as_deref(), Ok(value.as_str()), "round trip of {value:?}");
    }

    let rules = Rules::original();
    for path in [format!("/{raw}"), format!("/test/{raw}"), format!("/ua/gateway/beginner/1A/{raw}")] {
        let Some(parsed) = parse_event_path(&path) else { continue };
        let Ok(v) = parsed else { continue };
        for s in [&v.user_agent, &v.lesson, &v.level, &v.question, &v.answer] {
            assert!(!s.contains('\0'));
        }
        let event = NewEvent {
            id: None,
            table: Table::Production,
            user_agent: v.user_agent,
            lesson: v.lesson,
            level: v.level,
            question: v.question,
            answer: v.answer,
            client_time: None,
            learner_id: None,
        };
        if let Err(e) = rules.check(&event) {
            assert!(e.field.is_some(), "a refusal names its field: {e:?}");
        }
    }
});
