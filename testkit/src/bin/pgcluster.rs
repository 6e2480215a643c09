//! `pgcluster`: a throwaway PostgreSQL cluster for test drivers written in other
//! languages (the node end-to-end tests, the benchmark).
//!
//! Starts a cluster and prints one JSON line
//! `{"port":..,"superuser_url":"..","bin_dir":"..","pid":..,"dir":".."}` (pid: the postmaster).
//! Then reads commands, one per line on stdin, and answers each with one JSON line
//! `{"ok":true,"result":..}` or `{"ok":false,"error":".."}`:
//!
//! | command | effect |
//! |---|---|
//! | `db NAME` | create database NAME owned by role NAME_admin; result: the admin URL |
//! | `role NAME PASSWORD` | create a login role |
//! | `psql DB SQL…` | run SQL as the superuser; result: psql's unaligned output |
//! | `stop` / `start` / `restart` | stop or start the server (same port, same data) |
//!
//! End of stdin stops the server and deletes the cluster; so does this process's death
//! by any cause, SIGKILL included (testkit's watchdog).
//! Flags: `--durable` (fsync and synchronous_commit on, for benchmarks), `--port N`.

use std::io::{self, BufRead, Write};
use testkit::{PgCluster, PgOptions};

fn main() {
    let mut opts = PgOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--durable" => opts.durable = true,
            "--port" => opts.port = args.next().and_then(|p| p.parse().ok()),
            "--max-connections" => opts.max_connections = args.next().and_then(|p| p.parse().ok()).unwrap_or(200),
            "-h" | "--help" => {
                println!("usage: pgcluster [--durable] [--port N] [--max-connections N]  (commands on stdin; see source docs)");
                return;
            }
            other => {
                eprintln!("pgcluster: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let mut pg = match PgCluster::start_with(opts) {
        Ok(pg) => pg,
        Err(e) => {
            println!("{{\"ok\":false,\"error\":{}}}", json_str(&e.to_string()));
            std::process::exit(1);
        }
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"port\":{},\"superuser_url\":{},\"bin_dir\":{},\"pid\":{},\"dir\":{}}}",
        pg.port(),
        json_str(&pg.superuser_url("postgres")),
        json_str(&pg.bin_dir().display().to_string()),
        pg.pid().unwrap_or(0),
        json_str(&pg.dir().display().to_string())
    );
    let _ = out.flush();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.splitn(3, ' ');
        let cmd = words.next().unwrap_or("");
        let a = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("");
        let result: Result<String, String> = match cmd {
            "db" => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pg.create_database(a)))
                .map_err(|_| format!("could not create database {a}")),
            "role" => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pg.create_login_role(a, rest)))
                .map(|_| String::new())
                .map_err(|_| format!("could not create role {a}")),
            "psql" => pg.try_psql(a, rest).map_err(|e| e.to_string()),
            "stop" => pg.stop_server().map(|_| String::new()).map_err(|e| e.to_string()),
            "start" => pg.start_server().map(|_| String::new()).map_err(|e| e.to_string()),
            "restart" => pg.restart_server().map(|_| String::new()).map_err(|e| e.to_string()),
            "" => continue,
            other => Err(format!("unknown command {other}")),
        };
        let _ = match result {
            Ok(r) => writeln!(out, "{{\"ok\":true,\"result\":{}}}", json_str(&r)),
            Err(e) => writeln!(out, "{{\"ok\":false,\"error\":{}}}", json_str(&e)),
        };
        let _ = out.flush();
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
