//! The write path on its own, over a real SQLite store: the queue bound answers at
//! once, a request's events are never split across groups, and drain/close commit
//! everything queued.

use std::sync::Arc;
use std::time::Duration;

use hourofci_collector::event::{NewEvent, Table};
use hourofci_collector::group_commit::{GroupCommit, GroupConfig, SubmitError};
use hourofci_collector::metrics::Metrics;
use hourofci_collector::store::{Outcome, SqliteStore, Store};
use hourofci_collector::validate::{Admitted, Rules};
use uuid::Uuid;

fn event(answer: &str) -> Admitted {
    Rules::original()
        .admit(NewEvent {
            id: Some(Uuid::new_v4()),
            table: Table::Production,
            user_agent: "ua".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: answer.into(),
            client_time: None,
            learner_id: None,
        })
        .expect("keeps the original rules")
}

async fn store(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(Store::Sqlite(
        SqliteStore::open(&dir.path().join("g.db"), Duration::from_secs(5))
            .await
            .unwrap(),
    ))
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_drain_commits_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    // One writer that would wait a minute to fill a group: the queue stays full.
    let config = GroupConfig {
        max_events: 100,
        max_wait: Duration::from_secs(60),
        writers: 1,
        queue_capacity: 3,
        db_timeout: Duration::from_secs(120),
    };
    let (commit, writers) = GroupCommit::start(store(&dir).await, config, metrics.clone());
    let waiting = {
        let commit = commit.clone();
        tokio::spawn(async move { commit.submit(vec![event("a"), event("b"), event("c")]).await })
    };
    while metrics.queued_events.get() < 3 {
        tokio::task::yield_now().await;
    }
    let refused = commit.submit(vec![event("d")]).await;
    assert!(matches!(refused, Err(SubmitError::QueueFull)), "{refused:?}");
    assert_eq!(metrics.queue_full.get(), 1);

    commit.drain();
    let outcomes = waiting.await.unwrap().unwrap();
    assert_eq!(outcomes, vec![Outcome::Written; 3]);
    assert_eq!(
        metrics.group_commits.get(),
        1,
        "the three events of one request are one group"
    );
    commit.close();
    writers.join().await;
    assert!(matches!(
        commit.submit(vec![event("late")]).await,
        Err(SubmitError::ShuttingDown)
    ));
}

#[tokio::test]
async fn a_request_larger_than_a_group_is_committed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let config = GroupConfig {
        max_events: 4,
        max_wait: Duration::ZERO,
        writers: 2,
        queue_capacity: 100,
        db_timeout: Duration::from_secs(30),
    };
    let (commit, writers) = GroupCommit::start(store(&dir).await, config, metrics.clone());
    let big: Vec<Admitted> = (0..10).map(|i| event(&format!("e{i}"))).collect();
    let repeat = big[0].clone();
    let mut events = big;
    events.push(repeat);
    let outcomes = commit.submit(events).await.unwrap();
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Written).count(), 10);
    assert_eq!(outcomes[10], Outcome::Duplicate, "a repeated id inside one request");
    assert_eq!(metrics.group_commits.get(), 1);
    assert_eq!(metrics.group_events.get(), 11);
    commit.close();
    writers.join().await;
}
