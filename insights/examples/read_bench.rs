//! Read-side benchmark: 1,000,000 rows spread over the real lessons, levels and
//! questions and 30 days (70 % with a learner id from 20,000 learners), in a throwaway
//! PostgreSQL cluster and in a SQLite file; then the time to build the in-memory
//! overview and the process's resident memory after it (VmRSS), the overview and a
//! question page (whole time and a 10-day range; each checked to come from memory) over
//! real HTTP on loopback (p50/p95 of 20 requests each, after one warm-up) and an export
//! of every row to CSV (to a sink).
//!
//! `cargo run --release -p hourofci-insights --example read_bench [-- ROWS]`
//! Prints a Markdown table for docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use hourofci_insights::export::{export, Format};
use hourofci_insights::server::{router, AppState};
use hourofci_insights::source::{Filter, Source, Table};

const TOKEN: &str = "bench-token-0123456789abcdef";
const LESSONS: &[&str] = &[
    "gateway",
    "big-data",
    "computational-thinking",
    "cyberinfrastructure",
    "geospatial-data",
    "interdisciplinary-communication",
    "parallel-computation",
    "spatial-modeling-analytics",
    "spatial-thinking",
];
const LEVELS: &[&str] = &["gateway", "beginner", "advanced"];

fn fill_sql_pg(rows: u64) -> String {
    let lessons = LESSONS.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(",");
    let levels = LEVELS.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(",");
    format!(
        "INSERT INTO loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, received_at, learner_id)
         SELECT md5((g % 300)::text), d::date, d::time, (ARRAY[{lessons}])[1 + g % 9], (ARRAY[{levels}])[1 + (g / 9) % 3],
                (1 + (g / 27) % 9)::text || chr(65 + (g / 243) % 4),
                CASE WHEN g % 10 = 0 THEN 'free text answer ' || (g % 5000) ELSE 'answer ' || ((g::bigint * 7919) % 97 % (1 + g % 13)) END,
                gen_random_uuid(), d, d,
                CASE WHEN g % 10 < 7 THEN md5('learner' || (g % 20000))::uuid END
         FROM generate_series(1, {rows}) g, LATERAL (SELECT timestamptz '2026-11-01' + (g * (30 * 86400.0 / {rows})) * interval '1 second' AS d) t"
    )
}

fn fill_sql_sqlite(rows: u64) -> String {
    let lessons = LESSONS
        .iter()
        .enumerate()
        .map(|(i, l)| format!("WHEN {i} THEN '{l}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let levels = LEVELS
        .iter()
        .enumerate()
        .map(|(i, l)| format!("WHEN {i} THEN '{l}'"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
         INSERT INTO loggingtable (user_agent, date_log, time_log, lesson, lesson_level, question, answer, event_id, client_time, received_at, learner_id)
         SELECT 'ua' || (n % 300), '2026-11-01', '00:00:00', CASE n % 9 {lessons} END, CASE (n / 9) % 3 {levels} END,
                (1 + (n / 27) % 9) || char(65 + (n / 243) % 4),
                CASE WHEN n % 10 = 0 THEN 'free text answer ' || (n % 5000) ELSE 'answer ' || ((n * 7919) % 97 % (1 + n % 13)) END,
                lower(hex(randomblob(16))), NULL,
                strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-01', '+' || (n * 30 * 86400 / {rows}) || ' seconds'),
                CASE WHEN n % 10 < 7 THEN 'learner-' || (n % 20000) END
         FROM g"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Resident memory of this process (the insights service runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn time_route(url: &str, path: &str) -> (Duration, Duration) {
    let http = reqwest::Client::new();
    let get = || async {
        let start = Instant::now();
        let res = http
            .get(format!("{url}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        if path.starts_with("/?") || path == "/" {
            assert_eq!(res.headers()["x-overview-from"], "memory", "{path}: from memory");
        } else if path.starts_with("/question?") {
            assert_eq!(res.headers()["x-question-from"], "memory", "{path}: from memory");
        }
        res.bytes().await.unwrap();
        start.elapsed()
    };
    get().await;
    let mut times = Vec::new();
    for _ in 0..20 {
        times.push(get().await);
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.95))
}

async fn measure(name: &str, target: &str) {
    let source = Source::open_read(target, 4).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let rss_before = rss_mib();
    let start = Instant::now();
    let state = AppState::new(source.clone(), TOKEN).unwrap();
    assert!(
        state
            .overviews()
            .wait_until_ready(Table::Production, Duration::from_secs(600))
            .await,
        "overview built"
    );
    let build = start.elapsed();
    let rss_after = rss_mib();
    let app = router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (o50, o95) = time_route(&url, "/").await;
    let (r50, r95) = time_route(&url, "/?since=2026-11-10&until=2026-11-20").await;
    let (q50, q95) = time_route(&url, "/question?lesson=gateway&level=gateway&question=1A").await;
    let (qr50, qr95) = time_route(
        &url,
        "/question?lesson=gateway&level=gateway&question=1A&since=2026-11-10&until=2026-11-20",
    )
    .await;
    let (qs50, qs95) = time_route(&url, "/question?lesson=gateway&level=gateway&question=1A&q=free").await;
    let start = Instant::now();
    let n = export(&source, &Filter::default(), Format::Csv, std::io::sink(), false)
        .await
        .unwrap();
    let export_time = start.elapsed();
    server.abort();
    drop(state);
    println!(
        "| {name} | {:.1} s | {:.0} MiB (+{:.0}) | {:.1} / {:.1} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {n} rows in {:.1} s |",
        build.as_secs_f64(),
        rss_after,
        rss_after - rss_before,
        o50.as_secs_f64() * 1e3,
        o95.as_secs_f64() * 1e3,
        r50.as_secs_f64() * 1e3,
        r95.as_secs_f64() * 1e3,
        q50.as_secs_f64() * 1e3,
        q95.as_secs_f64() * 1e3,
        qr50.as_secs_f64() * 1e3,
        qr95.as_secs_f64() * 1e3,
        qs50.as_secs_f64() * 1e3,
        qs95.as_secs_f64() * 1e3,
        export_time.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx::query=error")
        .with_writer(std::io::stderr)
        .init();
    let rows: u64 = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1_000_000);
    let pg = testkit::PgCluster::start().expect("PostgreSQL");
    let (name, admin_url) = pg.fresh_database("readbench");
    let writer = format!("{name}_writer");
    let reader = format!("{name}_reader");
    pg.create_login_role(&writer, "w");
    pg.create_login_role(&reader, "r");
    hourofci_collector::migrate::run(&admin_url, &writer).await.unwrap();
    hourofci_collector::migrate::grant_reader(&admin_url, &reader, &writer)
        .await
        .unwrap();
    let start = Instant::now();
    pg.psql(&name, &fill_sql_pg(rows));
    pg.psql(&name, "VACUUM ANALYZE loggingtable");
    let indexes = pg.psql(
        &name,
        "SELECT string_agg(indexname, ', ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'loggingtable'",
    );
    eprintln!("PostgreSQL indexes on loggingtable: {}", indexes.trim());
    eprintln!("PostgreSQL: {rows} rows in {:.1} s", start.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.db");
    let store = hourofci_collector::store::SqliteStore::open(&file, Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    sqlx::query(&fill_sql_sqlite(rows)).execute(store.pool()).await.unwrap();
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    store.pool().close().await;
    eprintln!("SQLite: {rows} rows in {:.1} s", start.elapsed().as_secs_f64());

    println!(
        "| store ({rows} rows) | overview built in memory | RSS after the build (growth) | overview p50 / p95 (ms) \
         | overview, 10-day range p50 / p95 (ms) | question page p50 / p95 (ms) \
         | question page, 10-day range p50 / p95 (ms) | question page with a search (list by SQL) p50 / p95 (ms) | export to CSV |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    measure("PostgreSQL 15 (reader role)", &pg.url_for(&reader, "r", &name)).await;
    measure("SQLite", file.to_str().unwrap()).await;
}
