//! What the kernel says about a target process tree: CPU time (utime + stime) and resident memory.

use std::fs;

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second
/// for this interface whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// A process and the children it forked (nginx's workers), as one measured unit.
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    pub root: u32,
}

/// The `stat` fields after the command name, which may itself contain spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The children of `pid` (processes whose parent it is).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            // Field 4 of stat (index 1 after the name) is the parent pid.
            stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

impl Tree {
    fn pids(self) -> Vec<u32> {
        let mut all = vec![self.root];
        all.extend(children(self.root));
        all
    }

    /// User + system CPU seconds of the process and its children so far.
    pub fn cpu_seconds(self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(stat_fields)
            .map(|f| {
                // utime and stime are fields 14 and 15 (indices 11 and 12 after the name).
                let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                (tick(11) + tick(12)) as f64 / USER_HZ
            })
            .sum()
    }

    /// Resident set size of the process and its children, in bytes (`VmRSS`).
    pub fn rss_bytes(self) -> u64 {
        self.pids().into_iter().map(rss_of).sum()
    }

    /// Threads of the process and its children.
    pub fn threads(self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| status_field(p, "Threads:"))
            .sum()
    }
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn rss_of(pid: u32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or(0) * 1024
}

/// The 1-minute load average.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Descriptors this process has open now.
pub fn open_fds() -> u64 {
    fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}
