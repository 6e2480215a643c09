//! Group commit: THE write path. Requests put their events on a bounded queue; each of
//! `writers` tasks takes whatever has queued (up to `max_events`) and commits it in one
//! transaction, then answers every request of the group. So a commit is never spent on
//! a single event when others are waiting, and throughput tracks the database's commit
//! rate times the group size. A writer waits at most `max_wait` for a group to fill.
//!
//! - Bounded: the queue holds at most `queue_capacity` events; beyond that a request is
//!   refused at once ([`SubmitError::QueueFull`], answered 503) instead of growing memory.
//! - A request's events (one, or a whole `/batch`) are never split across groups.
//! - One event whose values the database refuses (say an emoji in a LATIN1 database)
//!   does not fail its group: the group is split in halves and committed again, down
//!   to the event at fault, which gets [`Outcome::Rejected`] (422) while the others are
//!   committed. Only errors SQLSTATE puts on the data (class 22/23) are isolated so.
//! - Any other failed commit (the database is down, a timeout) fails exactly the
//!   requests of that (part of the) group: 503, the client retries.
//! - Shutdown has two steps: [`GroupCommit::drain`] makes writers commit at once
//!   instead of waiting to fill a group (requests still accepted), then
//!   [`GroupCommit::close`] refuses new work; writers empty the queue, then stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::event::{NewEvent, Outcome};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::validate::Admitted;

/// Tuning of the write path (`--group-*`, `--writers`, `--queue-capacity`, `--db-timeout-ms`).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub max_events: usize,
    pub max_wait: Duration,
    pub writers: usize,
    pub queue_capacity: usize,
    pub db_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_events: 256,
            max_wait: Duration::ZERO,
            writers: 4,
            queue_capacity: 10_000,
            db_timeout: Duration::from_millis(5000),
        }
    }
}

/// Why a submission got no outcome. Every variant is answered 503 + `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the collector is shutting down")]
    ShuttingDown,
    #[error("no commit within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Store(Arc<StoreError>),
}

type Reply = Result<Vec<Outcome>, Arc<StoreError>>;

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Reply>,
    _permit: OwnedSemaphorePermit,
}

/// Handle used by request handlers: their only way to the database. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    store: Arc<Store>,
    queue: mpsc::UnboundedSender<Job>,
    room: Arc<Semaphore>,
    phase: watch::Sender<Phase>,
    config: GroupConfig,
    metrics: Arc<Metrics>,
}

/// Lifecycle of the write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Shutting down: commit what is queued without waiting for more.
    Draining,
    /// No new work; writers exit once the queue is empty.
    Closed,
}

/// The writer tasks; await [`Writers::join`] after [`GroupCommit::close`].
pub struct Writers {
    tasks: JoinSet<()>,
}

impl Writers {
    /// Wait until every writer has drained the queue and stopped.
    pub async fn join(mut self) {
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!("group-commit writer panicked: {e}");
            }
        }
    }
}

impl GroupCommit {
    /// Start `config.writers` writer tasks on the current runtime.
    pub fn start(store: Arc<Store>, config: GroupConfig, metrics: Arc<Metrics>) -> (GroupCommit, Writers) {
        let (queue, rx) = mpsc::unbounded_channel();
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let intake = Arc::new(Mutex::new(Intake { rx, carry: None }));
        let mut tasks = JoinSet::new();
        for _ in 0..config.writers.max(1) {
            let writer = Writer {
                intake: intake.clone(),
                store: store.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                phase: phase_rx.clone(),
            };
            tasks.spawn(writer.run());
        }
        let room = Arc::new(Semaphore::new(config.queue_capacity.max(1)));
        (
            GroupCommit {
                store,
                queue,
                room,
                phase,
                config,
                metrics,
            },
            Writers { tasks },
        )
    }

    /// Queue `events` (kept together in one group) and wait for their commit. Only
    /// events that kept the rules ([`Rules::admit`](crate::validate::Rules::admit)).
    pub async fn submit(&self, events: Vec<Admitted>) -> Result<Vec<Outcome>, SubmitError> {
        let events: Vec<NewEvent> = events.into_iter().map(Admitted::into_event).collect();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if *self.phase.borrow() == Phase::Closed {
            return Err(SubmitError::ShuttingDown);
        }
        // A batch larger than the whole queue still fits when the queue is empty.
        let need = events.len().min(self.config.queue_capacity.max(1)) as u32;
        let permit = self.room.clone().try_acquire_many_owned(need).map_err(|_| {
            self.metrics.queue_full.inc();
            SubmitError::QueueFull
        })?;
        let (reply, answer) = oneshot::channel();
        let n = events.len() as i64;
        self.metrics.queued_events.add(n);
        if self
            .queue
            .send(Job {
                events,
                reply,
                _permit: permit,
            })
            .is_err()
        {
            self.metrics.queued_events.add(-n);
            return Err(SubmitError::ShuttingDown);
        }
        match tokio::time::timeout(self.config.db_timeout, answer).await {
            Err(_) => Err(SubmitError::Timeout(self.config.db_timeout)),
            Ok(Err(_)) => Err(SubmitError::ShuttingDown),
            Ok(Ok(Err(e))) => Err(SubmitError::Store(e)),
            Ok(Ok(Ok(outcomes))) => Ok(outcomes),
        }
    }

    /// Whether the database answers a trivial query within the database timeout
    /// (`/healthz`); errors as [`GroupCommit::submit`]'s.
    pub(crate) async fn health(&self) -> Result<(), SubmitError> {
        match tokio::time::timeout(self.config.db_timeout, self.store.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SubmitError::Store(Arc::new(e))),
            Err(_) => Err(SubmitError::Timeout(self.config.db_timeout)),
        }
    }

    /// Commit queued events at once instead of waiting to fill groups; still accept new ones.
    pub fn drain(&self) {
        self.phase.send_if_modified(|p| {
            let changed = *p < Phase::Draining;
            *p = (*p).max(Phase::Draining);
            changed
        });
    }

    /// Stop taking new events; the writers commit what is queued, then exit.
    pub fn close(&self) {
        self.phase.send_replace(Phase::Closed);
    }
}

/// The receiving end, shared by the writers: one collects a group while others write.
struct Intake {
    rx: mpsc::UnboundedReceiver<Job>,
    /// A job that did not fit the previous group; it starts the next one.
    carry: Option<Job>,
}

struct Writer {
    intake: Arc<Mutex<Intake>>,
    store: Arc<Store>,
    config: GroupConfig,
    metrics: Arc<Metrics>,
    phase: watch::Receiver<Phase>,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let group = {
                let intake = self.intake.clone();
                let mut intake = intake.lock().await;
                self.collect(&mut intake).await
            };
            match group {
                Some(jobs) => self.commit(jobs).await,
                None => return,
            }
        }
    }

    /// The next group, or `None` once closed and drained.
    async fn collect(&mut self, intake: &mut Intake) -> Option<Vec<Job>> {
        let first = match intake.carry.take() {
            Some(job) => job,
            None => {
                let closed = *self.phase.borrow() == Phase::Closed;
                if closed {
                    intake.rx.try_recv().ok()?
                } else {
                    tokio::select! {
                        job = intake.rx.recv() => job?,
                        _ = self.phase.wait_for(|p| *p == Phase::Closed) => intake.rx.try_recv().ok()?,
                    }
                }
            }
        };
        let mut size = first.events.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        while size < self.config.max_events {
            let next = match intake.rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if *self.phase.borrow() >= Phase::Draining {
                        break;
                    }
                    // Shutting down: commit what we have rather than wait for more.
                    tokio::select! {
                        got = tokio::time::timeout_at(deadline, intake.rx.recv()) => match got {
                            Ok(Some(job)) => job,
                            _ => break,
                        },
                        _ = self.phase.wait_for(|p| *p >= Phase::Draining) => break,
                    }
                }
            };
            if size + next.events.len() > self.config.max_events {
                intake.carry = Some(next);
                break;
            }
            size += next.events.len();
            jobs.push(next);
        }
        Some(jobs)
    }

    async fn commit(&self, mut jobs: Vec<Job>) {
        let mut events: Vec<NewEvent> = Vec::with_capacity(jobs.iter().map(|j| j.events.len()).sum());
        let sizes: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
        for job in &mut jobs {
            events.append(&mut job.events);
        }
        let started = Instant::now();
        let results = self.write_isolating(&events).await;
        self.metrics.queued_events.add(-(events.len() as i64));
        self.metrics.write_seconds.observe(started.elapsed().as_secs_f64());
        let mut rest = results.into_iter();
        for (job, size) in jobs.into_iter().zip(sizes) {
            let mine: Reply = rest.by_ref().take(size).collect();
            let _ = job.reply.send(mine);
        }
    }

    /// Commit `events`, one outcome (or error) per event, in order. When the database
    /// refuses the values of a part, commit its halves separately, down to single
    /// events: k bad events among n cost about 2k·log2(n) extra commits, and only
    /// groups that hold a bad event pay them.
    async fn write_isolating(&self, events: &[NewEvent]) -> Vec<Result<Outcome, Arc<StoreError>>> {
        let mut results: Vec<Option<Result<Outcome, Arc<StoreError>>>> = vec![None; events.len()];
        // Ranges of `events` still to commit (a stack: the whole group first).
        let mut parts: Vec<std::ops::Range<usize>> = Vec::new();
        parts.push(0..events.len());
        while let Some(part) = parts.pop() {
            let slice = &events[part.clone()];
            match self.write_once(slice).await {
                Ok(outcomes) => {
                    self.metrics.record_commit(slice, &outcomes);
                    for (slot, outcome) in results[part].iter_mut().zip(outcomes) {
                        *slot = Some(Ok(outcome));
                    }
                }
                Err(e) => match e.rejected_rule() {
                    Some(rule) if part.len() == 1 => {
                        tracing::info!(rule, "the database refused one event's values; answered 422");
                        self.metrics.invalid.inc();
                        results[part.start] = Some(Ok(Outcome::Rejected(rule)));
                    }
                    Some(_) => {
                        let mid = part.start + part.len() / 2;
                        // Popped last-in first-out: the first half is committed first.
                        parts.push(mid..part.end);
                        parts.push(part.start..mid);
                    }
                    None => {
                        tracing::warn!(events = part.len(), "group commit failed: {e}");
                        self.metrics.db_errors.inc();
                        let e = Arc::new(e);
                        for slot in &mut results[part] {
                            *slot = Some(Err(e.clone()));
                        }
                    }
                },
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every part gets a result"))
            .collect()
    }

    /// One transaction for `events`, bounded by the database timeout.
    async fn write_once(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        match tokio::time::timeout(self.config.db_timeout, self.store.write_group(events)).await {
            Ok(Ok(outcomes)) if outcomes.len() == events.len() => Ok(outcomes),
            Ok(Ok(_)) => Err(StoreError::Other(
                "the store answered for the wrong number of events".into(),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Timeout(self.config.db_timeout)),
        }
    }
}
