//! The `/batch` body: arbitrary bytes, deeply nested or huge JSON.
//!
//! Invariants: nothing panics or overflows the stack; an accepted batch never holds
//! more events than allowed; every entry is either an event with an id or a refusal
//! that names a field; validation of each event never panics.
#![no_main]

use hourofci_collector::event::{parse_batch, BatchItem, InvalidKind, Table};
use hourofci_collector::validate::Rules;
use libfuzzer_sys::fuzz_target;

const MAX_EVENTS: usize = 500;

fuzz_target!(|data: &[u8]| {
    let rules = Rules::original();
    match parse_batch(data, MAX_EVENTS, Table::Production) {
        Ok(batch) => {
            assert!(batch.events.len() <= MAX_EVENTS);
            for item in &batch.events {
                match item {
                    BatchItem::Event(e) => {
                        assert!(e.id.is_some(), "a batch event always has an id");
                        if let Err(r) = rules.check(e) {
                            assert!(r.field.is_some(), "{r:?}");
                        }
                    }
                    BatchItem::Unreadable { reason, .. } => assert!(reason.field.is_some(), "{reason:?}"),
                }
            }
        }
        Err(e) => assert!(matches!(e.kind, InvalidKind::BadJson | InvalidKind::TooLarge), "unexpected code {e:?}"),
    }
});
