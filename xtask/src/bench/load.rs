//! The HTTP load generator for the collector: keep-alive HTTP/1.1 connections on tokio
//! (hyper's low-level client), every request's latency recorded exactly (no sampling).
//!
//! Two pacing modes: closed loop (each connection sends its next request as soon as
//! the previous answer arrives; measures the maximum), and a fixed total rate spread
//! over the connections, where latency is measured from the request's *scheduled*
//! start, so a stalled server cannot hide its queueing delay (no coordinated omission).

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The MD5 hex of a user agent, as lessons send it.
const USER_AGENT_MD5: &str = "0cc175b9c0f1b6a831c399e269772661";
/// Fixed client time: the server stores it, the value does not matter here.
const CLIENT_TIME: &str = "2026-11-28T07:00:00.000Z";
/// A percent-encoded answer with a slash, a space and a non-ASCII letter, so the
/// decoding path does some real work.
const ENCODED_ANSWER: &str = "bench%20answer%20%2F%20caf%C3%A9";

/// Event ids, unique within a run and across runs: a random 122-bit base (from
/// `uuid::Uuid::new_v4`, once) plus a counter, formatted as a version-4 UUID. Cheaper
/// than a `getrandom` call per id, which would take CPU from the collector.
#[derive(Debug)]
pub struct IdSource {
    base: u128,
    counter: AtomicU64,
}

impl IdSource {
    pub fn new() -> Self {
        IdSource {
            base: uuid::Uuid::new_v4().as_u128(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as u128;
        // Counter in the low 64 bits (xor keeps the random base's entropy elsewhere),
        // then force the version (4) and variant (10) bits.
        let raw = (self.base ^ n) & !(0xF << 76) & !(0x3 << 62) | (0x4 << 76) | (0x2 << 62);
        uuid::Uuid::from_u128(raw).hyphenated().to_string()
    }
}

impl Default for IdSource {
    fn default() -> Self {
        Self::new()
    }
}

/// What each request carries.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `POST /{ua}/gateway/beginner/1A/{answer}` with a fresh `Idempotency-Key`.
    Single,
    /// `POST /batch` with this many events, each with a fresh id.
    Batch { size: usize },
}

/// How fast requests are sent.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Next request as soon as the previous answer is in (per connection).
    ClosedLoop,
    /// This many requests per second in total, on a fixed schedule.
    Rate(f64),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub kind: Kind,
    pub connections: usize,
    pub duration: Duration,
    pub pace: Pace,
    pub ids: Arc<IdSource>,
}

/// What one run measured.
#[derive(Default, Debug)]
pub struct Outcome {
    /// From the start until the last answer arrived.
    pub elapsed: Duration,
    /// Microseconds per request that got an HTTP answer, sorted.
    pub latencies_us: Vec<u64>,
    /// Requests by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connect/send/read failures (no HTTP answer at all).
    pub transport_errors: u64,
    /// Events the collector answered "written" (201, or `written` in a batch).
    pub events_written: u64,
    /// Events answered "duplicate" (200, or `duplicate` in a batch).
    pub events_duplicate: u64,
    /// Batch events answered "invalid".
    pub events_invalid: u64,
}

impl Outcome {
    /// Requests without a 2xx answer (including transport failures).
    pub fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum::<u64>()
            + self.transport_errors
            + self.events_invalid
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events_written as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds (`q` in 0..=1), NaN when nothing was answered.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).clamp(1, self.latencies_us.len());
        self.latencies_us[rank - 1] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us
            .last()
            .map(|&us| us as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    }

    /// Non-2xx statuses as `503×12, 429×3` (empty when none).
    pub fn error_summary(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if self.transport_errors > 0 {
            parts.push(format!("io×{}", self.transport_errors));
        }
        if self.events_invalid > 0 {
            parts.push(format!("invalid×{}", self.events_invalid));
        }
        parts.join(", ")
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.events_written += other.events_written;
        self.events_duplicate += other.events_duplicate;
        self.events_invalid += other.events_invalid;
    }
}

/// Run one plan to completion on a fresh two-thread runtime (the machine has 2 cores;
/// more threads would only steal more from the collector and PostgreSQL).
pub fn run(plan: &Plan) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(plan.clone()))
}

async fn run_async(plan: Plan) -> Result<Outcome> {
    // Connect everything first, so connection set-up is not part of the measurement.
    let mut senders = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        senders.push(
            connect(plan.addr)
                .await
                .with_context(|| format!("connecting to {}", plan.addr))?,
        );
    }
    let plan = Arc::new(plan);
    let next_slot = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|sender| tokio::spawn(drive(plan.clone(), sender, start, next_slot.clone())))
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        total.merge(task.await?);
    }
    total.elapsed = start.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection's loop until the plan's duration is over.
async fn drive(plan: Arc<Plan>, first: SendRequest<Full<Bytes>>, start: Instant, next_slot: Arc<AtomicU64>) -> Outcome {
    let deadline = start + plan.duration;
    let host = plan.addr.to_string();
    let mut out = Outcome::default();
    let mut sender = Some(first);
    loop {
        let scheduled = match plan.pace {
            Pace::ClosedLoop => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
            Pace::Rate(per_sec) => {
                let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                let at = start + Duration::from_secs_f64(slot as f64 / per_sec);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
        };
        if sender.is_none() {
            match connect(plan.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    out.transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let request = build_request(plan.kind, &host, &plan.ids);
        let answer = send(sender.as_mut().expect("connected above"), request).await;
        let latency = scheduled.elapsed();
        match answer {
            Ok((status, body)) => {
                out.latencies_us.push(latency.as_micros() as u64);
                *out.statuses.entry(status).or_default() += 1;
                count_events(plan.kind, status, &body, &mut out);
            }
            Err(_) => {
                out.transport_errors += 1;
                sender = None;
            }
        }
    }
    out
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, request: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn build_request(kind: Kind, host: &str, ids: &IdSource) -> Request<Full<Bytes>> {
    match kind {
        Kind::Single => Request::post(format!("/{USER_AGENT_MD5}/gateway/beginner/1A/{ENCODED_ANSWER}"))
            .header("host", host)
            .header("idempotency-key", ids.next())
            .header("x-client-time", CLIENT_TIME)
            .body(Full::new(Bytes::new())),
        Kind::Batch { size } => Request::post("/batch")
            .header("host", host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(batch_body(size, ids)))),
    }
    .expect("static request parts are valid")
}

/// `{"events":[...],"dropped":0}` with `size` events, each with a fresh id. Built as
/// text: `serde_json::Value` trees would cost the generator more CPU than the collector.
pub fn batch_body(size: usize, ids: &IdSource) -> Vec<u8> {
    let mut body = String::with_capacity(64 + size * 240);
    body.push_str(r#"{"events":["#);
    for i in 0..size {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"id":""#);
        body.push_str(&ids.next());
        body.push_str(r#"","user_agent":""#);
        body.push_str(USER_AGENT_MD5);
        body.push_str(
            r#"","lesson":"gateway","level":"beginner","question":"1A","answer":"bench batch answer / caf\u00e9 "#,
        );
        body.push_str(&i.to_string());
        body.push_str(r#"","client_time":""#);
        body.push_str(CLIENT_TIME);
        body.push_str(r#""}"#);
    }
    body.push_str(r#"],"dropped":0}"#);
    body.into_bytes()
}

/// How often `needle` occurs in `haystack` (results hold only ids and status words,
/// so counting `"written"` counts written events).
fn occurrences(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

fn count_events(kind: Kind, status: u16, body: &[u8], out: &mut Outcome) {
    match (kind, status) {
        (Kind::Single, 201) => out.events_written += 1,
        (Kind::Single, 200) => out.events_duplicate += 1,
        (Kind::Batch { size }, 200) => {
            let written = occurrences(body, br#""written""#);
            let duplicate = occurrences(body, br#""duplicate""#);
            out.events_written += written;
            out.events_duplicate += duplicate;
            out.events_invalid += (size as u64).saturating_sub(written + duplicate);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let out = Outcome {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            ..Default::default()
        };
        assert_eq!(out.percentile_ms(0.5), 50.0);
        assert_eq!(out.percentile_ms(0.99), 99.0);
        assert_eq!(out.max_ms(), 100.0);
    }

    #[test]
    fn batch_body_is_json_with_unique_v4_ids() {
        let body: serde_json::Value = serde_json::from_slice(&batch_body(3, &IdSource::new())).unwrap();
        for e in body["events"].as_array().unwrap() {
            let id = uuid::Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(e["answer"].as_str().unwrap().contains("café"));
        }
        let ids: std::collections::HashSet<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn batch_results_are_counted() {
        let mut out = Outcome::default();
        let body = br#"{"results":[{"id":"a","status":"written"},{"id":"b","status":"duplicate"},{"id":"c","status":"invalid","reason":"x"}]}"#;
        count_events(Kind::Batch { size: 3 }, 200, body, &mut out);
        assert_eq!(
            (out.events_written, out.events_duplicate, out.events_invalid),
            (1, 1, 1)
        );
    }
}
