//! `ledger summary`: requests and tokens per billing source and model, from the ledger files.
//!
//! Reads the live file and its rotated files (a snapshot: a rotation while it reads may
//! count a file twice or miss one). Lines that do not parse are skipped and counted;
//! `ledger verify` says what is wrong with them.

use super::files::{for_each_line, ledger_files};
use super::record::Record;
use super::time::Timestamp;
use crate::billing::Billing;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Requests and token sums of a group of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    /// Requests whose upstream reported no usage (`usage: null`).
    pub without_usage: u64,
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}

impl Totals {
    fn add(&mut self, rec: &Record) {
        self.requests += 1;
        match &rec.usage {
            Some(u) => {
                self.input = self.input.saturating_add(u.input);
                self.cached_input = self.cached_input.saturating_add(u.cached_input);
                self.output = self.output.saturating_add(u.output);
                self.reasoning = self.reasoning.saturating_add(u.reasoning);
                self.total = self.total.saturating_add(u.total);
            }
            None => self.without_usage += 1,
        }
    }
}

/// One billing source and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelRow {
    pub billing: Billing,
    /// `None` for records without a model (e.g. rejected before the upstream answered).
    pub model: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One billing source, all models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BillingRow {
    pub billing: Billing,
    pub ocu_billable: bool,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The result of `ledger summary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files read, oldest first.
    pub files: Vec<String>,
    pub since: Option<Timestamp>,
    /// Records counted (ended at or after `since`).
    pub records: u64,
    /// Lines skipped because they are not valid records.
    pub unreadable_lines: u64,
    /// Sorted by billing source, then model.
    pub by_model: Vec<ModelRow>,
    /// Both sources, always (zeros when there were none).
    pub by_billing: Vec<BillingRow>,
    /// What OCU metering bills: the records with `ocu_billable: true`.
    pub ocu_billable: Totals,
}

/// Summarizes the ledger at `path` (and its rotated files), counting records whose end
/// time `ts` is at or after `since`.
pub fn summarize(path: &Path, since: Option<Timestamp>) -> Result<Summary, String> {
    let files = ledger_files(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if files.is_empty() {
        return Err(format!("no ledger at {} (see ledger.path)", path.display()));
    }
    let mut groups: BTreeMap<(Billing, Option<String>), Totals> = BTreeMap::new();
    let mut records = 0;
    let mut unreadable_lines = 0;
    for file in &files {
        for_each_line(file, |line| {
            match serde_json::from_slice::<Record>(line.bytes) {
                Ok(rec) if line.terminated => {
                    if since.is_none_or(|s| rec.ts >= s) {
                        records += 1;
                        groups
                            .entry((rec.billing, rec.model.clone()))
                            .or_default()
                            .add(&rec);
                    }
                }
                // An unterminated last line may be a write in progress: not yet a record.
                _ => unreadable_lines += 1,
            }
        })
        .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let by_billing: Vec<BillingRow> = Billing::ALL
        .iter()
        .map(|&billing| {
            let mut totals = Totals::default();
            for ((b, _), t) in &groups {
                if *b == billing {
                    totals = sum(totals, *t);
                }
            }
            BillingRow {
                billing,
                ocu_billable: billing.ocu_billable(),
                totals,
            }
        })
        .collect();
    let ocu_billable = by_billing
        .iter()
        .filter(|r| r.ocu_billable)
        .fold(Totals::default(), |acc, r| sum(acc, r.totals));
    Ok(Summary {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        since,
        records,
        unreadable_lines,
        by_model: groups
            .into_iter()
            .map(|((billing, model), totals)| ModelRow {
                billing,
                model,
                totals,
            })
            .collect(),
        by_billing,
        ocu_billable,
    })
}

fn sum(a: Totals, b: Totals) -> Totals {
    Totals {
        requests: a.requests + b.requests,
        without_usage: a.without_usage + b.without_usage,
        input: a.input.saturating_add(b.input),
        cached_input: a.cached_input.saturating_add(b.cached_input),
        output: a.output.saturating_add(b.output),
        reasoning: a.reasoning.saturating_add(b.reasoning),
        total: a.total.saturating_add(b.total),
    }
}

impl Summary {
    /// Pretty JSON, for scripts (`--json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// An aligned table, for people.
    pub fn to_table(&self) -> String {
        let mut out = match self.files.split_last() {
            Some((live, [])) => format!("ledger: {live}"),
            Some((live, rotated)) => format!("ledger: {live} (+{} rotated)", rotated.len()),
            None => "ledger: (no files)".to_owned(),
        };
        if let Some(since) = self.since {
            out += &format!("\nsince:  {since}");
        }
        out += &format!("\nrecords: {}\n\n", self.records);
        let mut rows: Vec<Vec<String>> = vec![[
            "billing",
            "model",
            "requests",
            "no_usage",
            "input",
            "cached_input",
            "output",
            "reasoning",
            "total",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()];
        let row = |label: &str, model: &str, t: &Totals| {
            let mut r = vec![label.to_owned(), model.to_owned()];
            r.extend(
                [
                    t.requests,
                    t.without_usage,
                    t.input,
                    t.cached_input,
                    t.output,
                    t.reasoning,
                    t.total,
                ]
                .iter()
                .map(u64::to_string),
            );
            r
        };
        for m in &self.by_model {
            rows.push(row(
                m.billing.as_str(),
                m.model.as_deref().unwrap_or("-"),
                &m.totals,
            ));
        }
        for b in &self.by_billing {
            rows.push(row(b.billing.as_str(), "(all)", &b.totals));
        }
        rows.push(row("ocu_billable", "(all)", &self.ocu_billable));
        out += &align(&rows);
        if self.unreadable_lines > 0 {
            out += &format!(
                "\nwarning: {} unreadable lines skipped (run `codex-sidecar ledger verify`)\n",
                self.unreadable_lines
            );
        }
        out
    }
}

/// Left-aligns the first two columns and right-aligns the numbers.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// `--since`: an RFC 3339 time (`2025-11-24T16:00:00Z`, `…+02:00`, or a date
/// `2025-11-24` meaning midnight UTC), or a duration ago (`24h`, `7days`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(Timestamp::from(
            now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    parse_rfc3339_any_offset(s).ok_or_else(|| {
        format!(
            "--since {s:?}: expected an RFC 3339 time (2025-11-24T16:00:00Z) or a duration ago (24h)"
        )
    })
}

fn parse_rfc3339_any_offset(s: &str) -> Option<Timestamp> {
    if s.len() == 10 {
        return parse_rfc3339_any_offset(&format!("{s}T00:00:00Z"));
    }
    let b = s.as_bytes();
    // A numeric offset "+HH:MM" / "-HH:MM": parse the local time as UTC, then shift.
    let offset_at = s.len().checked_sub(6)?;
    let (local, shift) = match (b.get(offset_at), b.get(offset_at + 3)) {
        (Some(sign @ (b'+' | b'-')), Some(b':')) if offset_at >= 19 => {
            let hours: u64 = s.get(offset_at + 1..offset_at + 3)?.parse().ok()?;
            let minutes: u64 = s.get(offset_at + 4..)?.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = Duration::from_secs(hours * 3600 + minutes * 60);
            (s.get(..offset_at)?, Some((*sign == b'+', secs)))
        }
        _ => (s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?, None),
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let utc = match shift {
        // Local time is ahead of UTC by the offset: subtract it.
        Some((true, d)) => t.checked_sub(d)?,
        Some((false, d)) => t.checked_add(d)?,
        None => t,
    };
    Some(Timestamp::from(utc))
}

/// `codex-sidecar ledger summary [--file F] [--since T] [--json]`: the text to print,
/// or an error message (exit 1).
pub fn run_summary(path: &Path, since: Option<&str>, json: bool) -> Result<String, String> {
    let since = since
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()?;
    let summary = summarize(path, since)?;
    Ok(if json {
        summary.to_json()
    } else {
        summary.to_table()
    })
}
