//! `--baseline-collector PATH`: this collector against another build of it (say the
//! release before a change), in the same run, on the same PostgreSQL cluster.
//!
//! Why: on a shared 2-core machine the speed of whole runs drifts by a third from one
//! run to the next, so two benchmark runs cannot show a difference of a few per cent.
//! Here both collectors run side by side, each on its own database migrated by its own
//! binary, and every step is measured against one, then at once against the other, in
//! alternating order (ABBA), `--rounds` times. The ratio of each adjacent pair cancels
//! the drift; the median over the rounds is reported, with the ratios to the ceilings
//! measured in the same run.

use super::load::{self, IdSource, Kind, Pace, Plan};
use super::report::RowCheck;
use super::{measured_run, Collector, BATCH_SIZE, DATABASE, WRITER_PASSWORD, WRITER_ROLE};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use testkit::PgCluster;

/// The baseline collector's own database (migrated by the baseline binary).
const BASELINE_DATABASE: &str = "hourofci_baseline";

/// The steps compared: (label, kind, connections).
const STEPS: [(&str, Kind, usize); 3] = [
    ("single-event POST, 64 connections", Kind::Single, 64),
    ("single-event POST, 256 connections", Kind::Single, 256),
    ("/batch of 100, 16 connections", Kind::Batch { size: BATCH_SIZE }, 16),
];

/// Both collectors and their databases.
pub struct Setup<'a> {
    pub pg: &'a PgCluster,
    /// This build's collector, on the benchmark's own database.
    pub current: &'a Collector,
    pub baseline_bin: &'a Path,
    pub collector_args: &'a [String],
    pub work_dir: &'a Path,
    pub step: Duration,
    pub rounds: usize,
    /// Ceilings A (events/s) and B (rows/s) of this run, when pgbench ran.
    pub ceilings: (Option<f64>, Option<f64>),
}

/// One measured run of one collector.
#[derive(Clone, Debug)]
struct Run {
    per_sec: f64,
    p99_ms: f64,
    /// CPU ms per 1000 events: collector, PostgreSQL.
    cpu: [f64; 2],
}

/// Run the comparison; the markdown table (also printed).
pub fn compare(setup: &Setup, checks: &mut Vec<RowCheck>) -> Result<String> {
    let admin_url = setup.pg.create_database(BASELINE_DATABASE);
    crate::util::run(Command::new(setup.baseline_bin).args([
        "migrate",
        "--database-url",
        &admin_url,
        "--writer-role",
        WRITER_ROLE,
    ]))
    .context("migrating the baseline's database with the baseline binary")?;
    let mut baseline = Collector::start(
        setup.baseline_bin,
        &setup.pg.url_for(WRITER_ROLE, WRITER_PASSWORD, BASELINE_DATABASE),
        None,
        setup.collector_args,
        &setup.work_dir.join("collector-baseline.log"),
    )?;
    let result = measure(setup, &baseline, checks);
    baseline.stop()?;
    result
}

fn measure(setup: &Setup, baseline: &Collector, checks: &mut Vec<RowCheck>) -> Result<String> {
    let ids = Arc::new(IdSource::new());
    let sides: [(&str, &Collector, &str); 2] = [
        ("baseline", baseline, BASELINE_DATABASE),
        ("current", setup.current, DATABASE),
    ];
    let mut run_one = |side: usize, kind: Kind, connections: usize, label: &str| -> Result<Run> {
        let (name, collector, database) = sides[side];
        let plan = Plan {
            addr: collector.addr,
            kind,
            connections,
            duration: setup.step,
            pace: Pace::ClosedLoop,
            ids: ids.clone(),
        };
        let (outcome, cpu) = measured_run(
            setup.pg,
            database,
            collector,
            &plan,
            &format!("{name}: {label}"),
            checks,
        )?;
        let per = 1000.0 / outcome.events_written.max(1) as f64;
        let run = Run {
            per_sec: outcome.events_per_sec(),
            p99_ms: outcome.percentile_ms(0.99),
            cpu: [cpu.collector_ms * per, cpu.postgres_ms * per],
        };
        eprintln!(
            "{name:<8} {label:<40} {:>8.0}/s  p99 {:>7.2} ms  errors {}  cpu ms/1000 ev [collector {:.0}, PostgreSQL {:.0}]",
            run.per_sec,
            run.p99_ms,
            outcome.errors(),
            run.cpu[0],
            run.cpu[1]
        );
        Ok(run)
    };
    // Warm both up (connections, statement caches) before anything counts.
    for (_, collector, _) in sides {
        load::run(&Plan {
            addr: collector.addr,
            kind: Kind::Single,
            connections: 16,
            duration: Duration::from_millis(500),
            pace: Pace::ClosedLoop,
            ids: ids.clone(),
        })?;
    }
    let mut table = String::new();
    writeln!(
        table,
        "Same run, same cluster, {} rounds per step in ABBA order, {} s each; medians. Ratio: current / baseline of each adjacent pair.\n",
        setup.rounds,
        setup.step.as_secs()
    )?;
    writeln!(
        table,
        "| step | baseline | current | ratio current/baseline (min–max) | to ceiling: baseline / current | p99 ms: baseline / current | CPU ms per 1000, collector + PostgreSQL: baseline / current |"
    )?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (label, kind, connections) in STEPS {
        let mut pairs: Vec<(Run, Run)> = Vec::new();
        for round in 0..setup.rounds {
            // ABBA: the side measured first alternates, so a steady drift favours neither.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut runs: [Option<Run>; 2] = [None, None];
            for side in order {
                runs[side] = Some(run_one(side, kind, connections, label)?);
            }
            let [b, c] = runs;
            pairs.push((b.expect("measured"), c.expect("measured")));
        }
        let ratios: Vec<f64> = pairs.iter().map(|(b, c)| c.per_sec / b.per_sec).collect();
        let base = median(pairs.iter().map(|(b, _)| b.per_sec));
        let cur = median(pairs.iter().map(|(_, c)| c.per_sec));
        let ceiling = match kind {
            Kind::Single => setup.ceilings.0.map(|a| (a, "A")),
            Kind::Batch { .. } => setup.ceilings.1.map(|b| (b, "B")),
        };
        let to_ceiling = match ceiling {
            Some((value, name)) => format!("{:.2}× / {:.2}× {name}", base / value, cur / value),
            None => "–".into(),
        };
        writeln!(
            table,
            "| {label} | {base:.0}/s | {cur:.0}/s | **{:.3}** ({:.3}–{:.3}) | {to_ceiling} | {:.2} / {:.2} | {:.0} + {:.0} / {:.0} + {:.0} |",
            median(ratios.iter().copied()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
            median(pairs.iter().map(|(b, _)| b.p99_ms)),
            median(pairs.iter().map(|(_, c)| c.p99_ms)),
            median(pairs.iter().map(|(b, _)| b.cpu[0])),
            median(pairs.iter().map(|(b, _)| b.cpu[1])),
            median(pairs.iter().map(|(_, c)| c.cpu[0])),
            median(pairs.iter().map(|(_, c)| c.cpu[1])),
        )?;
    }
    println!("\n{table}");
    Ok(table)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
