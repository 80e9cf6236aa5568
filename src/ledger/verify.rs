//! `ledger verify`: every line of the ledger files is a valid v1 record, and ids are unique.
//!
//! "Valid" is strict: unknown fields, missing fields, wrong types, a wrong `ocu_billable`
//! or a malformed id or timestamp are all problems, as are empty lines and a last line
//! without its newline.

use super::files::{for_each_line, ledger_files};
use super::id::decode;
use super::record::Record;
use std::fmt;
use std::path::{Path, PathBuf};

/// One bad line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What `ledger verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Lines that parse as records (duplicates and an unterminated last line included).
    pub records: u64,
    /// In file and line order; duplicates are reported at their later occurrence.
    pub problems: Vec<Problem>,
}

/// Checks the ledger at `path` and its rotated files. `Err` only when they cannot be read.
pub fn verify(path: &Path) -> Result<VerifyReport, String> {
    let files = ledger_files(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if files.is_empty() {
        return Err(format!("no ledger at {} (see ledger.path)", path.display()));
    }
    let mut records = 0;
    let mut problems = Vec::new();
    // (id, file index, line): sorted afterwards to find duplicates without a large map.
    let mut ids: Vec<(u128, u32, u32)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let mut problem = |line: usize, message: String| {
            problems.push(Problem {
                file: file.clone(),
                line,
                message,
            })
        };
        for_each_line(file, |line| {
            if line.bytes.is_empty() {
                problem(line.number, "empty line".into());
                return;
            }
            match serde_json::from_slice::<Record>(line.bytes) {
                Ok(rec) => {
                    records += 1;
                    if let Some(id) = decode(&rec.id) {
                        ids.push((id, index as u32, line.number as u32));
                    }
                }
                Err(e) => problem(line.number, format!("not a v1 record: {e}")),
            }
            if !line.terminated {
                problem(
                    line.number,
                    "last line has no newline (a write cut short; the sidecar drops it at start)"
                        .into(),
                );
            }
        })
        .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    ids.sort_unstable();
    for pair in ids.windows(2) {
        let (first, again) = (pair[0], pair[1]);
        if first.0 == again.0 {
            problems.push(Problem {
                file: files[again.1 as usize].clone(),
                line: again.2 as usize,
                message: format!(
                    "duplicate id (first at {}:{})",
                    files[first.1 as usize].display(),
                    first.2
                ),
            });
        }
    }
    // File order (oldest first), then line order.
    problems.sort_by_key(|p| (files.iter().position(|f| *f == p.file), p.line));
    Ok(VerifyReport {
        files,
        records,
        problems,
    })
}

/// Problems printed before the rest are only counted.
const MAX_LISTED: usize = 50;

/// `codex-sidecar ledger verify [--file F]`: `Ok` with a one-line result, or `Err` with
/// one bad line per output line (`file:line: why`) for exit 1.
pub fn run_verify(path: &Path) -> Result<String, String> {
    let report = verify(path)?;
    let files = report.files.len();
    if report.problems.is_empty() {
        return Ok(format!(
            "ok: {} records in {files} file{}, ids unique\n",
            report.records,
            if files == 1 { "" } else { "s" }
        ));
    }
    let mut out: String = report
        .problems
        .iter()
        .take(MAX_LISTED)
        .map(|p| format!("{p}\n"))
        .collect();
    if report.problems.len() > MAX_LISTED {
        out += &format!("... and {} more\n", report.problems.len() - MAX_LISTED);
    }
    out += &format!(
        "{} problem{} in {files} file{} ({} records parsed)\n",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" },
        if files == 1 { "" } else { "s" },
        report.records
    );
    Err(out)
}
