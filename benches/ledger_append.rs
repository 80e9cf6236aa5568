//! Cost of one ledger append (serialize + one `write(2)` on an `O_APPEND` file), per fsync policy.

use codex_sidecar::billing::Billing;
use codex_sidecar::ledger::{
    new_id, FsyncPolicy, Ledger, LedgerSettings, Outcome, Record, Route, Timestamp,
};
use codex_sidecar::usage::Usage;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

/// A completed streamed turn billed to the org, as the proxy writes it.
fn record() -> Record {
    let now = Timestamp::now();
    Record {
        id: new_id(),
        ts: now,
        started: Timestamp::from_unix_ms(now.unix_ms().saturating_sub(812)),
        session: "0199a3c2-6f1e-7d40-9b8a-3c5e2f1d0a47".into(),
        billing: Billing::Org,
        route: Route::Responses,
        model: Some("gpt-5.4".into()),
        status: 200,
        outcome: Outcome::Completed,
        usage: Some(Usage {
            input: 48_213,
            cached_input: 40_960,
            output: 3_517,
            reasoning: 1_216,
            total: 51_730,
        }),
        upstream_request_id: Some("req_6a1f0c9e2b7d4e58a3c1f2e0d9b8a7c6".into()),
        duration_ms: 812,
        first_byte_ms: Some(95),
        limit: None,
        account: None,
    }
}

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Option<Ledger> {
    let settings = LedgerSettings {
        path: dir.join("ledger.jsonl"),
        fsync,
        // Rotation stays on (its size check is part of every append) and bounds the disk used.
        rotate_bytes: 64 * 1024 * 1024,
        keep: 2,
        required: false,
    };
    match Ledger::open(settings) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "ledger_append: cannot open a ledger in {}: {e}",
                dir.display()
            );
            None
        }
    }
}

fn append(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("ledger_append: cannot create a temporary directory");
        return;
    };
    let mut group = c.benchmark_group("ledger_append");
    group.throughput(Throughput::Elements(1));
    if let Some(ledger) = open(dir.path(), FsyncPolicy::Every(Duration::from_secs(1))) {
        // The default policy: the fsync happens in the background syncer, not here.
        group.bench_function("group_commit", |b| {
            b.iter(|| ledger.append(&record()).is_ok())
        });
        group.bench_function("to_line_only", |b| b.iter(|| record().to_line()));
    }
    let always = dir.path().join("always");
    if std::fs::create_dir(&always).is_ok() {
        if let Some(ledger) = open(&always, FsyncPolicy::Always) {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(3));
            group.bench_function("fsync_always", |b| {
                b.iter(|| ledger.append(&record()).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
