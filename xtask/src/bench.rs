//! `cargo xtask bench`: throughput and latency of the whole write path, side by side
//! with what the database itself can do, in one run on one machine (issue 5).
//!
//! 1. ceiling A: `pgbench`, one `log_event` call per transaction, 1–64 clients;
//! 2. ceiling B: `pgbench`, one 100-row `log_events_v5` call per transaction;
//! 3. the release collector under a load generator on loopback ([`load`]): single-event
//!    POSTs at 1/16/64/256 connections, `/batch` with 100 events, and a fixed rate at
//!    half the best single-event throughput (for p99 below saturation); peak RSS;
//! 4. the SDK in headless Chromium (`xtask/bench/sdk.mjs`): gzipped size, `logAnswer`
//!    to "queued" offline, and how long a 1000-event backlog takes to drain;
//! 5. scale-out ([`scale`]): the same load generator against 1 collector direct, 1
//!    collector through PgBouncer, and HAProxy → 2 collectors → PgBouncer, with the CPU
//!    each part spends per 1000 events.
//!
//! With `--baseline-collector PATH` ([`baseline`]), the collector is also measured
//! against another build of itself, side by side in the same run.
//!
//! PostgreSQL is a throwaway durable cluster (fsync and synchronous_commit on) started
//! by `testkit`. After every phase the rows in the database are compared with the
//! answers the load generator got; a mismatch fails the command (after the report).
//! Benchmarks only: nothing here is a timed test.

mod baseline;
mod load;
mod pgbench;
mod procstat;
mod report;
mod scale;

use crate::util;
use anyhow::{bail, Context, Result};
use load::{Kind, Pace, Plan};
use report::{HttpFigures, Machine, Results, RowCheck, SdkFigures};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{PgCluster, PgOptions};

/// Throughput/latency benchmark against a durable PostgreSQL (writes docs/BENCHMARKS.md)
///
/// Starts a durable throwaway PostgreSQL, migrates it with the release collector, and
/// measures pgbench's ceiling, the collector and the SDK in one run (a few minutes).
/// Prints a table and writes it to docs/BENCHMARKS.md.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// 2 s per step instead of 5 (rougher figures)
    #[arg(long)]
    quick: bool,
    /// Seconds per step (overrides --quick)
    #[arg(long, value_name = "N")]
    seconds: Option<u64>,
    /// Measure only these parts (comma-separated)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// Extra flag for `hourofci-collector serve` (repeatable), e.g. --collector-arg=--writers=2
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    collector_arg: Vec<String>,
    /// Also record `perf` system-wide during an extra 64-connection run; the report goes
    /// to target/bench/perf-*.txt
    #[arg(long)]
    profile: bool,
    /// Do not touch docs/BENCHMARKS.md
    #[arg(long)]
    no_write: bool,
    /// Also measure this other collector binary (say the previous release's) against
    /// this one, side by side in the same run, each on its own database migrated by
    /// itself: single POSTs at 64 and 256 connections and /batch at 16, alternating
    /// ABBA (with the collector part)
    #[arg(long, value_name = "PATH")]
    baseline_collector: Option<PathBuf>,
    /// Rounds per step of the --baseline-collector comparison (keep it even: each side then
    /// goes first equally often)
    #[arg(long, value_name = "N", default_value_t = 4)]
    rounds: usize,
}

/// What `--only` can pick.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Part {
    Pgbench,
    Collector,
    Sdk,
    ScaleOut,
}

const DATABASE: &str = "hourofci";
/// Migrated only to sql/0003, for the write ceiling's anchor (`log_events_v2`).
const ANCHOR_DATABASE: &str = "hourofci_anchor";
const WRITER_ROLE: &str = "hourofciuser";
/// Throwaway cluster only.
const WRITER_PASSWORD: &str = "bench-writer-password";
const BATCH_SIZE: usize = 100;
const PG_SINGLE_CLIENTS: [u32; 5] = [1, 4, 16, 32, 64];
const PG_BATCH_CLIENTS: [u32; 3] = [1, 4, 16];
const HTTP_SINGLE_CONNECTIONS: [usize; 4] = [1, 16, 64, 256];
const HTTP_BATCH_CONNECTIONS: [usize; 2] = [4, 16];
/// Open-loop run: as many connections as the largest closed-loop run, so the
/// generator's connection count never caps the rate (each learner is a connection).
const PACED_CONNECTIONS: usize = 256;
const SDK_CALLS: u64 = 1000;

struct Options {
    seconds: u64,
    pgbench: bool,
    collector: bool,
    sdk: bool,
    scale_out: bool,
    collector_args: Vec<String>,
    profile: bool,
    write: bool,
    baseline_collector: Option<PathBuf>,
    rounds: usize,
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        let part = |p| args.only.is_empty() || args.only.contains(&p);
        Options {
            seconds: args.seconds.unwrap_or(if args.quick { 2 } else { 5 }),
            pgbench: part(Part::Pgbench),
            collector: part(Part::Collector),
            sdk: part(Part::Sdk),
            scale_out: part(Part::ScaleOut),
            profile: args.profile,
            write: !args.no_write,
            collector_args: args.collector_arg,
            baseline_collector: args.baseline_collector,
            rounds: args.rounds.max(1),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let opts = Options::from(args);
    // As typed after `cargo xtask bench`: for the re-run below and the report's header.
    let args: Vec<String> = std::env::args().skip(2).collect();
    if cfg!(debug_assertions) {
        // `cargo xtask` is a debug build; a debug load generator would take CPU from
        // the collector on a 2-core machine. Run the same command from a release build.
        eprintln!("bench: re-running from a release build of xtask");
        return util::run(
            util::cargo()
                .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
                .args(&args),
        );
    }
    let root = util::root();
    let work_dir = root.join("target/bench");
    std::fs::create_dir_all(&work_dir)?;

    // Build everything before measuring anything, so compiling does not overlap.
    let collector_bin = root.join("target/release/hourofci-collector");
    // Every part needs it: `migrate` sets the database up (its own sql/, so never a stale
    // binary: cargo rebuilds what changed).
    util::run(util::cargo().args(["build", "--release", "-p", "hourofci-collector"]))?;
    if opts.scale_out {
        // HAProxy and PgBouncer (apt, when missing).
        crate::prereqs::system_packages()?;
    }
    let sdk_dist = work_dir.join("sdk-dist");
    let mut sdk_error = None;
    let mut sdk_ready = false;
    if opts.sdk {
        match build_sdk_copy(&sdk_dist) {
            Ok(()) => sdk_ready = true,
            Err(e) => sdk_error = Some(e),
        }
    }

    let mut results = Results {
        command: std::iter::once("cargo xtask bench".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        seconds_per_step: opts.seconds,
        collector_flags: opts.collector_args.clone(),
        ..Default::default()
    };
    results.machine = machine_now();

    let pg = PgCluster::start_with(PgOptions {
        durable: true,
        max_connections: 400,
        ..Default::default()
    })
    .context("starting a durable PostgreSQL cluster")?;
    results.machine.postgres_version = util::output(Command::new(pg.bin_dir().join("postgres")).arg("--version"))?;
    let admin_url = pg.create_database(DATABASE);
    pg.create_login_role(WRITER_ROLE, WRITER_PASSWORD);
    let writer_url = pg.url_for(WRITER_ROLE, WRITER_PASSWORD, DATABASE);
    util::run(Command::new(&collector_bin).args([
        "migrate",
        "--database-url",
        &admin_url,
        "--writer-role",
        WRITER_ROLE,
    ]))?;

    let step = Duration::from_secs(opts.seconds);
    if opts.pgbench {
        measure_pgbench(&pg, &work_dir, step, &mut results)?;
    }
    let mut baseline_table = None;
    if opts.collector || opts.sdk {
        let mut collector = Collector::start(
            &collector_bin,
            &writer_url,
            sdk_ready.then_some(sdk_dist.as_path()),
            &opts.collector_args,
            &work_dir.join("collector.log"),
        )?;
        let outcome = (|| -> Result<()> {
            if opts.collector {
                measure_collector(&pg, &collector, step, opts.profile, &work_dir, &mut results)?;
            }
            if let (true, Some(baseline_bin)) = (opts.collector, &opts.baseline_collector) {
                let setup = baseline::Setup {
                    pg: &pg,
                    current: &collector,
                    baseline_bin,
                    collector_args: &opts.collector_args,
                    work_dir: &work_dir,
                    step,
                    rounds: opts.rounds,
                    ceilings: (results.single_ceiling(), results.batch_ceiling()),
                };
                baseline_table = Some(baseline::compare(&setup, &mut results.row_checks)?);
            }
            if sdk_ready {
                match measure_sdk(&pg, &collector, &sdk_dist, &mut results.row_checks) {
                    Ok(figures) => results.sdk = Some(figures),
                    Err(e) => sdk_error = Some(e),
                }
            }
            results.peak_rss_kib = collector.peak_rss_kib();
            Ok(())
        })();
        collector.stop()?;
        outcome?;
    }
    if opts.scale_out {
        let setup = scale::Setup {
            pg: &pg,
            collector_bin: &collector_bin,
            writer_url: &writer_url,
            writer_password: WRITER_PASSWORD,
            collector_args: &opts.collector_args,
            work_dir: &work_dir,
            step,
        };
        scale::measure(&setup, &mut results)?;
    }
    results.machine.load_after = load_average();

    let table = results.markdown();
    println!("\n{table}");
    if let Some(compared) = &baseline_table {
        // Not written to docs/BENCHMARKS.md's generated block: quote it by hand.
        println!(
            "Against the baseline collector {:?}:\n\n{compared}",
            opts.baseline_collector.as_deref().unwrap_or(Path::new(""))
        );
    }
    if opts.write {
        let path = root.join("docs/BENCHMARKS.md");
        report::write_block(&path, &table)?;
        eprintln!("wrote {}", path.display());
    }
    let mismatches: Vec<String> = results
        .row_checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| format!("{}: expected {} rows, found {}", c.phase, c.expected, c.found))
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "ROWS IN THE DATABASE DO NOT MATCH THE 2xx ANSWERS:\n  {}",
            mismatches.join("\n  ")
        );
    }
    if let Some(e) = sdk_error {
        return Err(e.context("the SDK part failed (the other figures above were recorded)"));
    }
    Ok(())
}

fn measure_pgbench(pg: &PgCluster, work_dir: &Path, step: Duration, results: &mut Results) -> Result<()> {
    let single_script = work_dir.join("pgbench-log_event.sql");
    std::fs::write(&single_script, pgbench::SINGLE_SCRIPT)?;
    let batch_script = work_dir.join("pgbench-log_events.sql");
    std::fs::write(&batch_script, pgbench::batch_script(BATCH_SIZE))?;
    let target = pgbench::Target {
        bin_dir: pg.bin_dir(),
        port: pg.port(),
        database: DATABASE,
        user: WRITER_ROLE,
        password: WRITER_PASSWORD,
    };
    // The anchor of the write ceiling, same cluster, same run: the group-write function
    // before learner ids and read indexes (`log_events_v2`, sql/0001-0003), each of its
    // runs right after the `log_events_v5` run with as many clients, so both meet the
    // same machine and tables of about the same size.
    create_anchor_database(pg)?;
    let anchor_script = work_dir.join("pgbench-log_events_v2.sql");
    std::fs::write(&anchor_script, pgbench::anchor_batch_script(BATCH_SIZE))?;
    let anchor = pgbench::Target {
        database: ANCHOR_DATABASE,
        ..target
    };

    let runs = PG_SINGLE_CLIENTS
        .iter()
        .map(|&c| (c, &single_script, 1u64))
        .chain(PG_BATCH_CLIENTS.iter().map(|&c| (c, &batch_script, BATCH_SIZE as u64)));
    for (clients, script, rows) in runs {
        settle(pg)?;
        let before = count_rows(pg, "loggingtable")?;
        let run = pgbench::run(&target, script, rows, clients, step)?;
        let found = count_rows(pg, "loggingtable")? - before;
        eprintln!(
            "pgbench {} rows/tx, {clients:>2} clients: {:>8.0} tx/s {:>9.0} rows/s (avg {:.2} ms)",
            rows,
            run.tps,
            run.rows_per_sec(),
            run.latency_avg_ms
        );
        results.row_checks.push(RowCheck {
            phase: format!("pgbench {rows} rows/tx, {clients} clients"),
            expected: run.transactions * rows,
            found,
        });
        if rows == 1 {
            results.pg_single.push(run);
            continue;
        }
        results.pg_batch.push(run);
        if clients > 1 {
            settle(pg)?;
            let run = pgbench::run(&anchor, &anchor_script, BATCH_SIZE as u64, clients, step)?;
            eprintln!(
                "pgbench anchor log_events_v2, {clients:>2} clients: {:>9.0} rows/s",
                run.rows_per_sec()
            );
            results.pg_batch_anchor.push(run);
        }
    }
    Ok(())
}

fn measure_collector(
    pg: &PgCluster,
    collector: &Collector,
    step: Duration,
    profile: bool,
    work_dir: &Path,
    results: &mut Results,
) -> Result<()> {
    let addr = collector.addr;
    let ids = std::sync::Arc::new(load::IdSource::new());
    let mut http = |label: String,
                    kind: Kind,
                    connections: usize,
                    duration: Duration,
                    pace: Pace|
     -> Result<HttpFigures> {
        let plan = Plan {
            addr,
            kind,
            connections,
            duration,
            pace,
            ids: ids.clone(),
        };
        let (outcome, cpu) = measured_run(pg, DATABASE, collector, &plan, &label, &mut results.row_checks)?;
        let figures = HttpFigures {
            label,
            connections,
            events_per_sec: outcome.events_per_sec(),
            p50_ms: outcome.percentile_ms(0.5),
            p99_ms: outcome.percentile_ms(0.99),
            max_ms: outcome.max_ms(),
            errors: outcome.errors(),
            error_summary: outcome.error_summary(),
            peak_rss_kib: collector.peak_rss_kib(),
            cpu_ms_per_1000: (outcome.events_written > 0).then(|| {
                let per = 1000.0 / outcome.events_written as f64;
                [cpu.collector_ms * per, cpu.generator_ms * per, cpu.postgres_ms * per]
            }),
        };
        eprintln!(
            "{:<48} {:>8.0}/s  p50 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  errors {} {}  rss {:.1} MB  cpu ms/1000 ev {:.0?}",
            figures.label,
            figures.events_per_sec,
            figures.p50_ms,
            figures.p99_ms,
            figures.max_ms,
            figures.errors,
            figures.error_summary,
            figures.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
            figures.cpu_ms_per_1000.unwrap_or_default(),
        );
        Ok(figures)
    };

    http(
        "warm-up (not reported)".into(),
        Kind::Single,
        16,
        Duration::from_millis(500),
        Pace::ClosedLoop,
    )?;
    let mut single = Vec::new();
    for connections in HTTP_SINGLE_CONNECTIONS {
        let label = format!("collector single-event POST, {connections} connections");
        single.push(http(label, Kind::Single, connections, step, Pace::ClosedLoop)?);
    }
    let best = single.iter().map(|f| f.events_per_sec).fold(0.0, f64::max);
    let paced = if best > 0.0 {
        let rate = (best / 2.0).max(1.0);
        let label =
            format!("collector single-event POST at {rate:.0}/s (half of max), {PACED_CONNECTIONS} connections");
        Some((
            rate,
            http(
                label,
                Kind::Single,
                PACED_CONNECTIONS,
                step.max(Duration::from_secs(3)),
                Pace::Rate(rate),
            )?,
        ))
    } else {
        None
    };
    let mut batch = Vec::new();
    for connections in HTTP_BATCH_CONNECTIONS {
        let label = format!("collector /batch of {BATCH_SIZE}, {connections} connections");
        batch.push(http(
            label,
            Kind::Batch { size: BATCH_SIZE },
            connections,
            step,
            Pace::ClosedLoop,
        )?);
    }
    if profile {
        profile_run(&mut http, collector, step, work_dir)?;
    }
    results.http_single = single;
    results.http_batch = batch;
    results.http_paced = paced;
    Ok(())
}

/// `perf record -a -g` during an extra 64-connection run: where do the two cores go?
fn profile_run(
    http: &mut impl FnMut(String, Kind, usize, Duration, Pace) -> Result<HttpFigures>,
    collector: &Collector,
    step: Duration,
    work_dir: &Path,
) -> Result<()> {
    if !util::have("perf") {
        util::run(Command::new("apt-get").args(["install", "-y", "linux-perf"]))?;
    }
    let data = work_dir.join("perf.data");
    let mut perf = Command::new("perf")
        .args(["record", "-a", "-g", "-F", "499", "-o"])
        .arg(&data)
        .args(["--", "sleep", &step.as_secs().max(2).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf")?;
    http(
        "profiled run, 64 connections (not reported)".into(),
        Kind::Single,
        64,
        step,
        Pace::ClosedLoop,
    )?;
    perf.wait()?;
    let reports: [(&str, Vec<String>); 2] = [
        ("perf-by-process.txt", vec!["--sort".into(), "comm,dso".into()]),
        (
            "perf-collector-symbols.txt",
            vec![
                "--pid".into(),
                collector.pid().to_string(),
                "--sort".into(),
                "symbol".into(),
            ],
        ),
    ];
    for (name, extra) in reports {
        let text = util::output(
            Command::new("perf")
                .args(["report", "--stdio", "--no-children", "--percent-limit", "0.5", "-i"])
                .arg(&data)
                .args(&extra),
        )?;
        let path = work_dir.join(name);
        std::fs::write(&path, &text)?;
        eprintln!("--- {} (top) ---", path.display());
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && l.contains('%'))
            .take(25)
        {
            eprintln!("{}", line.trim_end().trim_end_matches(['-', ' ']));
        }
    }
    Ok(())
}

/// Build the SDK and copy `js/dist` to `dest`: other builds (tests, engineers) may
/// rewrite `js/dist` while the benchmark serves it. Retried when the copy is incomplete.
fn build_sdk_copy(dest: &Path) -> Result<()> {
    const FILES: [&str; 3] = ["hourofci-log.js", "hourofci_sdk.js", "hourofci_sdk_bg.wasm"];
    for attempt in 1..=3 {
        // A failed build (e.g. over the size budget) still leaves js/dist complete; its
        // timings are worth having, and the size is in the table anyway.
        let dist = crate::sdk::build(true).unwrap_or_else(|e| {
            eprintln!("bench: warning: `build-sdk` failed ({e:#}); measuring what it left in js/dist");
            util::root().join("js/dist")
        });
        let _ = std::fs::remove_dir_all(dest);
        std::fs::create_dir_all(dest)?;
        let copied = FILES.iter().all(|f| {
            std::fs::copy(dist.join(f), dest.join(f))
                .map(|n| n > 0)
                .unwrap_or(false)
        });
        if copied {
            return Ok(());
        }
        eprintln!("bench: js/dist changed under us (attempt {attempt}); building the SDK again");
    }
    bail!("could not get a complete SDK build out of js/dist (something else keeps rewriting it)")
}

fn measure_sdk(pg: &PgCluster, collector: &Collector, dist: &Path, checks: &mut Vec<RowCheck>) -> Result<SdkFigures> {
    let mut gzip_files = Vec::new();
    for entry in std::fs::read_dir(dist).with_context(|| format!("reading {}", dist.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        if name.ends_with(".js") || name.ends_with(".wasm") {
            gzip_files.push((name, crate::sdk::gzip_len(&std::fs::read(&path)?)? as u64));
        }
    }
    gzip_files.sort();
    if !gzip_files.iter().any(|(n, _)| n == "hourofci-log.js") {
        bail!(
            "{} has no hourofci-log.js: did `cargo xtask build-sdk` run?",
            dist.display()
        );
    }
    let script = util::root().join("xtask/bench/sdk.mjs");
    let before = count_rows(pg, "loggingtable_test")?;
    let out = util::output(
        Command::new("node")
            .arg(&script)
            .arg(format!("http://{}", collector.addr))
            .arg(SDK_CALLS.to_string())
            .current_dir(util::root()),
    )?;
    let found = count_rows(pg, "loggingtable_test")? - before;
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .with_context(|| format!("sdk.mjs printed {out:?}"))?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("sdk.mjs: no {k} in {v}"));
    if num("pending_after")? != 0.0 || num("dropped")? != 0.0 || num("rejected")? != 0.0 {
        bail!("the SDK did not deliver its whole backlog: {v}");
    }
    checks.push(RowCheck {
        phase: format!("SDK backlog of {SDK_CALLS}"),
        expected: SDK_CALLS,
        found,
    });
    let figures = SdkFigures {
        gzip_bytes: gzip_files.iter().map(|(_, b)| b).sum(),
        gzip_files,
        calls: SDK_CALLS,
        queued_p50_ms: num("queued_p50_ms")?,
        queued_p99_ms: num("queued_p99_ms")?,
        queued_max_ms: num("queued_max_ms")?,
        drain_ms: num("drain_ms")?,
    };
    eprintln!("sdk: {figures:?}");
    Ok(figures)
}

/// One load run against `collector`, from a settled cluster: what the load generator got
/// and the CPU each part spent. The rows it added to `database` are checked against the
/// answers (`checks`, reported after the run).
fn measured_run(
    pg: &PgCluster,
    database: &str,
    collector: &Collector,
    plan: &Plan,
    label: &str,
    checks: &mut Vec<RowCheck>,
) -> Result<(load::Outcome, CpuTimes)> {
    settle(pg)?;
    let before = count_rows_in(pg, database, "loggingtable")?;
    let postmaster = pg.pid().unwrap_or(0);
    let cpu_before = CpuTimes::now(collector.pid(), postmaster);
    let outcome = load::run(plan)?;
    let cpu = CpuTimes::now(collector.pid(), postmaster).since(&cpu_before);
    let found = count_rows_in(pg, database, "loggingtable")? - before;
    checks.push(RowCheck {
        phase: label.to_string(),
        expected: outcome.events_written,
        found,
    });
    Ok((outcome, cpu))
}

/// Start each step from the same state: a checkpoint now, so none is forced by the
/// previous step's WAL in the middle of this one.
fn settle(pg: &PgCluster) -> Result<()> {
    pg.try_psql(DATABASE, "CHECKPOINT")?;
    Ok(())
}

fn count_rows(pg: &PgCluster, table: &str) -> Result<u64> {
    count_rows_in(pg, DATABASE, table)
}

fn count_rows_in(pg: &PgCluster, database: &str, table: &str) -> Result<u64> {
    let text = pg.try_psql(database, &format!("SELECT count(*) FROM {table}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("count(*) from {table} gave {text:?}"))
}

/// The write ceiling's anchor database: sql/0001-0003 applied as its admin role through
/// psql (`migrate` would apply them all), and the writer's grant of `log_events_v2`.
fn create_anchor_database(pg: &PgCluster) -> Result<()> {
    pg.create_database(ANCHOR_DATABASE);
    let mut files: Vec<PathBuf> = std::fs::read_dir(util::root().join("sql"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".sql")
            && name
                .split('_')
                .next()
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v <= 3)
    });
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        pg.try_psql(ANCHOR_DATABASE, &format!("SET ROLE {ANCHOR_DATABASE}_admin;\n{sql}"))
            .with_context(|| format!("applying {}", file.display()))?;
    }
    pg.try_psql(
        ANCHOR_DATABASE,
        &format!(
            "GRANT CONNECT ON DATABASE {ANCHOR_DATABASE} TO {WRITER_ROLE};
             GRANT EXECUTE ON FUNCTION log_events_v2(boolean[], uuid[], timestamptz[], text[], text[], text[], text[], text[])
             TO {WRITER_ROLE};"
        ),
    )?;
    Ok(())
}

/// The release collector, serving on a free loopback port.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Collector {
    fn start(
        bin: &Path,
        database_url: &str,
        sdk_dir: Option<&Path>,
        extra: &[String],
        log_path: &Path,
    ) -> Result<Self> {
        let addr: SocketAddr = ([127, 0, 0, 1], testkit::free_port()).into();
        let log = std::fs::File::create(log_path)?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--bind", &addr.to_string(), "--database-url", database_url]);
        // Every request comes from 127.0.0.1: the per-client limit would answer 429.
        cmd.args(["--rate-limit-per-second", "0"]);
        // Up to 256 connections from that one address: over the per-client cap (a
        // baseline build from before that flag has no cap to lift).
        if util::output(Command::new(bin).args(["serve", "--help"]))?.contains("--max-connections-per-client") {
            cmd.args(["--max-connections-per-client", "0"]);
        }
        if let Some(dir) = sdk_dir {
            cmd.arg("--sdk-dir").arg(dir);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        eprintln!("+ {cmd:?}");
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut collector = Collector { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = collector.child.try_wait()? {
                bail!("the collector exited with {status}; see {}", log_path.display());
            }
            if healthz_ok(addr) {
                return Ok(collector);
            }
            if Instant::now() > deadline {
                collector.stop()?;
                bail!(
                    "the collector did not answer /healthz within 30 s; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmHWM: the most resident memory the process has had so far.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// SIGTERM (it drains its queue), then wait.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            self.child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `GET /healthz` answered 200 (a blocking one-shot request; only used at start-up).
fn healthz_ok(addr: SocketAddr) -> bool {
    matches!(util::http_status(addr, "GET", "/healthz", ""), Ok(200))
}

/// CPU time (user + system, ms) of the collector, this process (the load generator)
/// and PostgreSQL (the postmaster's process tree, not other clusters on the machine),
/// to see where the two cores go during a run.
struct CpuTimes {
    collector_ms: f64,
    generator_ms: f64,
    postgres_ms: f64,
}

impl CpuTimes {
    fn now(collector_pid: u32, postmaster_pid: u32) -> Self {
        let procs = procstat::snapshot();
        CpuTimes {
            collector_ms: procstat::ticks_to_ms(procstat::own_ticks(&procs, collector_pid)),
            generator_ms: procstat::ticks_to_ms(procstat::own_ticks(&procs, std::process::id())),
            postgres_ms: procstat::ticks_to_ms(procstat::tree_ticks(&procs, postmaster_pid)),
        }
    }

    fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            collector_ms: self.collector_ms - earlier.collector_ms,
            generator_ms: self.generator_ms - earlier.generator_ms,
            postgres_ms: (self.postgres_ms - earlier.postgres_ms).max(0.0),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine_now() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        date_utc: util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model,
        load_before: load_average(),
        ..Default::default()
    }
}
