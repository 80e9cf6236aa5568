//! Group commit: fsync once per period when dirty, a final flush on close.

use super::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn syncs(ledger: &Ledger) -> u64 {
    ledger.syncs.load(Ordering::Acquire)
}

/// Lets the syncer task and its blocking fsync run (far less virtual time than a period).
async fn settle() {
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn syncs_once_per_period_only_when_dirty_and_flushes_on_close() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        Ledger::open(LedgerSettings {
            fsync: FsyncPolicy::Every(Duration::from_secs(10)),
            ..settings(&tmp.path().join("ledger.jsonl"))
        })
        .unwrap(),
    );
    let syncer = ledger.spawn_syncer().unwrap();

    ledger.append(&record(Billing::Org, None, None)).unwrap();
    ledger.append(&record(Billing::Org, None, None)).unwrap();
    settle().await;
    assert_eq!(syncs(&ledger), 0, "no fsync before the period ends");

    tokio::time::advance(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(syncs(&ledger), 1, "both records in one fsync");
    assert!(!ledger.dirty.load(Ordering::Acquire));

    tokio::time::advance(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(syncs(&ledger), 1, "nothing written: no fsync");

    ledger.append(&record(Billing::Org, None, None)).unwrap();
    ledger.close();
    syncer.await.unwrap();
    assert_eq!(syncs(&ledger), 2, "close flushes the last record");
}

#[tokio::test(start_paused = true)]
async fn the_syncer_ends_when_the_ledger_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(settings(&tmp.path().join("l.jsonl"))).unwrap());
    let syncer = ledger.spawn_syncer().unwrap();
    drop(ledger);
    tokio::time::timeout(Duration::from_secs(5), syncer)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn always_syncs_in_append_and_needs_no_syncer() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        Ledger::open(LedgerSettings {
            fsync: FsyncPolicy::Always,
            ..settings(&tmp.path().join("ledger.jsonl"))
        })
        .unwrap(),
    );
    assert!(ledger.spawn_syncer().is_none());
    ledger.append(&sample()).unwrap();
    assert_eq!(syncs(&ledger), 1);
    assert!(!ledger.dirty.load(Ordering::Acquire));
    ledger.flush();
    assert_eq!(syncs(&ledger), 1);
}

#[test]
fn flush_syncs_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(settings(&tmp.path().join("ledger.jsonl"))).unwrap();
    ledger.flush();
    assert_eq!(syncs(&ledger), 0);
    ledger.append(&sample()).unwrap();
    ledger.flush();
    assert_eq!(syncs(&ledger), 1);
}
