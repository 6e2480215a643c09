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
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("{name}_admin:***@")),
        "the URL is logged redacted: {log}"
    );
    assert!(!log.contains(&format!(":{admin_password}@")), "password leaked: {log}");
    // The writer can now log through the collector's path.
    let writer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&PG.url_for(&role, WRITER_PASSWORD, &name))
        .await
        .unwrap();
    let written: bool =
        sqlx::query_scalar("SELECT log_event(false, gen_random_uuid(), NULL, 'u', 'gateway', 'beginner', '1A', 'a')")
            .fetch_one(&writer)
            .await
            .unwrap();
    assert!(written);

    let out = run_migrate(&url_file, "missing_role");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains("does not exist") && log.contains("CREATE ROLE missing_role"),
        "{log}"
    );
    assert!(!log.contains(&format!(":{admin_password}@")), "password leaked: {log}");
}

/// The admin's password, with the characters that break naive redaction.
const TRICKY_PASSWORD: &str = "Zq9/Wx7@Vb5:Kp3";

fn leaked(output: &str) -> Vec<&'static str> {
    ["Zq9", "Wx7", "Vb5", "Kp3", "WrongPw123", "KeyPw456"]
        .into_iter()
        .filter(|p| output.contains(p))
        .collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn migrate_never_prints_the_password_whatever_the_url_form() {
    let (name, _) = PG.fresh_database("red");
    let admin = format!("{name}_admin");
    PG.psql("postgres", &format!("ALTER ROLE {admin} PASSWORD '{TRICKY_PASSWORD}'"));
    let role = format!("{name}_writer");
    PG.create_login_role(&role, WRITER_PASSWORD);
    // As every database has it unless someone revoked it: migrate takes it and says so.
    PG.psql(&name, &format!("GRANT TEMPORARY ON DATABASE {name} TO PUBLIC"));
    let encoded = "Zq9%2FWx7%40Vb5%3AKp3";
    let host = format!("127.0.0.1:{}", PG.port());
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("admin-url");
    let run = |url: &str| {
        std::fs::write(&url_file, format!("{url}\n")).unwrap();
        run_migrate(&url_file, &role)
    };

    // The password as a query parameter (plus a secret parameter sqlx would echo): works, shown as ***.
    let out = run(&format!(
        "postgres://{admin}@{host}/{name}?password={encoded}&sslpassword=KeyPw456"
    ));
    let log = output_text(&out);
    assert!(out.status.success(), "{log}");
    assert!(leaked(&log).is_empty(), "leaked {:?}: {log}", leaked(&log));
    assert!(log.contains("password=***"), "{log}");
    assert!(
        log.contains(&format!("revoked TEMPORARY on database {name} from PUBLIC")),
        "{log}"
    );

    // Properly encoded in the user info: works.
    let out = run(&format!("postgres://{admin}:{encoded}@{host}/{name}"));
    let log = output_text(&out);
    assert!(out.status.success(), "{log}");
    assert!(leaked(&log).is_empty(), "leaked {:?}: {log}", leaked(&log));

    // Unencoded / and @ in the password: the URL cannot be read; nothing of it is printed.
    let out = run(&format!("postgres://{admin}:{TRICKY_PASSWORD}@{host}/{name}"));
    let log = output_text(&out);
    assert!(!out.status.success());
    assert!(leaked(&log).is_empty(), "leaked {:?}: {log}", leaked(&log));
    assert!(
        log.contains("not valid") && log.contains("%2F"),
        "says what to do: {log}"
    );

    // A wrong password as a parameter: the authentication error, without it.
    let out = run(&format!("postgres://{admin}@{host}/{name}?password=WrongPw123"));
    let log = output_text(&out);
    assert!(!out.status.success());
    assert!(leaked(&log).is_empty(), "leaked {:?}: {log}", leaked(&log));
    assert!(log.contains("password=***"), "{log}");
}

#[test]
fn serve_never_prints_the_password_of_a_url_it_cannot_read() {
    for url in [
        format!("postgres://writer:{TRICKY_PASSWORD}@127.0.0.1:1/db"),
        "postgres://writer:Zq9/123@127.0.0.1:1/db".to_string(),
        format!("host=127.0.0.1 user=writer password={TRICKY_PASSWORD}"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hourofci-collector"))
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url])
            .env("RUST_LOG", "debug")
            .output()
            .expect("run hourofci-collector serve");
        let log = output_text(&out);
        assert!(!out.status.success(), "{url}: {log}");
        assert!(leaked(&log).is_empty(), "{url} leaked {:?}: {log}", leaked(&log));
        assert!(log.contains("not valid") || log.contains("not shown"), "{url}: {log}");
    }
}
