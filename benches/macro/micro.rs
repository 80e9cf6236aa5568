//! The micro benchmarks' figures, read back from criterion's output (`target/criterion`).

use std::path::{Path, PathBuf};

pub struct MicroRow {
    /// `group/function[/parameter]`, as criterion names it.
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Bytes per iteration, when the benchmark declared them.
    pub bytes: Option<f64>,
}

impl MicroRow {
    /// MB/s (10^6 bytes per second) at the median.
    pub fn mb_per_s(&self) -> Option<f64> {
        self.bytes.map(|b| b / self.median_ns * 1e3)
    }
}

fn json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") && p.join("estimates.json").exists() {
                found.push(p);
            } else {
                walk(&p, found);
            }
        }
    }
}

/// Every benchmark criterion last measured under `dir`, sorted by id.
pub fn read(dir: &Path) -> Vec<MicroRow> {
    let mut dirs = Vec::new();
    walk(dir, &mut dirs);
    let mut rows: Vec<MicroRow> = dirs
        .iter()
        .filter_map(|d| {
            let bench = json(&d.join("benchmark.json"))?;
            let est = json(&d.join("estimates.json"))?;
            Some(MicroRow {
                id: bench["full_id"].as_str()?.to_owned(),
                median_ns: est["median"]["point_estimate"].as_f64()?,
                bytes: bench["throughput"]["Bytes"].as_f64(),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}
