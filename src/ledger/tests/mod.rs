//! Ledger tests: exact record bytes, strict reading, the writer's durability and failure
//! paths, group commit, summary, verify, and the JSON Schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod record;
mod schema;
mod summary;
mod syncer;
mod verify;
mod writer;

use super::*;
use crate::billing::Billing;
use crate::usage::Usage;
use std::path::Path;

/// A fixed record: ChatGPT plan, completed, with usage (SPEC's example values).
pub(super) fn sample() -> Record {
    Record {
        id: "01JQ7ZK3M4N5P6Q7R8S9TVWXYZ".into(),
        ts: Timestamp::from_unix_ms(1_764_000_000_907),
        started: Timestamp::from_unix_ms(1_764_000_000_095),
        session: "sess-1".into(),
        billing: Billing::ChatgptPlan,
        route: Route::Responses,
        model: Some("gpt-5.4".into()),
        status: 200,
        outcome: Outcome::Completed,
        usage: Some(Usage {
            input: 1234,
            cached_input: 1000,
            output: 56,
            reasoning: 7,
            total: 1290,
        }),
        upstream_request_id: Some("req_abc".into()),
        duration_ms: 812,
        first_byte_ms: Some(95),
        limit: None,
        account: None,
    }
}

/// A record with a fresh id and the given billing, model and usage.
pub(super) fn record(billing: Billing, model: Option<&str>, usage: Option<Usage>) -> Record {
    Record {
        id: new_id(),
        billing,
        model: model.map(str::to_owned),
        usage,
        ..sample()
    }
}

pub(super) fn usage(input: u64, cached: u64, output: u64, reasoning: u64, total: u64) -> Usage {
    Usage {
        input,
        cached_input: cached,
        output,
        reasoning,
        total,
    }
}

pub(super) fn settings(path: &Path) -> LedgerSettings {
    LedgerSettings {
        path: path.to_path_buf(),
        fsync: FsyncPolicy::Every(std::time::Duration::from_secs(1)),
        rotate_bytes: 0,
        keep: 3,
        required: false,
    }
}

/// Every line of a file, parsed strictly (fails the test on a bad line).
pub(super) fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
