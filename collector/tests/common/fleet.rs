//! Clients that post single events and retry like the SDK, and the property every fault
//! test checks with them: the table holds exactly the acknowledged events, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::event_path;

/// What the fleet saw.
#[derive(Debug, Default, Clone)]
pub struct FleetReport {
    /// Event ids the fleet created (each sent until acknowledged or the deadline).
    pub sent: BTreeSet<String>,
    /// Ids answered 2xx at least once.
    pub acked: BTreeSet<String>,
    /// How many answers of each status (0: connection error or timeout).
    pub statuses: BTreeMap<u16, u64>,
    /// 503/429 answers without a `Retry-After`, or 4xx/5xx without the JSON body.
    pub malformed_errors: u64,
    /// Attempts in total.
    pub attempts: u64,
}

impl FleetReport {
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
    pub fn summary(&self) -> String {
        format!(
            "sent {} events, {} acknowledged, {} attempts, statuses {:?}",
            self.sent.len(),
            self.acked.len(),
            self.attempts,
            self.statuses
        )
    }
}

/// Clients posting single events, each retried on network errors, 5xx, 408 and 429
/// (as the SDK: same id, backoff with jitter, `Retry-After` honoured but capped to
/// keep tests short) until acknowledged or until `give_up` after `stop` is set.
pub struct Fleet {
    pub stop: Arc<AtomicBool>,
    report: Arc<Mutex<FleetReport>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// `workers` clients against `base` (e.g. `http://127.0.0.1:4000`); `base` is read
    /// again before each attempt so a restarted collector can move.
    pub fn start(base: Arc<Mutex<String>>, workers: usize, give_up: Duration) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(FleetReport::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|w| {
                let (stop, report, client, base) = (stop.clone(), report.clone(), client.clone(), base.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = Uuid::new_v4();
                        report.lock().unwrap().sent.insert(id.to_string());
                        let answer = format!("worker {w} answer {n}: a/b?c#d%e+f 😀");
                        send_until_acked(&client, &base, id, &answer, &stop, give_up, &report).await;
                    }
                })
            })
            .collect();
        Fleet { stop, report, tasks }
    }

    /// Stop creating events, let pending ones finish their retries, return the report.
    pub async fn finish(self) -> FleetReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.report).unwrap().into_inner().unwrap()
    }

    pub fn snapshot(&self) -> FleetReport {
        self.report.lock().unwrap().clone()
    }
}

async fn send_until_acked(
    client: &reqwest::Client,
    base: &Mutex<String>,
    id: Uuid,
    answer: &str,
    stop: &AtomicBool,
    give_up: Duration,
    report: &Mutex<FleetReport>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut stop_seen: Option<Instant> = None;
    let client_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    loop {
        let url = format!("{}{}", base.lock().unwrap(), event_path(false, answer));
        let res = client
            .post(&url)
            .header("Idempotency-Key", id.to_string())
            .header("X-Client-Time", &client_time)
            .send()
            .await;
        let (status, retry_after, well_formed) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body = r.bytes().await.unwrap_or_default();
                let json_ok = status < 400
                    || serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.get("error").is_some());
                let retry_ok = !(status == 503 || status == 429) || retry_after.is_some();
                (status, retry_after, json_ok && retry_ok)
            }
            Err(_) => (0, None, true),
        };
        {
            let mut r = report.lock().unwrap();
            r.attempts += 1;
            *r.statuses.entry(status).or_default() += 1;
            if !well_formed {
                r.malformed_errors += 1;
            }
            if (200..300).contains(&status) {
                r.acked.insert(id.to_string());
                return;
            }
        }
        let retryable = status == 0 || status >= 500 || status == 408 || status == 429;
        if !retryable {
            return; // the SDK reports `rejected` and drops it
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stop_seen.get_or_insert_with(Instant::now);
            if since.elapsed() > give_up {
                return;
            }
        }
        // Full jitter, capped; Retry-After honoured up to 500 ms to keep the test short.
        let jitter = Duration::from_millis(rand_below(backoff.as_millis() as u64 + 1));
        let wait = retry_after.map_or(jitter, |s| {
            Duration::from_secs(s).min(Duration::from_millis(500)).max(jitter)
        });
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

fn rand_below(n: u64) -> u64 {
    (Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// Assert the table holds exactly the acknowledged events, each once, and every
/// event the fleet created was acknowledged in the end.
pub fn assert_exactly_once(report: &FleetReport, stored: &BTreeMap<String, u64>) {
    let dup: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated rows: {dup:?}");
    let stored_ids: BTreeSet<String> = stored.keys().cloned().collect();
    let acked_not_stored: Vec<_> = report.acked.difference(&stored_ids).collect();
    assert!(
        acked_not_stored.is_empty(),
        "acknowledged (2xx) but not stored: {acked_not_stored:?}"
    );
    let stored_not_sent: Vec<_> = stored_ids.difference(&report.sent).collect();
    assert!(stored_not_sent.is_empty(), "stored but never sent: {stored_not_sent:?}");
    let never_acked: Vec<_> = report.sent.difference(&report.acked).collect();
    assert!(
        never_acked.is_empty(),
        "sent but never acknowledged despite retries: {never_acked:?}"
    );
    assert_eq!(
        report.malformed_errors, 0,
        "error answers without JSON body or Retry-After"
    );
}
