//! The writer: exact bytes, torn-line repair, rotation, concurrency, write errors.

use super::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_ledger_can_be_shared_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Ledger>();
}

#[test]
fn append_writes_the_exact_line_and_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state/ledger.jsonl");
    let ledger = Ledger::open(settings(&path)).unwrap();
    ledger.append(&sample()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), sample().to_line());
    let status = ledger.status();
    assert_eq!(
        status,
        LedgerStatus {
            path: path.display().to_string(),
            records: 1,
            errors: 0,
            writable: true,
            last_error: None,
        }
    );
    assert!(ledger.dirty.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(
        serde_json::to_string(&status).unwrap(),
        format!(
            r#"{{"path":"{}","records":1,"errors":0,"writable":true,"last_error":null}}"#,
            path.display()
        )
    );
}

#[test]
fn records_metric_is_labelled_by_billing() {
    let tmp = tempfile::tempdir().unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let ledger = Ledger::open(settings(&tmp.path().join("l.jsonl"))).unwrap();
    metrics::with_local_recorder(&recorder, || {
        ledger
            .append(&record(Billing::ChatgptPlan, None, None))
            .unwrap();
        ledger.append(&record(Billing::Org, None, None)).unwrap();
        ledger.append(&record(Billing::Org, None, None)).unwrap();
    });
    let text = handle.render();
    assert!(
        text.contains("codex_sidecar_ledger_records_total{billing=\"org\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("codex_sidecar_ledger_records_total{billing=\"chatgpt_plan\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("codex_sidecar_ledger_write_errors_total"),
        "{text}"
    );
}

#[test]
fn open_drops_a_torn_last_line_and_appends_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let first = sample().to_line();
    let second = record(Billing::Org, Some("m"), None).to_line();
    let mut content = [first.clone(), second.clone()].concat();
    content.extend_from_slice(&second[..40]); // a write cut short by a crash
    std::fs::write(&path, &content).unwrap();

    let ledger = Ledger::open(settings(&path)).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        [first.clone(), second.clone()].concat()
    );
    let third = record(Billing::ChatgptPlan, None, None);
    ledger.append(&third).unwrap();
    let records = read_records(&path);
    assert_eq!(records.len(), 3);
    assert_eq!(records[2], third);
}

#[test]
fn rotation_keeps_keep_files_and_never_splits_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let line_len = sample().to_line().len() as u64;
    let ledger = Ledger::open(LedgerSettings {
        rotate_bytes: 3 * line_len + 10, // three records a file
        keep: 2,
        ..settings(&path)
    })
    .unwrap();
    let written: Vec<Record> = (0..20)
        .map(|_| {
            let rec = Record {
                id: new_id(),
                ..sample()
            };
            ledger.append(&rec).unwrap();
            rec
        })
        .collect();
    // Files of 3 records: 1-3, …, 16-18 rotated away in turn; 19-20 live.
    assert_eq!(read_records(&path), written[18..20]);
    assert_eq!(read_records(&rotated_path(&path, 1)), written[15..18]);
    assert_eq!(read_records(&rotated_path(&path, 2)), written[12..15]);
    assert!(!rotated_path(&path, 3).exists());
    assert_eq!(
        ledger_files(&path).unwrap(),
        vec![rotated_path(&path, 2), rotated_path(&path, 1), path.clone()]
    );
    assert_eq!(ledger.status().records, 20);
    assert_eq!(ledger.status().errors, 0);
}

#[test]
fn a_record_larger_than_rotate_bytes_gets_a_file_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let ledger = Ledger::open(LedgerSettings {
        rotate_bytes: 10,
        keep: 5,
        ..settings(&path)
    })
    .unwrap();
    let a = record(Billing::Org, None, None);
    let b = record(Billing::Org, None, None);
    ledger.append(&a).unwrap();
    ledger.append(&b).unwrap();
    assert_eq!(read_records(&rotated_path(&path, 1)), vec![a]);
    assert_eq!(read_records(&path), vec![b]);
}

#[test]
fn rotation_with_keep_zero_deletes_the_old_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let ledger = Ledger::open(LedgerSettings {
        rotate_bytes: 10,
        keep: 0,
        ..settings(&path)
    })
    .unwrap();
    let b = record(Billing::Org, None, None);
    ledger.append(&record(Billing::Org, None, None)).unwrap();
    ledger.append(&b).unwrap();
    assert_eq!(ledger_files(&path).unwrap(), vec![path.clone()]);
    assert_eq!(read_records(&path), vec![b]);
}

#[test]
fn concurrent_appends_are_whole_lines_with_unique_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let ledger = Arc::new(
        Ledger::open(LedgerSettings {
            rotate_bytes: 64 * 1024, // rotate under load too
            keep: 100,
            ..settings(&path)
        })
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                for i in 0..250 {
                    let rec = Record {
                        id: new_id(),
                        session: format!("thread-{t}-{i}-{}", "x".repeat(i % 50)),
                        ..sample()
                    };
                    ledger.append(&rec).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut ids = HashSet::new();
    let mut sessions = HashSet::new();
    for file in ledger_files(&path).unwrap() {
        for rec in read_records(&file) {
            assert!(ids.insert(rec.id));
            sessions.insert(rec.session);
        }
    }
    assert_eq!(ids.len(), 2000);
    assert_eq!(sessions.len(), 2000);
    assert_eq!(ledger.status().records, 2000);
    assert!(
        ledger_files(&path).unwrap().len() > 1,
        "expected rotation under load"
    );
}

#[test]
fn dev_full_counts_errors_and_never_panics() {
    let path = Path::new("/dev/full");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let ledger = Ledger::open(LedgerSettings {
        rotate_bytes: 1, // rotation must not be tried on a device
        required: true,
        ..settings(path)
    })
    .unwrap();
    assert!(ledger.writable());
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            match ledger.append(&sample()) {
                Err(LedgerError::Write(e)) => assert_eq!(e.raw_os_error(), Some(28)), // ENOSPC
                other => panic!("{other:?}"),
            }
        }
    });
    assert!(!ledger.writable());
    let status = ledger.status();
    assert_eq!(status.records, 0);
    assert_eq!(status.errors, 3);
    assert!(!status.writable);
    assert_eq!(
        status.last_error.as_deref(),
        Some("cannot write ledger record: No space left on device (os error 28)")
    );
    let text = handle.render();
    assert!(
        text.contains("codex_sidecar_ledger_write_errors_total 3\n"),
        "{text}"
    );
    assert!(
        !text.contains("codex_sidecar_ledger_records_total"),
        "{text}"
    );
    ledger.flush(); // nothing dirty: no fsync, no error
    assert_eq!(ledger.status().errors, 3);
}

#[test]
fn an_unopenable_ledger_recovers_when_its_directory_can_be_made() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("state");
    std::fs::write(&blocker, "a file where the directory should be").unwrap();
    let path = blocker.join("ledger.jsonl");

    assert!(matches!(
        Ledger::open(settings(&path)),
        Err(LedgerError::Open { .. })
    ));
    let (mut ledger, err) = Ledger::open_lenient(settings(&path));
    assert!(err.is_some());
    assert!(!ledger.writable()); // the first probe runs at once, and fails
    assert!(matches!(
        ledger.append(&sample()),
        Err(LedgerError::Open { .. })
    ));
    assert_eq!(ledger.status().errors, 3); // open, probe, append

    std::fs::remove_file(&blocker).unwrap();
    ledger.set_probe_interval(Duration::from_secs(3600));
    assert!(!ledger.writable()); // probed recently: not again yet
    ledger.set_probe_interval(Duration::ZERO);
    assert!(ledger.writable());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0); // the probe wrote nothing
    ledger.append(&sample()).unwrap();
    assert_eq!(read_records(&path), vec![sample()]);
    assert!(ledger.status().writable);
}

#[test]
fn append_reopens_after_an_open_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("state");
    std::fs::write(&blocker, "").unwrap();
    let path = blocker.join("ledger.jsonl");
    let (ledger, _) = Ledger::open_lenient(settings(&path));
    std::fs::remove_file(&blocker).unwrap();
    ledger.append(&sample()).unwrap();
    assert!(ledger.status().writable);
    assert_eq!(read_records(&path), vec![sample()]);
}

/// Env var telling the child test where to work (see `a_partial_write_is_cut_off`).
const FSIZE_CHILD_DIR: &str = "CODEX_SIDECAR_TEST_FSIZE_DIR";

/// A real partial write: a file size limit (RLIMIT_FSIZE) lets the kernel take only part
/// of a record, as a filling disk would. The limit applies to the whole process, so it
/// runs in a child process (this test binary, running `fsize_child`).
#[test]
fn a_partial_write_is_cut_off_and_the_ledger_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ledger::tests::writer::fsize_child", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(FSIZE_CHILD_DIR, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    let records = read_records(&tmp.path().join("ledger.jsonl"));
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].session, "before-the-limit");
    assert_eq!(records[1].session, "after-the-limit");
}

#[test]
#[ignore = "run by a_partial_write_is_cut_off_and_the_ledger_recovers in a child process"]
fn fsize_child() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let Some(dir) = std::env::var_os(FSIZE_CHILD_DIR) else {
        return;
    };
    // Exceeding the limit raises SIGXFSZ, which would kill the process: handle it instead.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _sigxfsz = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)).unwrap()
    });
    let path = std::path::PathBuf::from(dir).join("ledger.jsonl");
    let mut ledger = Ledger::open(settings(&path)).unwrap();
    ledger.set_probe_interval(Duration::ZERO);
    let first = Record {
        session: "before-the-limit".into(),
        ..sample()
    };
    ledger.append(&first).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();

    let original = getrlimit(Resource::Fsize);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(size + 100), // part of the next record fits
            maximum: original.maximum,
        },
    )
    .unwrap();
    let lost = Record {
        id: new_id(),
        session: "hits-the-limit".into(),
        ..sample()
    };
    match ledger.append(&lost) {
        Err(LedgerError::Write(e)) => assert_eq!(e.raw_os_error(), Some(27)), // EFBIG
        other => panic!("{other:?}"),
    }
    // The partial line was cut off again: the file is exactly as before.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let status = ledger.status();
    assert!(!status.writable);
    assert_eq!(
        status.last_error.as_deref(),
        Some("cannot write ledger record: File too large (os error 27)")
    );

    setrlimit(Resource::Fsize, original).unwrap();
    assert!(ledger.writable());
    let second = Record {
        id: new_id(),
        session: "after-the-limit".into(),
        ..sample()
    };
    ledger.append(&second).unwrap();
    assert_eq!(read_records(&path), vec![first, second]);
    assert_eq!(ledger.status().errors, 1);
}
