//! Prometheus text metrics, hand-rolled with atomics (a handful of series; no registry
//! crate needed). Served at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::event::{NewEvent, Outcome, Table};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the write-latency histogram buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics hold integers).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Which listener a connection came in on (the `listener` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--bind`: the answers.
    Public,
    /// `--admin-bind`: `/metrics` and `/healthz` only.
    Admin,
}

impl Listener {
    const ALL: [Listener; 2] = [Listener::Public, Listener::Admin];

    fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// Why the collector closed a connection itself (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No whole request head (or HTTP/2 preface and SETTINGS) by the head deadline.
    HeadTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    /// The peer took none of our answer for the idle timeout.
    StoppedReading,
}

/// One listener's connections: open now, refused at a cap, closed by a deadline. What
/// an operator needs to tell an attack on the connection limits from a quiet day.
#[derive(Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub refused_per_client: Counter,
    pub refused_global: Counter,
    pub closed_head_timeout: Counter,
    pub closed_idle_timeout: Counter,
    pub closed_stopped_reading: Counter,
}

impl ConnectionMetrics {
    pub fn closed(&self, reason: CloseReason) {
        match reason {
            CloseReason::HeadTimeout => self.closed_head_timeout.inc(),
            CloseReason::IdleTimeout => self.closed_idle_timeout.inc(),
            CloseReason::StoppedReading => self.closed_stopped_reading.inc(),
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (route label, method, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    pub written_production: Counter,
    pub written_test: Counter,
    pub duplicates: Counter,
    pub conflicts: Counter,
    pub invalid: Counter,
    pub db_errors: Counter,
    pub queue_full: Counter,
    pub group_commits: Counter,
    pub group_events: Counter,
    pub client_dropped: Counter,
    pub queued_events: Gauge,
    pub write_seconds: Histogram,
    /// Indexed by [`Listener`]: see [`Metrics::connections`].
    connections: [ConnectionMetrics; 2],
}

impl Metrics {
    pub fn connections(&self, listener: Listener) -> &ConnectionMetrics {
        &self.connections[listener as usize]
    }

    pub(crate) fn record_request(&self, route: &'static str, method: &str, status: u16) {
        // Clients choose the method string: keep the label set bounded.
        let method = match method {
            "GET" | "POST" | "OPTIONS" | "HEAD" | "PUT" | "DELETE" | "PATCH" => method,
            _ => "OTHER",
        };
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route, method.to_string(), status)).or_default() += 1;
    }

    /// Count one successful group commit.
    pub(crate) fn record_commit(&self, events: &[NewEvent], outcomes: &[Outcome]) {
        self.group_commits.inc();
        self.group_events.add(events.len() as u64);
        for (e, o) in events.iter().zip(outcomes) {
            match (o, e.table) {
                (Outcome::Written, Table::Production) => self.written_production.inc(),
                (Outcome::Written, Table::Test) => self.written_test.inc(),
                (Outcome::Duplicate, _) => self.duplicates.inc(),
                (Outcome::Conflict, _) => self.conflicts.inc(),
                (Outcome::Rejected(_), _) => self.invalid.inc(),
            }
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, series: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "hourofci_events_written_total",
            "Events committed as new rows.",
            &[
                ("{table=\"production\"}", self.written_production.get()),
                ("{table=\"test\"}", self.written_test.get()),
            ],
        );
        counter(
            "hourofci_events_duplicate_total",
            "Events whose id was already stored.",
            &[("", self.duplicates.get())],
        );
        counter(
            "hourofci_events_conflict_total",
            "Events whose id was already stored with other content.",
            &[("", self.conflicts.get())],
        );
        counter(
            "hourofci_events_invalid_total",
            "Events refused by validation or by the database.",
            &[("", self.invalid.get())],
        );
        counter(
            "hourofci_db_errors_total",
            "Group commits that failed (database error or timeout).",
            &[("", self.db_errors.get())],
        );
        counter(
            "hourofci_queue_full_total",
            "Requests refused because the write queue was full.",
            &[("", self.queue_full.get())],
        );
        counter(
            "hourofci_group_commits_total",
            "Successful group commits (transactions).",
            &[("", self.group_commits.get())],
        );
        counter(
            "hourofci_group_events_total",
            "Events in successful group commits.",
            &[("", self.group_events.get())],
        );
        counter(
            "hourofci_client_dropped_events_total",
            "Events clients reported discarding (batch \"dropped\").",
            &[("", self.client_dropped.get())],
        );
        // (label set, value) for every listener.
        let by_listener = |f: fn(&ConnectionMetrics) -> u64, extra: &str| {
            Listener::ALL.map(|l| (format!("{{listener=\"{}\"{extra}}}", l.label()), f(self.connections(l))))
        };
        let refused = [
            by_listener(|c| c.refused_per_client.get(), ",cap=\"per_client\""),
            by_listener(|c| c.refused_global.get(), ",cap=\"global\""),
        ]
        .concat();
        let closed = [
            by_listener(|c| c.closed_head_timeout.get(), ",reason=\"head_timeout\""),
            by_listener(|c| c.closed_idle_timeout.get(), ",reason=\"idle_timeout\""),
            by_listener(|c| c.closed_stopped_reading.get(), ",reason=\"stopped_reading\""),
        ]
        .concat();
        fn borrowed(v: &[(String, u64)]) -> Vec<(&str, u64)> {
            v.iter().map(|(l, n)| (l.as_str(), *n)).collect()
        }
        counter(
            "hourofci_connections_refused_total",
            "Connections closed at once because a cap was reached (per client address, or in all).",
            &borrowed(&refused),
        );
        counter(
            "hourofci_connections_closed_total",
            "Connections the collector closed: no whole request head by the head deadline, idle, or a peer that stopped reading.",
            &borrowed(&closed),
        );
        let _ = writeln!(
            out,
            "# HELP hourofci_connections_open Connections open now, by listener.\n# TYPE hourofci_connections_open gauge"
        );
        for l in Listener::ALL {
            let _ = writeln!(
                out,
                "hourofci_connections_open{{listener=\"{}\"}} {}",
                l.label(),
                self.connections(l).open.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP hourofci_queued_events Events waiting for a commit.\n# TYPE hourofci_queued_events gauge\nhourofci_queued_events {}",
            self.queued_events.get()
        );
        let _ = writeln!(
            out,
            "# HELP hourofci_write_seconds Time to commit one group.\n# TYPE hourofci_write_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hourofci_write_seconds_bucket{{le=\"{bound}\"}} {}",
                self.write_seconds.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.write_seconds.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "hourofci_write_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "hourofci_write_seconds_sum {}",
            self.write_seconds.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "hourofci_write_seconds_count {count}");
        let _ = writeln!(out, "# HELP hourofci_http_requests_total HTTP requests by route, method and status.\n# TYPE hourofci_http_requests_total counter");
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, method, status), v) in map.iter() {
            let _ = writeln!(
                out,
                "hourofci_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {v}"
            );
        }
        out
    }
}

/// Read one unlabelled or labelled sample from exposition text (tests, bench).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_requests() {
        let m = Metrics::default();
        m.record_request("event", "POST", 201);
        m.record_request("event", "POST", 201);
        m.record_request("event", "BREW", 405);
        m.record_request("event", "SPAM", 405);
        m.write_seconds.observe(0.003);
        m.duplicates.add(4);
        let text = m.render();
        assert_eq!(sample(&text, "hourofci_events_duplicate_total"), Some(4.0));
        assert_eq!(
            sample(
                &text,
                "hourofci_http_requests_total{route=\"event\",method=\"POST\",status=\"201\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "hourofci_http_requests_total{route=\"event\",method=\"OTHER\",status=\"405\"}"
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "hourofci_write_seconds_bucket{le=\"0.002\"}"), Some(0.0));
        assert_eq!(sample(&text, "hourofci_write_seconds_bucket{le=\"0.005\"}"), Some(1.0));
        assert_eq!(sample(&text, "hourofci_write_seconds_count"), Some(1.0));
    }

    #[test]
    fn renders_each_listeners_connections_apart() {
        let m = Metrics::default();
        let admin = m.connections(Listener::Admin);
        admin.refused_per_client.add(3);
        admin.open.add(2);
        m.connections(Listener::Public).closed(CloseReason::StoppedReading);
        m.connections(Listener::Public).closed(CloseReason::HeadTimeout);
        m.connections(Listener::Public).closed(CloseReason::HeadTimeout);
        let text = m.render();
        let s = |series: &str| sample(&text, series);
        assert_eq!(
            s(r#"hourofci_connections_refused_total{listener="admin",cap="per_client"}"#),
            Some(3.0)
        );
        assert_eq!(
            s(r#"hourofci_connections_refused_total{listener="public",cap="per_client"}"#),
            Some(0.0)
        );
        assert_eq!(
            s(r#"hourofci_connections_refused_total{listener="admin",cap="global"}"#),
            Some(0.0)
        );
        assert_eq!(s(r#"hourofci_connections_open{listener="admin"}"#), Some(2.0));
        assert_eq!(
            s(r#"hourofci_connections_closed_total{listener="public",reason="head_timeout"}"#),
            Some(2.0)
        );
        assert_eq!(
            s(r#"hourofci_connections_closed_total{listener="public",reason="stopped_reading"}"#),
            Some(1.0)
        );
        assert_eq!(
            s(r#"hourofci_connections_closed_total{listener="admin",reason="idle_timeout"}"#),
            Some(0.0)
        );
        // One HELP and TYPE per family, as Prometheus requires.
        assert_eq!(
            text.matches("# TYPE hourofci_connections_closed_total counter").count(),
            1
        );
    }
}
