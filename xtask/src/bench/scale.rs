//! Scale-out figures (issue 13, docs/SCALING.md): the same load generator through
//! three topologies on this machine, each part its own process on loopback:
//!
//! 1. one collector straight to PostgreSQL;
//! 2. one collector through PgBouncer (transaction pooling, `--database-pool-mode transaction`);
//! 3. HAProxy in front of two collectors, both through PgBouncer.
//!
//! PgBouncer and HAProxy run from examples/scale-out/ with only ports and paths
//! replaced (`testkit`). On a small machine every part shares the same cores, so the
//! figure that carries over to real hosts is CPU per 1000 events for each part, taken
//! from `/proc` ([`procstat`]) around each run.

use super::load::{self, Kind, Pace, Plan};
use super::procstat::{self, ProcStat};
use super::report::{CpuParts, HttpFigures, Results, RowCheck, ScaleFigures};
use super::{count_rows, healthz_ok, settle, Collector, BATCH_SIZE, WRITER_ROLE};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{HaProxy, PgBouncer, PgCluster};

/// Single-event POSTs at the connection count of the issue 5 target.
const SINGLE_CONNECTIONS: usize = 64;
const BATCH_CONNECTIONS: usize = 16;

/// One way to put the parts together.
#[derive(Clone, Copy, Debug)]
struct Topology {
    name: &'static str,
    collectors: usize,
    pgbouncer: bool,
    haproxy: bool,
}

const TOPOLOGIES: [Topology; 3] = [
    Topology {
        name: "1 collector direct",
        collectors: 1,
        pgbouncer: false,
        haproxy: false,
    },
    Topology {
        name: "1 collector → PgBouncer",
        collectors: 1,
        pgbouncer: true,
        haproxy: false,
    },
    Topology {
        name: "HAProxy → 2 collectors → PgBouncer",
        collectors: 2,
        pgbouncer: true,
        haproxy: true,
    },
];

/// What the scale-out part needs from the run.
pub(super) struct Setup<'a> {
    pub pg: &'a PgCluster,
    pub collector_bin: &'a Path,
    pub writer_url: &'a str,
    pub writer_password: &'a str,
    pub collector_args: &'a [String],
    pub work_dir: &'a Path,
    pub step: Duration,
}

/// Process ids whose CPU is counted, per part.
struct Pids {
    collectors: Vec<u32>,
    pgbouncer: Option<u32>,
    haproxy: Option<u32>,
    postmaster: Option<u32>,
}

pub(super) fn measure(setup: &Setup, results: &mut Results) -> Result<()> {
    let root = crate::util::root();
    let example = |file: &str| {
        let path = root.join("examples/scale-out").join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let bouncer = PgBouncer::start(
        &example("pgbouncer.ini")?,
        setup.pg.port(),
        &testkit::daemons::userlist_line(setup.pg, WRITER_ROLE),
    )
    .context("starting PgBouncer from examples/scale-out/pgbouncer.ini")?;
    let bouncer_url = bouncer.url_for(WRITER_ROLE, setup.writer_password, super::DATABASE);
    let haproxy_template = example("haproxy.cfg")?;
    let ids = Arc::new(load::IdSource::new());

    for topology in TOPOLOGIES {
        let database_url = if topology.pgbouncer {
            bouncer_url.as_str()
        } else {
            setup.writer_url
        };
        let mut flags: Vec<String> = setup.collector_args.to_vec();
        if topology.pgbouncer {
            flags.extend(["--database-pool-mode".into(), "transaction".into()]);
        }
        if topology.haproxy {
            // As in examples/scale-out: the collectors read the learner's address from
            // HAProxy's X-Forwarded-For (the bench's per-client limits are off anyway).
            flags.extend(["--trusted-proxy".into(), "127.0.0.1".into()]);
        }
        let mut collectors = Vec::new();
        for i in 0..topology.collectors {
            let log = setup.work_dir.join(format!("collector-scale-{}.log", i + 1));
            collectors.push(Collector::start(setup.collector_bin, database_url, None, &flags, &log)?);
        }
        let haproxy = if topology.haproxy {
            let port = testkit::free_port();
            let ports: Vec<u16> = collectors.iter().map(|c| c.addr.port()).collect();
            let config = haproxy_config(&haproxy_template, port, &ports)?;
            let h = HaProxy::start(&config, port).context("starting HAProxy from examples/scale-out/haproxy.cfg")?;
            let front: SocketAddr = ([127, 0, 0, 1], port).into();
            wait_healthz(front)?;
            // `rise 2` at 500 ms: give every server time to be marked up, so the run
            // starts with all collectors in rotation.
            std::thread::sleep(Duration::from_millis(1500));
            Some((h, front))
        } else {
            None
        };
        let target = haproxy.as_ref().map_or(collectors[0].addr, |(_, front)| *front);
        let pids = Pids {
            collectors: collectors.iter().map(Collector::pid).collect(),
            pgbouncer: topology.pgbouncer.then(|| bouncer.pid()).flatten(),
            haproxy: haproxy.as_ref().and_then(|(h, _)| h.pid()),
            postmaster: setup.pg.pid(),
        };
        let outcome = (|| -> Result<()> {
            let runs = [
                ("warm-up (not reported)", Kind::Single, 16, Duration::from_millis(500)),
                ("single-event POST", Kind::Single, SINGLE_CONNECTIONS, setup.step),
                (
                    "/batch of 100",
                    Kind::Batch { size: BATCH_SIZE },
                    BATCH_CONNECTIONS,
                    setup.step,
                ),
            ];
            for (what, kind, connections, duration) in runs {
                let label = format!("scale-out: {}, {what}, {connections} connections", topology.name);
                let figures = step(
                    setup.pg,
                    &ids,
                    target,
                    &label,
                    kind,
                    connections,
                    duration,
                    &pids,
                    results,
                )?;
                if !what.starts_with("warm-up") {
                    results.scale_out.push(figures);
                }
            }
            Ok(())
        })();
        drop(haproxy);
        for mut c in collectors {
            c.stop()?;
        }
        outcome?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn step(
    pg: &PgCluster,
    ids: &Arc<load::IdSource>,
    addr: SocketAddr,
    label: &str,
    kind: Kind,
    connections: usize,
    duration: Duration,
    pids: &Pids,
    results: &mut Results,
) -> Result<ScaleFigures> {
    settle(pg)?;
    let before_rows = count_rows(pg, "loggingtable")?;
    let before = procstat::snapshot();
    let outcome = load::run(&Plan {
        addr,
        kind,
        connections,
        duration,
        pace: Pace::ClosedLoop,
        ids: ids.clone(),
    })?;
    let after = procstat::snapshot();
    let found = count_rows(pg, "loggingtable")? - before_rows;
    // Every acknowledged event has its row: `written`, and `duplicate` (HAProxy resent
    // a request whose first attempt was stored; ids are never reused by the generator).
    results.row_checks.push(RowCheck {
        phase: label.to_string(),
        expected: outcome.events_written + outcome.events_duplicate,
        found,
    });
    let cpu = cpu_parts(&before, &after, pids, std::process::id(), outcome.events_written);
    let per_collector: Vec<String> = pids
        .collectors
        .iter()
        .map(|&p| format!("{:.0}", procstat::ticks_to_ms(tree_delta(&before, &after, p))))
        .collect();
    let figures = HttpFigures {
        label: label.to_string(),
        connections,
        events_per_sec: outcome.events_per_sec(),
        p50_ms: outcome.percentile_ms(0.5),
        p99_ms: outcome.percentile_ms(0.99),
        max_ms: outcome.max_ms(),
        errors: outcome.errors(),
        error_summary: outcome.error_summary(),
        peak_rss_kib: None,
        cpu_ms_per_1000: None,
    };
    eprintln!(
        "{:<72} {:>8.0}/s  p50 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  errors {} {}  cpu ms/1000 ev {cpu:?}  collector cpu ms {}",
        figures.label,
        figures.events_per_sec,
        figures.p50_ms,
        figures.p99_ms,
        figures.max_ms,
        figures.errors,
        figures.error_summary,
        per_collector.join("/"),
    );
    Ok(ScaleFigures {
        http: figures,
        batch: matches!(kind, Kind::Batch { .. }),
        cpu,
    })
}

fn tree_delta(before: &[ProcStat], after: &[ProcStat], pid: u32) -> u64 {
    procstat::tree_ticks(after, pid).saturating_sub(procstat::tree_ticks(before, pid))
}

/// CPU ms per 1000 events written, per part, between two snapshots (`None` per part
/// not in this topology, and for all when nothing was written).
fn cpu_parts(before: &[ProcStat], after: &[ProcStat], pids: &Pids, generator: u32, events: u64) -> Option<CpuParts> {
    if events == 0 {
        return None;
    }
    let per = |ticks: u64| procstat::ticks_to_ms(ticks) * 1000.0 / events as f64;
    let tree = |pid: Option<u32>| pid.map(|p| per(tree_delta(before, after, p)));
    Some(CpuParts {
        collectors: per(pids.collectors.iter().map(|&p| tree_delta(before, after, p)).sum()),
        pgbouncer: tree(pids.pgbouncer),
        haproxy: tree(pids.haproxy),
        postgres: tree(pids.postmaster).unwrap_or(0.0),
        // The generator runs in this process; psql children it reaps are not load.
        generator: per(procstat::own_ticks(after, generator).saturating_sub(procstat::own_ticks(before, generator))),
    })
}

fn wait_healthz(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz_ok(addr) {
        if Instant::now() > deadline {
            bail!("HAProxy on {addr} did not answer /healthz with 200 within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// examples/scale-out/haproxy.cfg with its frontend on `front_port` and one `server`
/// line per collector port. Fails when the example no longer has the lines replaced,
/// so a changed example cannot silently leave the bench on the wrong ports.
fn haproxy_config(template: &str, front_port: u16, collector_ports: &[u16]) -> Result<String> {
    const BIND: &str = "    bind 127.0.0.1:8080\n";
    const SERVER1: &str = "    server collector1 127.0.0.1:4001\n";
    const SERVER2: &str = "    server collector2 127.0.0.1:4002\n";
    for line in [BIND, SERVER1, SERVER2] {
        if !template.contains(line) {
            bail!(
                "examples/scale-out/haproxy.cfg has no line `{}`: update xtask/src/bench/scale.rs",
                line.trim()
            );
        }
    }
    let servers: String = collector_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server collector{} 127.0.0.1:{p}\n", i + 1))
        .collect();
    Ok(template
        .replace(BIND, &format!("    bind 127.0.0.1:{front_port}\n"))
        .replace(SERVER2, "")
        .replace(SERVER1, &servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_config_from_the_example_points_at_our_ports_only() {
        let template = std::fs::read_to_string(crate::util::root().join("examples/scale-out/haproxy.cfg")).unwrap();
        let config = haproxy_config(&template, 18080, &[14001, 14002, 14003]).unwrap();
        assert!(config.contains("    bind 127.0.0.1:18080\n"), "{config}");
        let servers: Vec<&str> = config
            .lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .collect();
        assert_eq!(
            servers,
            [
                "    server collector1 127.0.0.1:14001",
                "    server collector2 127.0.0.1:14002",
                "    server collector3 127.0.0.1:14003"
            ]
        );
        assert!(
            !config.contains(":8080") && !config.contains(":4001") && !config.contains(":4002"),
            "{config}"
        );
        // The health check the bench relies on to start with every collector up.
        assert!(config.contains("option httpchk GET /healthz"));
        assert!(haproxy_config("frontend x\n", 1, &[2]).is_err());
    }

    #[test]
    fn cpu_parts_are_per_1000_events_and_per_part() {
        let stat = |pid: u32, ppid: u32, own: u64| ProcStat {
            pid,
            ppid,
            own_ticks: own,
            reaped_children_ticks: 0,
        };
        let before = [
            stat(1, 0, 0),
            stat(10, 1, 100),
            stat(11, 1, 100),
            stat(20, 1, 0),
            stat(30, 1, 5),
            stat(31, 30, 0),
            stat(99, 1, 50),
        ];
        let after = [
            stat(1, 0, 0),
            stat(10, 1, 300),
            stat(11, 1, 200),
            stat(20, 1, 40),
            stat(30, 1, 15),
            stat(31, 30, 20),
            stat(99, 1, 60),
        ];
        let pids = Pids {
            collectors: vec![10, 11],
            pgbouncer: Some(20),
            haproxy: None,
            postmaster: Some(30),
        };
        let ms = |ticks: f64| procstat::ticks_to_ms(1) * ticks;
        let c = cpu_parts(&before, &after, &pids, 99, 2000).unwrap();
        // Per 1000 events = half of the ticks over 2000 events.
        assert_eq!(c.collectors, ms(150.0));
        assert_eq!(c.pgbouncer, Some(ms(20.0)));
        assert_eq!(c.haproxy, None);
        assert_eq!(c.postgres, ms(15.0));
        assert_eq!(c.generator, ms(5.0));
        assert!(cpu_parts(&before, &after, &pids, 99, 0).is_none());
    }
}
