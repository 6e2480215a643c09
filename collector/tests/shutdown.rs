//! The real binary: SIGTERM while events wait in the group-commit queue. Every request
//! still gets its 201, every 201 has its row, and the process exits 0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{CollectorProc, UA};
use uuid::Uuid;

async fn queued(client: &reqwest::Client, base: &str) -> f64 {
    let Ok(res) = client.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    hourofci_collector::metrics::sample(&text, "hourofci_queued_events").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_commits_queued_events_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let base = format!("http://{addr}");
    let args = [
        "--sqlite-path",
        db.to_str().unwrap(),
        "--group-max-wait-ms",
        "3000",
        "--writers",
        "1",
    ]
    .map(String::from);
    let mut proc = CollectorProc::spawn(addr, &args, &dir.path().join("collector.log"), dir.path());
    tokio::task::block_in_place(|| proc.wait_serving(Duration::from_secs(60)));
    let client = reqwest::Client::new();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        let url = format!("{base}/{UA}/gateway/beginner/1A/answer-{i}");
        tasks.spawn(async move {
            client
                .post(url)
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut waiting = 0.0;
    for _ in 0..200 {
        waiting = queued(&client, &base).await;
        if waiting >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(waiting, 20.0, "the events are queued, not yet committed");

    proc.signal(libc::SIGTERM);
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap().expect("answered, not dropped"), 201);
    }
    let exit = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(60)));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit status {exit:?}; log:\n{}",
        proc.log_text()
    );

    let reader =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db).read_only(true))
            .await
            .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM loggingtable")
        .fetch_one(&reader)
        .await
        .unwrap();
    assert_eq!(n, 20);
}
