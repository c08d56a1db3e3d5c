//! Where the machine's CPU went during a measured window: each process' user + system time
//! (`/proc/<pid>/stat`), grouped by program, the time of the children each process reaped in
//! the window (short-lived helpers such as `ip`, `nsenter` or a CNI plugin show up in their
//! parent's account), and the machine's busy time (`/proc/stat`), which includes whatever else
//! ran on the machine meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

/// CPU readings of every process and of the machine at one moment.
pub struct Snapshot {
    at: Instant,
    /// By PID: the process' group name, its own CPU seconds and its reaped children's.
    procs: HashMap<u32, (String, f64, f64)>,
    /// Busy CPU seconds of the machine since boot (all cores).
    busy: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// The group a process is counted in: its command name, and for a `wyvern` binary its
/// subcommand (`wyvern agent`, `wyvern server`, `wyvern k8s`).
fn group(pid: u32, comm: &str) -> String {
    if comm != "wyvern" {
        return comm.to_owned();
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    match cmdline.split(|b| *b == 0).nth(1) {
        Some(sub) if !sub.is_empty() => format!("wyvern {}", String::from_utf8_lossy(sub)),
        _ => comm.to_owned(),
    }
}

/// One process' group, own CPU seconds and reaped children's CPU seconds.
fn process(pid: u32, hz: f64) -> Option<(String, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let own = tick(11)? + tick(12)?;
    let children = tick(13)? + tick(14)?;
    Some((group(pid, comm), own / hz, children / hz))
}

/// The machine's busy CPU seconds since boot: all but idle and I/O wait, over all cores.
fn machine_busy(hz: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / hz
}

/// Reads every process and the machine now.
pub fn snapshot() -> Snapshot {
    let hz = ticks_per_second();
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, process(pid, hz)?)))
        .collect();
    Snapshot {
        at: Instant::now(),
        procs,
        busy: machine_busy(hz),
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The CPU used since `before`, by group (largest first): processes alive at both readings
/// count their difference, processes started meanwhile all their time; each group also shows
/// the time of the children its processes reaped meanwhile. `per` divides the totals into a
/// per-item figure in milliseconds (per pod, per port).
pub fn since(before: &Snapshot, per: usize) -> Value {
    let now = snapshot();
    let mut groups: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (pid, (name, own, children)) in &now.procs {
        let (own0, children0) = match before.procs.get(pid) {
            Some((n, o, c)) if n == name => (*o, *c),
            _ => (0.0, 0.0),
        };
        let g = groups.entry(name.clone()).or_default();
        g.0 += (own - own0).max(0.0);
        g.1 += (children - children0).max(0.0);
    }
    let mut rows: Vec<(String, f64, f64)> = groups
        .into_iter()
        .map(|(n, (o, c))| (n, o, c))
        .filter(|(_, o, c)| o + c >= 0.005)
        .collect();
    rows.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    let seconds = now.at.duration_since(before.at).as_secs_f64();
    let busy = now.busy - before.busy;
    let per = per.max(1) as f64;
    json!({
        "window_seconds": round(seconds),
        "machine_busy_cpu_seconds": round(busy),
        "machine_busy_ms_per_item": round(busy * 1000.0 / per),
        "by_program": rows.iter().map(|(name, own, children)| json!({
            "program": name,
            "cpu_seconds": round(*own),
            "reaped_children_cpu_seconds": round(*children),
            "ms_per_item": round((own + children) * 1000.0 / per),
        })).collect::<Vec<_>>(),
    })
}
