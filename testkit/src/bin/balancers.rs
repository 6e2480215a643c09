//! `balancers`: PgBouncer and HAProxy from examples/scale-out/ for test drivers written
//! in other languages (e2e/scale-out.test.mjs), as `pgcluster` is for PostgreSQL.
//!
//! Reads commands, one per line on stdin, and answers each with one JSON line
//! `{"ok":true,"result":..}` or `{"ok":false,"error":".."}`:
//!
//! | command | effect |
//! |---|---|
//! | `pgbouncer UPSTREAM_PORT USERLIST_FILE` | start PgBouncer (transaction pooling) in front of PostgreSQL on UPSTREAM_PORT; result: its port |
//! | `pgbouncer-restart` | SIGTERM PgBouncer (immediate) and start it again on the same port |
//! | `haproxy PORT PORT…` | start HAProxy in front of collectors on these ports; result: its port |
//!
//! End of stdin stops both and deletes their directories.

use std::io::{self, BufRead, Write};
use testkit::{HaProxy, PgBouncer};

fn example(file: &str) -> Result<String, String> {
    let path = format!("{}/../examples/scale-out/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
}

/// examples/scale-out/haproxy.cfg with its front port and one `server` line per collector.
fn haproxy_config(front: u16, collectors: &[u16]) -> Result<String, String> {
    let servers: String = collectors
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server collector{} 127.0.0.1:{p}\n", i + 1))
        .collect();
    Ok(example("haproxy.cfg")?
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"))
        .replace("    server collector2 127.0.0.1:4002\n", "")
        .replace("    server collector1 127.0.0.1:4001\n", &servers))
}

fn main() {
    let mut bouncer: Option<PgBouncer> = None;
    let mut haproxy: Option<HaProxy> = None;
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let result: Result<String, String> = match words.as_slice() {
            ["pgbouncer", upstream, userlist] => (|| {
                let upstream: u16 = upstream.parse().map_err(|_| "bad port".to_string())?;
                let users = std::fs::read_to_string(userlist).map_err(|e| format!("{userlist}: {e}"))?;
                let b = PgBouncer::start(&example("pgbouncer.ini")?, upstream, &users).map_err(|e| e.to_string())?;
                let port = b.port();
                bouncer = Some(b);
                Ok(port.to_string())
            })(),
            ["pgbouncer-restart"] => match bouncer.as_mut() {
                Some(b) => b.restart().map(|_| String::new()).map_err(|e| e.to_string()),
                None => Err("no PgBouncer started".into()),
            },
            ["haproxy", ports @ ..] if !ports.is_empty() => (|| {
                let ports: Vec<u16> = ports
                    .iter()
                    .map(|p| p.parse().map_err(|_| format!("bad port {p}")))
                    .collect::<Result<_, _>>()?;
                let front = testkit::free_port();
                let h = HaProxy::start(&haproxy_config(front, &ports)?, front).map_err(|e| e.to_string())?;
                haproxy = Some(h);
                Ok(front.to_string())
            })(),
            [] => continue,
            _ => Err(format!("unknown command {line:?}")),
        };
        let _ = match result {
            Ok(r) => writeln!(out, "{{\"ok\":true,\"result\":{}}}", serde_like(&r)),
            Err(e) => writeln!(out, "{{\"ok\":false,\"error\":{}}}", serde_like(&e)),
        };
        let _ = out.flush();
    }
    drop(haproxy);
    drop(bouncer);
}

/// A JSON string literal.
fn serde_like(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
