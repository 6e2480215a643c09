//! The benchmark's table, its targets (issue 5) and `docs/BENCHMARKS.md`.
//!
//! Only the block between [`START`] and [`END`] in `docs/BENCHMARKS.md` is rewritten;
//! other sections of that file (the SDK build's size section, notes) are kept as they are.

use super::pgbench::PgbenchRun;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

pub const START: &str = "<!-- bench:start -->";
pub const END: &str = "<!-- bench:end -->";

/// Where and when the figures were taken.
#[derive(Default, Debug)]
pub struct Machine {
    pub date_utc: String,
    pub cores: usize,
    pub cpu_model: String,
    pub load_before: String,
    pub load_after: String,
    pub postgres_version: String,
}

/// One HTTP load run, summarized.
#[derive(Clone, Debug)]
pub struct HttpFigures {
    pub label: String,
    pub connections: usize,
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub error_summary: String,
    /// Collector's VmHWM after this run, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// CPU ms per 1000 events written: collector, load generator, PostgreSQL.
    pub cpu_ms_per_1000: Option<[f64; 3]>,
}

#[derive(Clone, Debug)]
pub struct SdkFigures {
    pub gzip_bytes: u64,
    pub gzip_files: Vec<(String, u64)>,
    pub calls: u64,
    pub queued_p50_ms: f64,
    pub queued_p99_ms: f64,
    pub queued_max_ms: f64,
    pub drain_ms: f64,
}

/// CPU ms per 1000 events written, per part of a scale-out topology (`None`: the
/// part is not in this topology).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuParts {
    pub collectors: f64,
    pub pgbouncer: Option<f64>,
    pub haproxy: Option<f64>,
    pub postgres: f64,
    pub generator: f64,
}

impl CpuParts {
    pub fn total(&self) -> f64 {
        self.collectors + self.pgbouncer.unwrap_or(0.0) + self.haproxy.unwrap_or(0.0) + self.postgres + self.generator
    }
}

/// One run through a scale-out topology.
#[derive(Clone, Debug)]
pub struct ScaleFigures {
    pub http: HttpFigures,
    /// `/batch` (rows/s, against ceiling B) rather than single events (ceiling A).
    pub batch: bool,
    pub cpu: Option<CpuParts>,
}

/// A comparison of what the database holds with what the load generator was told.
#[derive(Clone, Debug)]
pub struct RowCheck {
    pub phase: String,
    pub expected: u64,
    pub found: u64,
}

impl RowCheck {
    pub fn ok(&self) -> bool {
        self.expected == self.found
    }
}

#[derive(Default, Debug)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub seconds_per_step: u64,
    pub pg_single: Vec<PgbenchRun>,
    pub pg_batch: Vec<PgbenchRun>,
    /// `log_events_v2` on a database migrated to sql/0003 (the write ceiling before
    /// issue 12), same cluster, same run.
    pub pg_batch_anchor: Vec<PgbenchRun>,
    pub http_single: Vec<HttpFigures>,
    pub http_batch: Vec<HttpFigures>,
    pub http_paced: Option<(f64, HttpFigures)>,
    pub peak_rss_kib: Option<u64>,
    pub collector_flags: Vec<String>,
    pub sdk: Option<SdkFigures>,
    pub scale_out: Vec<ScaleFigures>,
    pub row_checks: Vec<RowCheck>,
}

/// A target from issue 5 and whether this run met it.
pub struct TargetCheck {
    pub name: &'static str,
    pub wanted: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Results {
    /// Best `log_event` transactions per second over the client counts.
    pub fn single_ceiling(&self) -> Option<f64> {
        self.pg_single.iter().map(|r| r.tps).reduce(f64::max)
    }

    /// Best anchor (`log_events_v2` on sql/0001-0003) rows per second.
    pub fn anchor_ceiling(&self) -> Option<f64> {
        self.pg_batch_anchor
            .iter()
            .map(PgbenchRun::rows_per_sec)
            .reduce(f64::max)
    }

    /// Best `log_events_v5` rows per second over the client counts.
    pub fn batch_ceiling(&self) -> Option<f64> {
        self.pg_batch.iter().map(PgbenchRun::rows_per_sec).reduce(f64::max)
    }

    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        let single_ceiling = self.single_ceiling();
        let at64 = self.http_single.iter().find(|f| f.connections == 64);
        out.push(match (at64, single_ceiling) {
            (Some(f), Some(c)) => TargetCheck {
                name: "single-event POSTs at 64 connections",
                wanted: "≥ 1.5× pgbench log_event ceiling".into(),
                measured: format!("{:.0}/s = {:.2}×", f.events_per_sec, f.events_per_sec / c),
                met: Some(f.events_per_sec >= 1.5 * c),
            },
            _ => not_run(
                "single-event POSTs at 64 connections",
                "≥ 1.5× pgbench log_event ceiling",
            ),
        });
        let best_batch = self.http_batch.iter().map(|f| f.events_per_sec).reduce(f64::max);
        out.push(match (best_batch, self.batch_ceiling()) {
            (Some(b), Some(c)) => TargetCheck {
                name: "/batch rows/s",
                wanted: "≥ 0.8× pgbench log_events_v5 ceiling".into(),
                measured: format!("{b:.0}/s = {:.2}×", b / c),
                met: Some(b >= 0.8 * c),
            },
            _ => not_run("/batch rows/s", "≥ 0.8× pgbench log_events_v5 ceiling"),
        });
        out.push(match (self.batch_ceiling(), self.anchor_ceiling()) {
            (Some(c), Some(a)) => TargetCheck {
                name: "write ceiling B against log_events_v2 on sql/0001-0003",
                wanted: "≥ −5 %".into(),
                measured: format!("{c:.0} against {a:.0} rows/s = {:+.1} %", (c / a - 1.0) * 100.0),
                met: Some(c >= 0.95 * a),
            },
            _ => not_run("write ceiling B against log_events_v2 on sql/0001-0003", "≥ −5 %"),
        });
        out.push(match &self.http_paced {
            Some((rate, f)) => TargetCheck {
                name: "p99 at half the maximum throughput",
                wanted: "≤ 20 ms, 0 errors".into(),
                measured: format!("{:.1} ms at {rate:.0}/s, {} errors", f.p99_ms, f.errors),
                met: Some(f.p99_ms <= 20.0 && f.errors == 0),
            },
            None => not_run("p99 at half the maximum throughput", "≤ 20 ms, 0 errors"),
        });
        out.push(match self.peak_rss_kib {
            Some(kib) => TargetCheck {
                name: "collector peak RSS",
                wanted: "≤ 64 MB".into(),
                measured: format!("{:.1} MB", kib as f64 / 1024.0),
                met: Some(kib <= 64 * 1024),
            },
            None => not_run("collector peak RSS", "≤ 64 MB"),
        });
        match &self.sdk {
            Some(s) => {
                out.push(TargetCheck {
                    name: "1000-event offline backlog drained",
                    wanted: "≤ 2 s".into(),
                    measured: format!("{:.0} ms", s.drain_ms),
                    met: Some(s.drain_ms <= 2000.0),
                });
                out.push(TargetCheck {
                    name: "logAnswer → \"queued\" p50",
                    wanted: "< 1 ms".into(),
                    measured: format!("{:.2} ms", s.queued_p50_ms),
                    met: Some(s.queued_p50_ms < 1.0),
                });
            }
            None => {
                out.push(not_run("1000-event offline backlog drained", "≤ 2 s"));
                out.push(not_run("logAnswer → \"queued\" p50", "< 1 ms"));
            }
        }
        out
    }

    /// The whole block as Markdown (also what is printed to the terminal).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "## Throughput and latency (`cargo xtask bench`)\n");
        let _ = writeln!(
            s,
            "Measured {} on {} cores ({}), load average before `{}`, after `{}`; {}; \
             PostgreSQL durable (fsync on, synchronous_commit on). Command: `{}` ({} s per step). \
             Generated by the benchmark: do not edit by hand between the markers.\n",
            m.date_utc,
            m.cores,
            m.cpu_model,
            m.load_before,
            m.load_after,
            m.postgres_version,
            self.command,
            self.seconds_per_step
        );
        if !self.collector_flags.is_empty() {
            let _ = writeln!(s, "Collector flags: `{}`.\n", self.collector_flags.join(" "));
        }
        let _ = writeln!(
            s,
            "| # | measurement | figure | p50 / p99 / max ms | errors | ratio to ceiling |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let single_ceiling = self.single_ceiling();
        let batch_ceiling = self.batch_ceiling();
        let ratio = |v: f64, c: Option<f64>| c.map(|c| format!("{:.2}×", v / c)).unwrap_or_else(|| "–".into());
        // "0.88× of A", or "–" when this run measured no ceiling (`--only`).
        let ratio_of = |v: f64, c: Option<f64>, name: &str| {
            c.map(|c| format!("{:.2}× of {name}", v / c))
                .unwrap_or_else(|| "–".into())
        };
        for r in &self.pg_single {
            let _ = writeln!(
                s,
                "| 1 | pgbench `log_event`, 1 call/transaction, {} clients | {:.0} tx/s | avg {:.2} | 0 | {} |",
                r.clients,
                r.tps,
                r.latency_avg_ms,
                ratio(r.tps, single_ceiling)
            );
        }
        if let Some(c) = single_ceiling {
            let _ = writeln!(
                s,
                "| 1 | **ceiling A**: best of the above | **{c:.0} events/s** | | | 1.00× |"
            );
        }
        for r in &self.pg_batch {
            let _ = writeln!(
                s,
                "| 2 | pgbench `log_events_v5`, {} rows/transaction, {} clients | {:.0} rows/s | avg {:.2} | 0 | {} |",
                r.rows_per_transaction,
                r.clients,
                r.rows_per_sec(),
                r.latency_avg_ms,
                ratio(r.rows_per_sec(), batch_ceiling)
            );
        }
        if let Some(c) = batch_ceiling {
            let _ = writeln!(
                s,
                "| 2 | **ceiling B**: best of the above | **{c:.0} rows/s** | | | 1.00× |"
            );
        }
        for r in &self.pg_batch_anchor {
            let _ = writeln!(
                s,
                "| 2 | anchor: pgbench `log_events_v2` on sql/0001–0003 (before learner ids and read indexes), {} rows/transaction, {} clients | {:.0} rows/s | avg {:.2} | 0 | {} |",
                r.rows_per_transaction, r.clients, r.rows_per_sec(), r.latency_avg_ms, ratio(r.rows_per_sec(), batch_ceiling)
            );
        }
        if let (Some(c), Some(a)) = (batch_ceiling, self.anchor_ceiling()) {
            let _ = writeln!(
                s,
                "| 2 | **ceiling B against its anchor** (best `log_events_v5` / best `log_events_v2`) | **{:+.1} %** | | | |",
                (c / a - 1.0) * 100.0
            );
        }
        for f in &self.http_single {
            http_row(
                &mut s,
                "3",
                f,
                "events/s",
                ratio_of(f.events_per_sec, single_ceiling, "A"),
            );
        }
        for f in &self.http_batch {
            http_row(&mut s, "3", f, "rows/s", ratio_of(f.events_per_sec, batch_ceiling, "B"));
        }
        if let Some((_, f)) = &self.http_paced {
            http_row(
                &mut s,
                "3",
                f,
                "events/s",
                ratio_of(f.events_per_sec, single_ceiling, "A"),
            );
        }
        if let Some(kib) = self.peak_rss_kib {
            let _ = writeln!(
                s,
                "| 3 | collector peak RSS (VmHWM, whole run) | {:.1} MB | | | |",
                kib as f64 / 1024.0
            );
        }
        if let Some(sdk) = &self.sdk {
            let files: Vec<String> = sdk.gzip_files.iter().map(|(n, b)| format!("{n} {b}")).collect();
            let _ = writeln!(
                s,
                "| 4 | SDK download, gzip -9 ({}) | {:.1} KB | | | |",
                files.join(" + "),
                sdk.gzip_bytes as f64 / 1000.0
            );
            let _ = writeln!(
                s,
                "| 4 | `logAnswer` → \"queued\", offline, {} calls, headless Chromium | | {:.2} / {:.2} / {:.2} | 0 | |",
                sdk.calls, sdk.queued_p50_ms, sdk.queued_p99_ms, sdk.queued_max_ms
            );
            let _ = writeln!(
                s,
                "| 4 | drain a {}-event offline backlog once online | {:.0} ms | | 0 | |",
                sdk.calls, sdk.drain_ms
            );
        }
        for f in &self.scale_out {
            let (unit, r) = if f.batch {
                ("rows/s", ratio_of(f.http.events_per_sec, batch_ceiling, "B"))
            } else {
                ("events/s", ratio_of(f.http.events_per_sec, single_ceiling, "A"))
            };
            http_row(&mut s, "5", &f.http, unit, r);
        }
        let runs: Vec<&HttpFigures> = self
            .http_single
            .iter()
            .chain(&self.http_batch)
            .chain(self.http_paced.iter().map(|(_, f)| f))
            .collect();
        if !runs.is_empty() {
            let _ = writeln!(
                s,
                "\nWhere the two cores go: CPU time (user + system) per 1000 events written, from \
                 `/proc/PID/stat` before and after each run (PostgreSQL: the postmaster and its \
                 backends, including backends that exited during the run).\n"
            );
            let _ = writeln!(s, "| run | collector ms | load generator ms | PostgreSQL ms |");
            let _ = writeln!(s, "|---|---|---|---|");
        }
        for f in runs {
            if let Some([c, g, p]) = f.cpu_ms_per_1000 {
                let _ = writeln!(s, "| {} | {c:.0} | {g:.0} | {p:.0} |", f.label);
            }
        }
        if !self.scale_out.is_empty() {
            let _ = writeln!(
                s,
                "\nScale-out (5), CPU time per 1000 events written for each part (its process tree, \
                 from `/proc/PID/stat` before and after each run). Every part runs on this machine, \
                 so they share the cores: the total, not the speed, is what carries over to more hosts.\n"
            );
            let _ = writeln!(
                s,
                "| run | collectors ms | PgBouncer ms | HAProxy ms | PostgreSQL ms | load generator ms | total ms |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
            for f in &self.scale_out {
                if let Some(c) = &f.cpu {
                    let _ = writeln!(
                        s,
                        "| {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} |",
                        f.http.label,
                        c.collectors,
                        opt(c.pgbouncer),
                        opt(c.haproxy),
                        c.postgres,
                        c.generator,
                        c.total()
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "\nRows in the database against the answers the load generator got:\n"
        );
        let _ = writeln!(s, "| phase | expected rows | rows found | |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &self.row_checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.phase,
                c.expected,
                c.found,
                if c.ok() { "ok" } else { "**MISMATCH**" }
            );
        }
        let _ = writeln!(s, "\nTargets (issue 5):\n");
        let _ = writeln!(s, "| target | wanted | measured | met |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in self.targets() {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not run",
            };
            let _ = writeln!(s, "| {} | {} | {} | {met} |", t.name, t.wanted, t.measured);
        }
        s
    }
}

fn not_run(name: &'static str, wanted: &str) -> TargetCheck {
    TargetCheck {
        name,
        wanted: wanted.into(),
        measured: "–".into(),
        met: None,
    }
}

fn http_row(s: &mut String, n: &str, f: &HttpFigures, unit: &str, ratio: String) {
    let errors = if f.errors == 0 {
        "0".to_string()
    } else {
        format!("{} ({})", f.errors, f.error_summary)
    };
    let _ = writeln!(
        s,
        "| {n} | {} | {:.0} {unit} | {:.2} / {:.2} / {:.2} | {errors} | {ratio} |",
        f.label, f.events_per_sec, f.p50_ms, f.p99_ms, f.max_ms
    );
}

/// Replace the block between the markers in `path` (or add it after the title).
pub fn write_block(path: &Path, block: &str) -> Result<()> {
    let wrapped = format!("{START}\n{}\n{END}", block.trim_end());
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{wrapped}{}", &old[..a], &old[b + END.len()..]),
        _ if old.trim().is_empty() => format!("# Benchmarks\n\n{wrapped}\n"),
        _ => match old.strip_prefix('#').and_then(|_| old.find('\n')) {
            Some(title_end) => format!("{}\n\n{wrapped}\n{}", &old[..title_end], &old[title_end..]),
            None => format!("{wrapped}\n\n{old}"),
        },
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_block_keeps_other_sections() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, "# Benchmarks\n\n## SDK download size\n\nsdk text\n").unwrap();
        write_block(&path, "first").unwrap();
        write_block(&path, "second").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("## SDK download size\n\nsdk text"));
        assert!(text.contains(&format!("{START}\nsecond\n{END}")));
        assert!(!text.contains("first"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scale_out_rows_have_ratios_to_the_same_runs_ceilings_and_cpu_per_part() {
        let http = |label: &str, events_per_sec: f64| HttpFigures {
            label: label.into(),
            connections: 64,
            events_per_sec,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            errors: 0,
            error_summary: String::new(),
            peak_rss_kib: None,
            cpu_ms_per_1000: None,
        };
        let pg = |clients, rows_per_transaction, tps| PgbenchRun {
            clients,
            rows_per_transaction,
            tps,
            latency_avg_ms: 1.0,
            transactions: 1,
        };
        let cpu = CpuParts {
            collectors: 50.0,
            pgbouncer: Some(10.0),
            haproxy: None,
            postgres: 30.0,
            generator: 20.0,
        };
        let results = Results {
            pg_single: vec![pg(16, 1, 5000.0)],
            pg_batch: vec![pg(4, 100, 500.0)],
            scale_out: vec![
                ScaleFigures {
                    http: http("scale-out: 1 collector → PgBouncer, single", 7500.0),
                    batch: false,
                    cpu: Some(cpu.clone()),
                },
                ScaleFigures {
                    http: http("scale-out: 1 collector → PgBouncer, batch", 25000.0),
                    batch: true,
                    cpu: None,
                },
            ],
            ..Default::default()
        };
        let md = results.markdown();
        assert!(md.contains("| 5 | scale-out: 1 collector → PgBouncer, single | 7500 events/s | 1.00 / 2.00 / 3.00 | 0 | 1.50× of A |"), "{md}");
        assert!(md.contains("| 5 | scale-out: 1 collector → PgBouncer, batch | 25000 rows/s | 1.00 / 2.00 / 3.00 | 0 | 0.50× of B |"), "{md}");
        assert!(
            md.contains("| scale-out: 1 collector → PgBouncer, single | 50 | 10 | – | 30 | 20 | 110 |"),
            "{md}"
        );
    }
}
