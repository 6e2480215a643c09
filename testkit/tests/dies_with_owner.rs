//! A cluster dies with the process that started it, even when that process is killed
//! with SIGKILL and runs no clean-up code at all (the case of a test binary killed by a
//! CI timeout; a cluster kept in a `static` exits the same way, undropped).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number or string after `"key":` in a one-line JSON object without nesting.
fn field(json: &str, key: &str) -> String {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').unwrap()],
        None => &rest[..rest.find([',', '}']).unwrap()],
    };
    value.to_string()
}

/// Running (a zombie, not yet reaped by init, has released everything and counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn a_sigkilled_owner_takes_its_cluster_and_directory_with_it() {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_pgcluster"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start pgcluster");
    let mut first = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let postmaster: u32 = field(&first, "pid").parse().expect("postmaster pid");
    let dir = PathBuf::from(field(&first, "dir"));
    let port: u16 = field(&first, "port").parse().unwrap();
    assert!(
        running(postmaster) && dir.join("data").exists(),
        "the cluster is up: {first}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    owner.kill().unwrap(); // SIGKILL: no destructor, no atexit
    owner.wait().unwrap();

    // The watchdog stops the server first, then removes its directory.
    let deadline = Instant::now() + Duration::from_secs(90);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still exists 90 s after its owner was killed",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !running(postmaster),
        "the directory was removed while the postmaster {postmaster} still ran"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the cluster's port"
    );
}
