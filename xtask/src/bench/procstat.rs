//! CPU time of processes and process trees from `/proc/PID/stat`: where the cores go
//! during a benchmark run. A tree counts its live processes' own time plus the time of
//! children they already reaped (cutime + cstime), so PostgreSQL backends that exit
//! during a run (PgBouncer closing a server connection) keep their share.

use std::collections::HashMap;

/// The fields of one `/proc/PID/stat` line the benchmark needs, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime: this process (all its threads).
    pub own_ticks: u64,
    /// cutime + cstime: children it has waited for.
    pub reaped_children_ticks: u64,
}

/// Parse one `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find(" (")?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt,
    // cminflt, majflt, cmajflt, utime (11), stime, cutime, cstime (14).
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { fields.get(i)?.parse::<i64>().ok().map(|v| v.max(0) as u64) };
    Some(ProcStat {
        pid,
        ppid: num(1)? as u32,
        own_ticks: num(11)? + num(12)?,
        reaped_children_ticks: num(13)? + num(14)?,
    })
}

/// Every readable process now (processes that vanish while reading are skipped).
pub fn snapshot() -> Vec<ProcStat> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            out.push(stat);
        }
    }
    out
}

/// Ticks of `root` and all its descendants (0 when `root` is not in `procs`).
pub fn tree_ticks(procs: &[ProcStat], root: u32) -> u64 {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut total = 0;
    let mut stack: Vec<&ProcStat> = procs.iter().filter(|p| p.pid == root).collect();
    while let Some(p) = stack.pop() {
        total += p.own_ticks + p.reaped_children_ticks;
        if p.pid != 0 {
            stack.extend(children.get(&p.pid).into_iter().flatten().filter(|c| c.pid != p.pid));
        }
    }
    total
}

/// utime + stime of one process only (0 when absent).
pub fn own_ticks(procs: &[ProcStat], pid: u32) -> u64 {
    procs.iter().find(|p| p.pid == pid).map_or(0, |p| p.own_ticks)
}

pub fn ticks_to_ms(ticks: u64) -> f64 {
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / per_sec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pid: u32, comm: &str, ppid: u32, utime: u64, stime: u64, cutime: u64, cstime: u64) -> String {
        format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 123 456 78 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    #[test]
    fn parses_fields_after_a_name_with_spaces_and_parentheses() {
        let s = parse_stat(&line(
            4242,
            "postgres: hourofciuser hourofci 127.0.0.1(5432) idle",
            17,
            30,
            12,
            500,
            7,
        ))
        .unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                ppid: 17,
                own_ticks: 42,
                reaped_children_ticks: 507
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_stat("12 (short) S 1 2 3"),
            None,
            "a truncated line is not read as zeros"
        );
    }

    #[test]
    fn parses_a_real_line_of_this_process() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&text).unwrap();
        assert_eq!(s.pid, std::process::id());
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
    }

    #[test]
    fn a_tree_sums_descendants_and_reaped_children_but_not_strangers() {
        let procs: Vec<ProcStat> = [
            line(10, "postgres", 1, 5, 5, 100, 0),  // postmaster; reaped backends: 100
            line(11, "postgres", 10, 20, 0, 0, 0),  // backend
            line(12, "postgres", 10, 0, 30, 0, 0),  // backend
            line(13, "postgres", 12, 1, 1, 0, 0),   // a grandchild
            line(20, "postgres", 1, 1000, 0, 0, 0), // another cluster's postmaster
            line(21, "postgres", 20, 1000, 0, 0, 0),
        ]
        .iter()
        .map(|l| parse_stat(l).unwrap())
        .collect();
        assert_eq!(tree_ticks(&procs, 10), 10 + 100 + 20 + 30 + 2);
        assert_eq!(tree_ticks(&procs, 12), 32);
        assert_eq!(tree_ticks(&procs, 99), 0, "a process that is gone counts nothing");
        assert_eq!(own_ticks(&procs, 10), 10);
    }
}
