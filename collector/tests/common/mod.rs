//! `mod common; use common::*;` in a test file: the collector's test harness, the
//! `collector-harness` crate beside this file (see its `lib.rs`).

pub use collector_harness::*;
