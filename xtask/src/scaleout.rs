//! `cargo xtask scale-out`: the scale-out topology of docs/SCALING.md on one machine,
//! each part its own process on loopback ports: PostgreSQL (a throwaway testkit
//! cluster), PgBouncer in transaction pooling, N collectors, HAProxy in front, all
//! from the files in examples/scale-out/ with only ports and paths replaced.

use crate::prereqs;
use crate::test::cargo_target_dir;
use crate::util::{self, cargo, root};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;
use testkit::{HaProxy, PgBouncer, PgCluster};

/// PostgreSQL, PgBouncer, collectors and HAProxy on loopback ports (docs/SCALING.md)
///
/// Starts, on 127.0.0.1: a throwaway PostgreSQL cluster with the migrated database
/// `hourofci` and the writer role `hourofciuser`; PgBouncer (examples/scale-out/pgbouncer.ini,
/// transaction pooling, auth_file generated from PostgreSQL's SCRAM secret); N collectors
/// (--database-pool-mode transaction, --shutdown-drain-ms 3000) behind HAProxy
/// (examples/scale-out/haproxy.cfg, health checks on /healthz). Prints the URL to send
/// events to and how to look at the rows. Ctrl-C stops everything and deletes the cluster.
/// Installs haproxy and pgbouncer (apt) when missing.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// HAProxy's port
    #[arg(long, value_name = "N", default_value_t = 8080)]
    port: u16,
    /// How many collectors (1-16)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    collectors: u8,
    /// Build and run the debug collector (quicker to build, slower)
    #[arg(long)]
    debug: bool,
    /// Use the collector already built
    #[arg(long)]
    no_build: bool,
    /// Send 20 events through HAProxy, check each is stored once, stop
    #[arg(long)]
    smoke: bool,
}

/// A collector process, killed on drop.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        port,
        collectors,
        debug,
        no_build,
        smoke,
    } = args;
    let build = !no_build;
    prereqs::system_packages()?;
    let profile = if debug { "debug" } else { "release" };
    if build {
        let mut build = cargo();
        build.args(["build", "-p", "hourofci-collector"]);
        if !debug {
            build.arg("--release");
        }
        util::run(&mut build)?;
    }
    let bin = cargo_target_dir().join(profile).join("hourofci-collector");
    if !bin.exists() {
        bail!("{} is not built: run without --no-build", bin.display());
    }
    let example = |file: &str| {
        let path = root().join("examples/scale-out").join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };

    let pg = PgCluster::start().context("starting PostgreSQL")?;
    let admin_url = pg.create_database("hourofci");
    let writer_password = uuid::Uuid::new_v4().simple().to_string();
    pg.create_login_role("hourofciuser", &writer_password);
    util::run(
        Command::new(&bin)
            .args(["migrate", "--writer-role", "hourofciuser"])
            .env("DATABASE_URL", &admin_url),
    )?;
    let bouncer = PgBouncer::start(
        &example("pgbouncer.ini")?,
        pg.port(),
        &testkit::daemons::userlist_line(&pg, "hourofciuser"),
    )
    .context("starting PgBouncer")?;
    let writer_url = bouncer.url_for("hourofciuser", &writer_password, "hourofci");

    let mut ports = Vec::new();
    let mut running = Vec::new();
    for _ in 0..collectors {
        let p = testkit::free_port();
        let child = Command::new(&bin)
            .args(["serve", "--bind", &format!("127.0.0.1:{p}")])
            .args([
                "--database-pool-mode",
                "transaction",
                "--shutdown-drain-ms",
                "3000",
                "--trusted-proxy",
                "127.0.0.1",
            ])
            .args(["--allow-origin", "*"])
            .env("DATABASE_URL", &writer_url)
            .env("RUST_LOG", "warn")
            .spawn()
            .context("starting a collector")?;
        running.push(Collector(child));
        ports.push(p);
    }
    for p in &ports {
        util::wait_for_200(([127, 0, 0, 1], *p).into(), "/healthz", Duration::from_secs(30))?;
    }
    // The example names two collectors; one `server` line per collector here.
    let mut config = example("haproxy.cfg")?.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    config = config.replace("    server collector2 127.0.0.1:4002\n", "");
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server collector{} 127.0.0.1:{p}\n", i + 1))
        .collect();
    config = config.replace("    server collector1 127.0.0.1:4001\n", &servers);
    let haproxy = HaProxy::start(&config, port).context("starting HAProxy")?;
    let front = SocketAddr::from(([127, 0, 0, 1], haproxy.port()));
    util::wait_for_200(front, "/healthz", Duration::from_secs(30))?;

    let psql = format!("{}/psql {admin_url}", pg.bin_dir().display());
    println!(
        "\nhourofci-log scale-out on one machine\n\
         \n  send events to:  http://{front}   (HAProxy, health checks on /healthz)\
         \n  collectors:      {}\
         \n  PgBouncer:       127.0.0.1:{} (transaction pooling)   PostgreSQL: 127.0.0.1:{}\
         \n  try:             curl -X POST -H \"Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)\" http://{front}/3b5d5c3712955042212316173ccf37be/gateway/beginner/1A/hello\
         \n  rows:            {psql} -c 'select id, lesson, answer, event_id from loggingtable order by id'\
         \n\n  Ctrl-C stops everything.\n",
        ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect::<Vec<_>>().join("  "),
        bouncer.port(),
        pg.port(),
    );
    if smoke {
        let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for (i, id) in ids.iter().enumerate() {
            let path = format!("/3b5d5c3712955042212316173ccf37be/gateway/beginner/1A/smoke-{i}");
            let status = util::http_status(front, "POST", &path, &format!("Idempotency-Key: {id}\r\n"))?;
            if status != 201 {
                bail!("POST {path} through HAProxy answered {status}, not 201");
            }
        }
        let stored = pg.psql(
            "hourofci",
            "SELECT count(DISTINCT event_id) || '/' || count(*) FROM loggingtable",
        );
        if stored != "20/20" {
            bail!("expected 20 distinct rows, found {stored} (distinct/all)");
        }
        println!(
            "smoke: 20 events through HAProxy -> {collectors} collectors -> PgBouncer -> PostgreSQL, each stored once"
        );
        return Ok(());
    }
    wait_for_ctrl_c_or_sigterm()?;
    eprintln!("stopping");
    drop(haproxy);
    drop(running);
    Ok(())
}

/// Blocks until SIGINT (Ctrl-C) or SIGTERM arrives.
fn wait_for_ctrl_c_or_sigterm() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
