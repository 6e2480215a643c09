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
use axum::http::{header, HeaderValue};
use std::path::PathBuf;
use std::process::Command;
use tower_http::{services::ServeDir, set_header::SetResponseHeaderLayer};

/// Run the product locally: SDK, collector on embedded SQLite, the animation example
///
/// Builds the browser SDK into examples/animation/sdk/ (the page loads it from its own
/// folder), starts `hourofci-collector serve` on 127.0.0.1:PORT with its embedded SQLite
/// store ./hourofci-log.db, serves examples/ on 127.0.0.1:PAGE-PORT, and prints the page to
/// open. Answers given on that page become rows in hourofci-log.db. The page sends only to
/// the collectors listed in its hourofci-endpoints and Content-Security-Policy
/// (http://127.0.0.1:4000 among them). Ctrl-C stops both.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Collector port (the original service's port)
    #[arg(long, value_name = "N", default_value_t = 4000)]
    port: u16,
    /// Port for the example pages
    #[arg(long, value_name = "N", default_value_t = 8000)]
    page_port: u16,
    /// Use the SDK and collector already built
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        port,
        page_port,
        no_build,
    } = args;
    let root = root();
    if !no_build {
        util::run(
            Command::new(std::env::current_exe()?)
                .args(["build-sdk", "--out", "examples/animation/sdk"])
                .current_dir(&root),
        )?;
        util::run(cargo().args(["build", "--release", "-p", "hourofci-collector"]))?;
    }
    if !root.join("examples/animation/sdk/hourofci-log.js").exists() {
        bail!("examples/animation/sdk/ has no SDK: run without --no-build");
    }
    let collector = cargo_target_dir().join("release/hourofci-collector");
    if !collector.exists() {
        bail!("{} is not built: run without --no-build", collector.display());
    }

    let pages = std::net::TcpListener::bind(("127.0.0.1", page_port))
        .with_context(|| format!("port {page_port} is busy: pass --page-port"))?;
    let examples = root.join("examples");
    std::thread::spawn(move || {
        if let Err(e) = serve_pages(pages, examples) {
            eprintln!("xtask demo: the page server stopped: {e:#}");
        }
    });

    let page_origin = format!("http://127.0.0.1:{page_port}");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(&collector)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--allow-origin", &page_origin])
        .current_dir(&root)
        .env_remove("DATABASE_URL")
        .spawn()
        .with_context(|| format!("starting {}", collector.display()))?;

    let allowed =
        std::fs::read_to_string(root.join("examples/animation/index.html"))?.contains(&format!(" {endpoint}\""));
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

/// The example pages as any static web server would serve them (GET and HEAD, content
/// types from the file extension, nothing outside `dir`), never cached, so a rebuilt SDK
/// shows on reload.
fn pages(dir: PathBuf) -> axum::Router {
    axum::Router::new()
        .fallback_service(ServeDir::new(dir))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
}

/// Serves [`pages`] on `listener` until the process ends.
fn serve_pages(listener: std::net::TcpListener, dir: PathBuf) -> Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async { axum::serve(tokio::net::TcpListener::from_std(listener)?, pages(dir)).await })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request on a fresh connection; the whole answer as text.
    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
            .await
            .expect("the page server answered")
    }

    fn has_header(answer: &str, name: &str, value: &str) -> bool {
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        head.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
        })
    }

    #[tokio::test]
    async fn pages_are_served_with_browser_content_types_and_nothing_outside_the_folder() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::write(parent.path().join("secret.txt"), "outside").unwrap();
        let site = parent.path().join("examples");
        std::fs::create_dir_all(site.join("animation/sdk")).unwrap();
        std::fs::write(site.join("animation/index.html"), "<!doctype html>page").unwrap();
        std::fs::write(site.join("animation/sdk/hourofci-log.js"), "export {};").unwrap();
        std::fs::write(site.join("animation/sdk/hourofci_sdk_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve_pages(listener, site));

        // Module scripts and WebAssembly.instantiateStreaming need these exact types.
        let js = request(addr, "GET", "/animation/sdk/hourofci-log.js").await;
        assert!(js.starts_with("HTTP/1.1 200") && js.ends_with("export {};"), "{js}");
        assert!(has_header(&js, "content-type", "text/javascript"), "{js}");
        assert!(has_header(&js, "cache-control", "no-cache"), "{js}");
        let wasm = request(addr, "GET", "/animation/sdk/hourofci_sdk_bg.wasm?v=2").await;
        assert!(
            wasm.starts_with("HTTP/1.1 200") && has_header(&wasm, "content-type", "application/wasm"),
            "{wasm}"
        );
        let page = request(addr, "GET", "/animation/").await;
        assert!(page.starts_with("HTTP/1.1 200") && page.ends_with("page"), "{page}");
        assert!(has_header(&page, "content-type", "text/html"), "{page}");
        let head = request(addr, "HEAD", "/animation/index.html").await;
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");

        for path in [
            "/nope.txt",
            "/../secret.txt",
            "/animation/../../secret.txt",
            "/%2e%2e/secret.txt",
        ] {
            let answer = request(addr, "GET", path).await;
            assert!(
                !answer.starts_with("HTTP/1.1 2") && !answer.contains("outside"),
                "{path}: {answer}"
            );
        }
        let post = request(addr, "POST", "/animation/index.html").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}
