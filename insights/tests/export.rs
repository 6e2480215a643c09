//! `hourofci-insights export` from PostgreSQL (as the reader role) and from SQLite:
//! awkward answers come back byte for byte through Python's `csv` module and
//! `pandas.read_csv`, and through JSON lines; filters select exactly the rows they name;
//! the writer's URL cannot export (the writer cannot read).

mod common;

use common::*;
use hourofci_collector::event::{NewEvent, Table};
use uuid::Uuid;

/// Learner input that breaks naive CSV, HTML or spreadsheets.
fn awkward_answers() -> Vec<String> {
    let mut answers: Vec<String> = [
        "plain",
        "comma, inside",
        "quote \" inside \"\"twice\"\"",
        "line1\nline2",
        "crlf\r\nline",
        "lone\rcarriage return",
        "  leading and trailing  ",
        "emoji 😀 👩‍💻 and 中文",
        "\u{202E}right-to-left override\u{202C} and \u{200F}mark",
        "<script>alert('x')</script>",
        "",
        "NA",
        "null",
        "=1+1",
        "tab\tinside",
        "\u{FEFF}byte order mark first",
        "back\\slash; semi;colon",
        "\"",
        ",",
        "\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut big = String::new();
    while big.len() < 16 * 1024 {
        big.push_str("a, \"b\"\r\nç😀\n");
    }
    answers.push(big);
    answers
}

/// The rows written: answers in order, every other with a learner id.
fn events(table: Table) -> (Vec<NewEvent>, Vec<Option<Uuid>>) {
    let answers = awkward_answers();
    let learners: Vec<Option<Uuid>> = (0..answers.len()).map(|i| (i % 2 == 0).then(Uuid::new_v4)).collect();
    let events = answers
        .iter()
        .zip(&learners)
        .map(|(a, l)| event(table, "ua-md5", "1A", a, *l))
        .collect();
    (events, learners)
}

const READ_BACK: &str = r#"
import csv, json, sys
import pandas as pd
path = sys.argv[1]
with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding='utf-8')
frame = [list(df.columns)] + df.values.tolist()
print(json.dumps({"csv": rows, "pandas": frame}))
"#;

/// A Python 3 that has pandas: `$HOURCI_PYTHON`, `python3` on the PATH, or Debian's
/// `/usr/bin/python3` (package python3-pandas). None is a failure, never a skip.
async fn python_with_pandas() -> String {
    let candidates = std::env::var("HOURCI_PYTHON")
        .into_iter()
        .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
    for python in candidates {
        let probe = tokio::process::Command::new(&python)
            .args(["-c", "import pandas"])
            .kill_on_drop(true)
            .output();
        if let Ok(Ok(out)) = tokio::time::timeout(std::time::Duration::from_secs(60), probe).await {
            if out.status.success() {
                return python;
            }
        }
    }
    panic!("a Python 3 with pandas is required: apt-get install python3-pandas, or pip install pandas, or set HOURCI_PYTHON");
}

/// Read a CSV file with Python's csv module and pandas: (csv rows, pandas rows), header first.
async fn python_read(path: &std::path::Path) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let python = python_with_pandas().await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .arg("-c")
            .arg(READ_BACK)
            .arg(path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python within 2 minutes")
    .expect("run python");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |key: &str| -> Vec<Vec<String>> { serde_json::from_value(v[key].clone()).unwrap() };
    (rows("csv"), rows("pandas"))
}

/// Export all rows of `table` to a CSV file and check them cell by cell.
async fn assert_round_trip(target: &str, table: &str, events: &[NewEvent], learners: &[Option<Uuid>]) {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("answers.csv");
    let run = insights(&[
        "export",
        "--database-url",
        target,
        "--table",
        table,
        "--output",
        csv_path.to_str().unwrap(),
    ])
    .await;
    assert!(run.ok, "export failed: {}", run.stderr);
    assert!(
        run.stderr.contains(&format!("exported {} rows", events.len())),
        "{}",
        run.stderr
    );
    let bytes = std::fs::read(&csv_path).unwrap();
    assert!(bytes.starts_with(b"id,received_at,client_time,date_log,time_log,event_id,learner_id,user_agent,lesson,lesson_level,question,answer\r\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&csv_path).unwrap().permissions().mode() & 0o777,
        0o600,
        "an export holds answers"
    );

    let (csv_rows, pandas_rows) = python_read(&csv_path).await;
    for (reader, rows) in [("csv", csv_rows), ("pandas", pandas_rows)] {
        assert_eq!(rows.len(), events.len() + 1, "{reader}: header + one row per answer");
        assert_eq!(rows[0][11], "answer");
        let mut last_id = 0i64;
        for ((row, e), learner) in rows[1..].iter().zip(events).zip(learners) {
            assert_eq!(row.len(), 12, "{reader}: {row:?}");
            let id: i64 = row[0].parse().unwrap();
            assert!(id > last_id, "{reader}: id order");
            last_id = id;
            assert_eq!(row[11], e.answer, "{reader}: the answer survives byte for byte");
            assert_eq!(
                row[6],
                learner.map(|l| l.to_string()).unwrap_or_default(),
                "{reader}: learner id"
            );
            assert_eq!(row[5], e.id.unwrap().to_string(), "{reader}: event id");
            assert_eq!(row[2], "2026-11-28T07:31:02.123456Z", "{reader}: client time in UTC");
            assert_eq!(
                (row[7].as_str(), row[8].as_str(), row[9].as_str(), row[10].as_str()),
                ("ua-md5", "gateway", "beginner", e.question.as_str())
            );
        }
    }

    let run = insights(&[
        "export",
        "--database-url",
        target,
        "--table",
        table,
        "--format",
        "jsonl",
    ])
    .await;
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), events.len());
    for ((line, e), learner) in lines.iter().zip(events).zip(learners) {
        assert_eq!(line["answer"], e.answer.as_str());
        assert_eq!(
            line["learner_id"],
            learner.map_or(serde_json::Value::Null, |l| l.to_string().into())
        );
    }
}

#[tokio::test]
async fn postgres_export_round_trips_awkward_answers_as_the_reader() {
    let db = fresh_db().await;
    let (prod, prod_learners) = events(Table::Production);
    let (test, test_learners) = events(Table::Test);
    write_pg(&db, &prod).await;
    write_pg(&db, &test).await;
    assert_round_trip(&db.reader_url, "production", &prod, &prod_learners).await;
    assert_round_trip(&db.reader_url, "test", &test, &test_learners).await;

    let run = insights(&["export", "--database-url", &db.writer_url]).await;
    assert!(!run.ok, "the writer cannot read");
    assert!(run.stderr.contains("permission denied"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("writer-pw"),
        "no password in errors: {}",
        run.stderr
    );
}

#[tokio::test]
async fn sqlite_export_round_trips_awkward_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hourofci-log.db");
    let (prod, prod_learners) = events(Table::Production);
    let (test, test_learners) = events(Table::Test);
    write_sqlite(&path, &prod).await;
    write_sqlite(&path, &test).await;
    assert_round_trip(path.to_str().unwrap(), "production", &prod, &prod_learners).await;
    assert_round_trip(path.to_str().unwrap(), "test", &test, &test_learners).await;
}

/// Answers of one question, in export order, from a JSON lines export.
async fn exported_answers(target: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["export", "--database-url", target, "--format", "jsonl"];
    args.extend_from_slice(filters);
    let run = insights(&args).await;
    assert!(run.ok, "{args:?}: {}", run.stderr);
    run.stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["answer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn filters_select_exactly_what_they_name_in_both_stores() {
    let db = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("f.db");
    let mut rows = Vec::new();
    for i in 0..12 {
        let mut e = event(
            Table::Production,
            "ua",
            if i % 3 == 0 { "2B" } else { "1A" },
            &format!("a{i}"),
            None,
        );
        if i % 4 == 0 {
            e.lesson = "python".into();
        }
        rows.push(e);
    }
    write_pg(&db, &rows).await;
    write_sqlite(&sqlite, &rows).await;
    // Spread the received times over days: row i received on 2026-11-(10+i).
    sqlx::query("UPDATE loggingtable SET received_at = timestamptz '2026-11-10T12:00:00Z' + (substr(answer, 2)::int * interval '1 day')")
        .execute(&db.admin)
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", sqlite.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE loggingtable SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-10T12:00:00', '+' || substr(answer, 2) || ' days')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let expect = |keep: &dyn Fn(usize, &NewEvent) -> bool| -> Vec<String> {
        rows.iter()
            .enumerate()
            .filter(|(i, e)| keep(*i, e))
            .map(|(_, e)| e.answer.clone())
            .collect()
    };
    for target in [db.reader_url.clone(), sqlite.to_str().unwrap().to_string()] {
        assert_eq!(exported_answers(&target, &[]).await, expect(&|_, _| true));
        assert_eq!(
            exported_answers(&target, &["--question", "2B"]).await,
            expect(&|_, e| e.question == "2B")
        );
        assert_eq!(
            exported_answers(&target, &["--lesson", "gateway", "--question", "1A"]).await,
            expect(&|_, e| e.question == "1A" && e.lesson == "gateway")
        );
        assert_eq!(
            exported_answers(&target, &["--since", "2026-11-13", "--until", "2026-11-16T12:00:00Z"]).await,
            expect(&|i, _| (3..6).contains(&i)),
            "since is inclusive, until exclusive"
        );
        assert_eq!(
            exported_answers(&target, &["--table", "test"]).await,
            Vec::<String>::new()
        );
        assert_eq!(
            exported_answers(&target, &["--level", "advanced"]).await,
            Vec::<String>::new()
        );
    }
}
