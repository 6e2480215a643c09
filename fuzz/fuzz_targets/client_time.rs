//! The `X-Client-Time` header (and a batch event's `client_time`).
//!
//! Invariants: nothing panics; an accepted time printed back as RFC 3339 parses to the
//! same instant (so what is stored is what the browser meant) whenever the UTC year
//! is one RFC 3339 can write (0000..=9999).
#![no_main]

use chrono::{Datelike, SecondsFormat};
use hourofci_collector::event::parse_client_time;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = parse_client_time(text) else { return };
    if (0..=9999).contains(&t.year()) {
        let printed = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(parse_client_time(&printed), Ok(t), "{text:?} -> {printed}");
    }
});
