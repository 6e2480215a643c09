//! `hourofci-collector migrate` as an operator runs it: the admin URL from a file, the
//! password never printed, a clear failure when the writer role is missing.

mod common;

use common::*;

fn run_migrate(url_file: &std::path::Path, role: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
        .args(["migrate", "--writer-role", role, "--database-url-file"])
        .arg(url_file)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "debug")
        .output()
        .expect("run hourofci-collector migrate")
}

#[tokio::test]
async fn migrate_reads_the_url_from_a_file_and_never_prints_the_password() {
    let (name, admin_url) = PG.fresh_database("cli");
    let role = format!("{name}_writer");
    PG.create_login_role(&role, WRITER_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("admin-url");
    std::fs::write(&url_file, format!("{admin_url}\n")).unwrap();
    let admin_password = name.as_str(); // testkit: the admin's password is the database name

    let out = run_migrate(&url_file, &role);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{name}_admin:***@")), "the URL is logged redacted: {log}");
    assert!(!log.contains(&format!(":{admin_password}@")), "password leaked: {log}");
    // The writer can now log through the collector's path.
    let writer = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&PG.url_for(&role, WRITER_PASSWORD, &name)).await.unwrap();
    let written: bool = sqlx::query_scalar("SELECT log_event(false, gen_random_uuid(), NULL, 'u', 'gateway', 'beginner', '1A', 'a')")
        .fetch_one(&writer)
        .await
        .unwrap();
    assert!(written);

    let out = run_migrate(&url_file, "missing_role");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("does not exist") && log.contains("CREATE ROLE missing_role"), "{log}");
    assert!(!log.contains(&format!(":{admin_password}@")), "password leaked: {log}");
}
