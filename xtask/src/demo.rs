//! `cargo xtask demo`: the whole product on one machine, with nothing set up beforehand.
//!
//! Builds the SDK into the animation's own folder (`examples/animation/sdk/`: pages load
//! the SDK from beside them, never from the collector), starts the collector on its
//! embedded SQLite store (the file `hourofci-log.db` at the workspace root), serves
//! `examples/` from a second port (a lesson page's origin differs from the collector's,
//! as in production), and prints the URL to open and the command that shows the rows.
//! Ctrl-C stops both.

use crate::test::cargo_target_dir;
use crate::util::{self, cargo, root};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

const HELP: &str = "\
cargo xtask demo [--port N] [--page-port N] [--no-build]

Builds the browser SDK into examples/animation/sdk/ (the page loads it from its own
folder), starts `hourofci-collector serve` on 127.0.0.1:PORT (default 4000) with its
embedded SQLite store ./hourofci-log.db, serves examples/ on 127.0.0.1:PAGE-PORT
(default 8000), and prints the page to open. Answers given on that page become rows
in hourofci-log.db. The page sends only to the collectors listed in its
hourofci-endpoints and Content-Security-Policy (http://127.0.0.1:4000 among them).

Options:
  --port N        collector port (default 4000, the original service's port)
  --page-port N   port for the example pages (default 8000)
  --no-build      use the SDK and collector already built
";

pub fn run(args: &[String]) -> Result<()> {
    let mut port = 4000u16;
    let mut page_port = 8000u16;
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = parse_port(it.next())?,
            "--page-port" => page_port = parse_port(it.next())?,
            "--no-build" => build = false,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown option `{other}`\n\n{HELP}"),
        }
    }
    let root = root();
    if build {
        util::run(Command::new(std::env::current_exe()?).args(["build-sdk", "--out", "examples/animation/sdk"]).current_dir(&root))?;
        util::run(cargo().args(["build", "--release", "-p", "hourofci-collector"]))?;
    }
    if !root.join("examples/animation/sdk/hourofci-log.js").exists() {
        bail!("examples/animation/sdk/ has no SDK: run without --no-build");
    }
    let collector = cargo_target_dir().join("release/hourofci-collector");
    if !collector.exists() {
        bail!("{} is not built: run without --no-build", collector.display());
    }

    let pages = TcpListener::bind(("127.0.0.1", page_port))
        .with_context(|| format!("port {page_port} is busy: pass --page-port"))?;
    let examples = root.join("examples");
    std::thread::spawn(move || serve_static(pages, examples));

    let page_origin = format!("http://127.0.0.1:{page_port}");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(&collector)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--allow-origin", &page_origin])
        .current_dir(&root)
        .env_remove("DATABASE_URL")
        .spawn()
        .with_context(|| format!("starting {}", collector.display()))?;

    let allowed = std::fs::read_to_string(root.join("examples/animation/index.html"))?.contains(&format!(" {endpoint}\""));
    if !allowed {
        eprintln!(
            "note: the animation only sends to the collectors in its hourofci-endpoints; add {endpoint} there \
             and to connect-src in examples/animation/index.html to use --port {port}"
        );
    }
    println!(
        "\n\
         hourofci-log demo\n\
         \n  collector:  {endpoint}   (embedded SQLite: {db})\n\
         \n  open:       {page_origin}/animation/index.html?endpoint={endpoint}\n\
         \n  rows:       sqlite3 {db} 'select id, user_agent, lesson, lesson_level, question, answer, client_time from loggingtable order by id'\n\
         \n  Ctrl-C stops the demo.\n",
        db = root.join("hourofci-log.db").display(),
    );
    // Ctrl-C reaches the collector too (same process group); it drains and exits 0.
    let status = child.wait()?;
    if !status.success() {
        bail!("the collector exited with {status}");
    }
    Ok(())
}

fn parse_port(v: Option<&String>) -> Result<u16> {
    v.and_then(|s| s.parse().ok()).context("a port number (1-65535) is needed")
}

/// A minimal static file server for the example pages (GET and HEAD only).
fn serve_static(listener: TcpListener, dir: PathBuf) {
    for stream in listener.incoming().flatten() {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let _ = answer(stream, &dir);
        });
    }
}

fn answer(mut stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let file = resolve(dir, path);
    let (status, body, mime) = match (method, file.and_then(|f| std::fs::read(&f).ok().map(|b| (b, f)))) {
        ("GET" | "HEAD", Some((body, f))) => ("200 OK", body, mime_type(&f)),
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec(), "text/plain"),
        _ => ("405 Method Not Allowed", b"GET only\n".to_vec(), "text/plain"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    Ok(())
}

/// Maps a URL path to a file under `dir`, refusing anything that climbs out of it.
fn resolve(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut p = dir.join(rel);
    if p.is_dir() {
        p = p.join("index.html");
    }
    p.is_file().then_some(p)
}

fn mime_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "ipynb" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_paths_outside_the_examples() {
        let dir = root().join("xtask");
        assert!(resolve(&dir, "/Cargo.toml").is_some());
        assert!(resolve(&dir, "/../Cargo.toml").is_none());
        assert!(resolve(&dir, "/src/../../Cargo.toml").is_none());
        assert!(resolve(&dir, "/nope.txt").is_none());
    }
}
