//! hourofci-collector: records what learners answer in Hour of CI lessons.
//!
//! Old lessons call `GET /{ua}/{lesson}/{level}/{question}/{answer}` (kept as is); the
//! SDK POSTs events with an `Idempotency-Key` or sends `/batch`es. Every write goes
//! through [`group_commit`] into a [`store`] (PostgreSQL via the `sql/` functions, or
//! an embedded SQLite file). The contract is `docs/DESIGN.md`.

mod admin;
pub mod app;
pub mod config;
mod cors;
mod error;
pub mod event;
pub mod group_commit;
mod limits;
pub mod metrics;
pub mod migrate;
pub mod read_side;
mod sdk_files;
mod server;
pub mod store;
mod tls;
pub mod validate;

pub use server::{serve, start, RunningServer};
