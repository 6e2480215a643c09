//! hourofci-insights: the read side of hourofci-log, as its own binary so that the
//! public write service (`hourofci-collector`) never links it and never holds read
//! credentials.
//!
//! - [`export`]: every column, filtered, streamed in id order as CSV or JSON lines;
//! - [`forget`]: delete one learner's rows, or old test traffic (`prune`);
//! - [`overview`]: the overview's numbers, kept in memory and brought up to date per request;
//! - [`server`]: the insights pages and `GET /api/answers` (`serve`, token required);
//! - [`source`]: PostgreSQL (reader or admin role) or the collector's SQLite file.

pub mod cli;
pub mod export;
pub mod forget;
pub mod overview;
pub mod server;
pub mod source;
