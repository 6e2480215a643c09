//! `cargo xtask`: the project's build, demo, test, bench and fuzz orchestration.
//!
//! Each subcommand does its own set-up on a fresh machine (Debian packages, the
//! wasm target, wasm-bindgen-cli, npm packages), so the README's two commands,
//! `cargo xtask demo` and `cargo xtask test`, work on a clean clone.

mod bench;
mod demo;
mod fuzz;
mod leaks;
mod prereqs;
mod scaleout;
mod sdk;
mod test;
mod util;
mod wheel;

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  demo        build the SDK, start the collector on its embedded SQLite store with
              --sdk-dir, serve the animation example, print the URL to open
  test        install what the tests need, then run every test (Rust, browser, e2e, Jupyter)
  build-sdk   build the browser SDK into js/dist and print its gzipped download size
  wheel       build the SDK, then the lesson kit's Python wheel (hourofci-lesson) with it inside
  bench       throughput/latency benchmark against a durable PostgreSQL (writes docs/BENCHMARKS.md)
  fuzz        run the cargo-fuzz targets (--seconds N each)
  scale-out   PostgreSQL, PgBouncer, two collectors and HAProxy on loopback ports
              (examples/scale-out/, docs/SCALING.md); prints the URL

Run `cargo xtask <command> --help` for a command's options.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("--help", &[][..]),
    };
    let result = match cmd {
        "demo" => demo::run(rest),
        "test" => test::run(rest),
        "build-sdk" => sdk::run(rest),
        "wheel" => wheel::run(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "scale-out" => scaleout::run(rest),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            eprint!("unknown command `{other}`\n\n{HELP}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask {cmd}: error: {e:#}");
        std::process::exit(1);
    }
}
