//! The database's own ceiling, measured with `pgbench` as the writer role: the same
//! SQL functions the collector calls, with prepared statements (as sqlx uses them).
//! Every call carries fresh event ids (`gen_random_uuid()`), so nothing is a duplicate.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One `log_event` call per transaction.
pub const SINGLE_SCRIPT: &str = "SELECT log_event(false, gen_random_uuid(), now(), \
'0cc175b9c0f1b6a831c399e269772661', 'gateway', 'beginner', '1A', 'pgbench answer / café');\n";

/// One `log_events_v5` call (the function the collector's group commit uses) with
/// `size` rows per transaction, each with a learner id as the SDK sends it.
pub fn batch_script(size: usize) -> String {
    batch_script_for("log_events_v5", size)
}

/// The write ceiling's anchor: the same rows through `log_events_v2` (sql/0003), the
/// group-write function before learner ids and read indexes, on a database migrated
/// only that far. Issue 12 allows the ceiling to drop by at most 5 % from it.
pub fn anchor_batch_script(size: usize) -> String {
    batch_script_for("log_events_v2", size)
}

fn batch_script_for(function: &str, size: usize) -> String {
    let fill = |value: &str, ty: &str| format!("array_fill({value}::{ty}, ARRAY[{size}])");
    let mut arrays = vec![
        fill("false", "boolean"),
        format!("ARRAY(SELECT gen_random_uuid() FROM generate_series(1, {size}))"),
        fill("now()", "timestamptz"),
        fill("'0cc175b9c0f1b6a831c399e269772661'", "text"),
        fill("'gateway'", "text"),
        fill("'beginner'", "text"),
        fill("'1A'", "text"),
        fill("'pgbench batch answer / café'", "text"),
    ];
    if function != "log_events_v2" {
        arrays.push(fill("'0b6f3c1e-8f1d-4b7a-9c2e-5d4f3a2b1c0d'", "uuid"));
    }
    if function == "log_events_v2" {
        // A set of (event_index, status) rows.
        format!("SELECT count(*) FROM {function}({});\n", arrays.join(", "))
    } else {
        // One array of verdicts (sql/0008).
        format!("SELECT cardinality({function}({}));\n", arrays.join(", "))
    }
}

/// Where and as whom pgbench connects.
pub struct Target<'a> {
    pub bin_dir: &'a Path,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

#[derive(Clone, Debug)]
pub struct PgbenchRun {
    pub clients: u32,
    pub rows_per_transaction: u64,
    pub transactions: u64,
    pub tps: f64,
    pub latency_avg_ms: f64,
}

impl PgbenchRun {
    pub fn rows_per_sec(&self) -> f64 {
        self.tps * self.rows_per_transaction as f64
    }
}

/// Run `script` for `duration` with `clients` connections and parse pgbench's summary.
pub fn run(
    target: &Target,
    script: &Path,
    rows_per_transaction: u64,
    clients: u32,
    duration: Duration,
) -> Result<PgbenchRun> {
    let pgbench: PathBuf = target.bin_dir.join("pgbench");
    let mut cmd = Command::new(&pgbench);
    cmd.args(["-n", "-M", "prepared"])
        .arg("-f")
        .arg(script)
        .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .args(["-h", "127.0.0.1", "-p", &target.port.to_string(), "-U", target.user])
        .arg(target.database)
        .env("PGPASSWORD", target.password);
    let out = cmd
        .output()
        .with_context(|| format!("could not start {}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout, clients, rows_per_transaction).with_context(|| format!("unexpected pgbench output:\n{stdout}"))
}

fn parse(stdout: &str, clients: u32, rows_per_transaction: u64) -> Result<PgbenchRun> {
    let after = |prefix: &str| -> Option<&str> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let first_number = |s: &str| -> Option<f64> { s.split_whitespace().next()?.parse().ok() };
    let transactions = after("number of transactions actually processed:")
        .and_then(|s| s.split('/').next()?.trim().parse().ok())
        .context("no transaction count")?;
    if let Some(failed) = after("number of failed transactions:").and_then(first_number) {
        if failed > 0.0 {
            bail!("{failed} pgbench transactions failed");
        }
    }
    let tps = after("tps =").and_then(first_number).context("no tps")?;
    let latency_avg_ms = after("latency average =").and_then(first_number).unwrap_or(f64::NAN);
    Ok(PgbenchRun {
        clients,
        rows_per_transaction,
        transactions,
        tps,
        latency_avg_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_summary() {
        let text = "transaction type: single.sql\nscaling factor: 1\nquery mode: prepared\n\
number of clients: 4\nnumber of threads: 2\nmaximum number of tries: 1\nduration: 5 s\n\
number of transactions actually processed: 1234\nnumber of failed transactions: 0 (0.000%)\n\
latency average = 16.2 ms\ninitial connection time = 12.3 ms\ntps = 246.8 (without initial connection time)\n";
        let run = parse(text, 4, 100).unwrap();
        assert_eq!(run.transactions, 1234);
        assert_eq!(run.tps, 246.8);
        assert_eq!(run.latency_avg_ms, 16.2);
        assert_eq!(run.rows_per_sec(), 24680.0);
    }

    #[test]
    fn batch_script_fills_every_array() {
        let s = batch_script(100);
        // The table flags, the six value arrays and the learner ids (event ids come from generate_series).
        assert_eq!(s.matches("ARRAY[100]").count(), 8);
        assert!(s.starts_with("SELECT cardinality(log_events_v5("));
        assert!(s.contains("generate_series(1, 100)"));
        let anchor = anchor_batch_script(100);
        assert!(anchor.starts_with("SELECT count(*) FROM log_events_v2("));
        assert_eq!(
            anchor.matches("ARRAY[100]").count(),
            7,
            "no learner ids before sql/0004"
        );
    }
}
