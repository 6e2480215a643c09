//! `hourofci-collector insights|export|forget|prune` hand over to the `hourofci-insights`
//! binary (the public write service does not link the read side): found beside the
//! collector, else on PATH; it gets the same arguments, standard output and error, and
//! its exit status is the collector's; a clear error when it is missing. Everything here
//! runs the built collector binary, and the last test the real `hourofci-insights`
//! (built by `cargo test --workspace`) on a real SQLite file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hourofci_collector::event::{NewEvent, Table};
use hourofci_collector::store::{Outcome, SqliteStore};
use uuid::Uuid;

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `exe ARGS` with `PATH` set to `path` (at most a minute).
async fn run(exe: &Path, args: &[&str], path: &Path) -> Run {
    let child = tokio::process::Command::new(exe)
        .args(args)
        .env("PATH", path)
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("done within a minute")
        .expect("spawn");
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn collector() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hourofci-collector"))
}

/// A directory holding the collector binary (a hard link: same file system as the
/// target directory) and nothing else.
fn lone_collector() -> (tempfile::TempDir, PathBuf) {
    let bin = collector();
    let dir = tempfile::Builder::new()
        .prefix("read-side-")
        .tempdir_in(bin.parent().unwrap())
        .unwrap();
    let exe = dir.path().join("hourofci-collector");
    std::fs::hard_link(&bin, &exe)
        .or_else(|_| std::fs::copy(&bin, &exe).map(|_| ()))
        .unwrap();
    (dir, exe)
}

/// A stand-in `hourofci-insights` in `dir` that prints its label and arguments, writes
/// to standard error and exits 7.
fn stand_in(dir: &Path, label: &str) {
    let script = dir.join("hourofci-insights");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '{label}'\nprintf ' [%s]' \"$@\"\necho\necho 'from stderr' >&2\nexit 7\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn help_lists_the_read_side_subcommands() {
    let empty = tempfile::tempdir().unwrap();
    let help = run(&collector(), &["--help"], empty.path()).await;
    assert_eq!(help.status, Some(0), "{}", help.stderr);
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for (name, runs) in [
        ("insights", "serve"),
        ("export", "export"),
        ("forget", "forget"),
        ("prune", "prune"),
    ] {
        let listed = help
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{name} ")));
        assert!(
            listed && text.contains(&format!("runs `hourofci-insights {runs} ARGS`")),
            "{name}: {}",
            help.stdout
        );
    }
}

#[tokio::test]
async fn the_insights_binary_is_found_beside_then_on_path_and_gets_the_arguments_stdio_and_exit_status() {
    let (lone, exe) = lone_collector();
    let path_dir = tempfile::tempdir().unwrap();

    // Neither beside nor on PATH: a clear error, nothing run.
    let missing = run(&exe, &["export", "--format", "csv"], path_dir.path()).await;
    assert_eq!(missing.status, Some(1));
    assert_eq!(missing.stdout, "");
    assert!(
        missing
            .stderr
            .contains("`hourofci-collector export` runs the hourofci-insights binary, found neither at")
            && missing
                .stderr
                .contains(&lone.path().join("hourofci-insights").display().to_string()),
        "{}",
        missing.stderr
    );

    // On PATH: run with the same arguments (`insights` is its `serve`), --help included.
    stand_in(path_dir.path(), "on-path");
    let insights = run(&exe, &["insights", "--bind", "127.0.0.1:0", "--help"], path_dir.path()).await;
    assert_eq!(insights.status, Some(7), "its exit status is the collector's");
    assert_eq!(insights.stdout, "on-path [serve] [--bind] [127.0.0.1:0] [--help]\n");
    assert_eq!(insights.stderr, "from stderr\n");
    for name in ["export", "forget", "prune"] {
        let r = run(&exe, &[name, "--dry-run", "a b"], path_dir.path()).await;
        assert_eq!(
            (r.status, r.stdout.as_str()),
            (Some(7), format!("on-path [{name}] [--dry-run] [a b]\n").as_str())
        );
    }

    // Beside the collector: preferred to PATH.
    stand_in(lone.path(), "beside");
    let prune = run(&exe, &["prune", "--table", "test"], path_dir.path()).await;
    assert_eq!(
        (prune.status, prune.stdout.as_str()),
        (Some(7), "beside [prune] [--table] [test]\n")
    );
}

#[tokio::test]
async fn export_through_the_collector_runs_the_real_insights_binary_on_a_sqlite_file() {
    let insights = collector().with_file_name("hourofci-insights");
    if !insights.is_file() {
        let why = format!(
            "{} is missing: `cargo test --workspace` (or `cargo build -p hourofci-insights`) builds it",
            insights.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let no_path = tempfile::tempdir().unwrap();
    let help = run(&collector(), &["export", "--help"], no_path.path()).await;
    assert_eq!(help.status, Some(0), "{}", help.stderr);
    assert!(
        help.stdout.contains("--format") && help.stdout.contains("--output"),
        "{}",
        help.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answers.db");
    let answers = [
        "plain",
        "comma, \"quotes\"\nand a newline",
        "emoji 😀 and \u{202e}rtl",
        "<script>alert(1)</script>",
    ];
    let events: Vec<NewEvent> = answers
        .iter()
        .map(|answer| NewEvent {
            id: Some(Uuid::new_v4()),
            table: Table::Production,
            user_agent: "3b5d5c3712955042212316173ccf37be".into(),
            lesson: "gateway".into(),
            level: "beginner".into(),
            question: "1A".into(),
            answer: answer.to_string(),
            client_time: None,
            learner_id: Some(Uuid::new_v4()),
        })
        .collect();
    let store = SqliteStore::open(&file, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        store.write_group(&events).await.unwrap(),
        vec![Outcome::Written; events.len()]
    );
    store.pool().close().await;

    let export = run(
        &collector(),
        &["export", "--database-url", file.to_str().unwrap(), "--format", "jsonl"],
        no_path.path(),
    )
    .await;
    assert_eq!(export.status, Some(0), "{}", export.stderr);
    let rows: Vec<serde_json::Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["event_id"].as_str().unwrap(), r["answer"].as_str().unwrap()))
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.id.unwrap().to_string()).collect();
    let want: Vec<(&str, &str)> = ids.iter().map(String::as_str).zip(answers).collect();
    assert_eq!(got, want, "every row, in id order, byte for byte");

    // A failure of the insights binary is the collector's failure.
    let bad = run(
        &collector(),
        &["export", "--database-url", file.to_str().unwrap(), "--format", "xml"],
        no_path.path(),
    )
    .await;
    assert_eq!(bad.status, Some(2), "clap's usage error status: {}", bad.stderr);
    assert_eq!(bad.stdout, "");
}
