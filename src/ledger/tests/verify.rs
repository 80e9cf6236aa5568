//! `ledger verify`: strict per-line checks, duplicates across files, exact messages.

use super::*;

#[test]
fn a_good_ledger_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let ledger = Ledger::open(LedgerSettings {
        rotate_bytes: 2000,
        ..settings(&path)
    })
    .unwrap();
    for _ in 0..20 {
        ledger
            .append(&record(Billing::Org, Some("m"), None))
            .unwrap();
    }
    let files = ledger_files(&path).unwrap().len();
    assert_eq!(files, 4); // the live file and keep = 3 rotated
    let report = verify(&path).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        run_verify(&path).unwrap(),
        format!("ok: {} records in 4 files, ids unique\n", report.records)
    );
}

#[test]
fn names_each_bad_line_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let old = rotated_path(&path, 1);
    let dup = record(Billing::Org, None, None);
    std::fs::write(&old, dup.to_line()).unwrap();

    let good = String::from_utf8(sample().to_line()).unwrap();
    let lines = [
        good.clone(),                                                        // 1
        good.replacen("\"limit\":null", "\"limit\":null,\"cost\":1", 1),     // 2
        good.replacen("\"ocu_billable\":false", "\"ocu_billable\":true", 1), // 3
        "\n".to_owned(),                                                     // 4
        String::from_utf8(dup.to_line()).unwrap(),                           // 5
        good.replacen(&sample().id, &new_id(), 1)
            .trim_end()
            .to_owned(), // 6, torn
    ];
    std::fs::write(&path, lines.concat()).unwrap();

    let report = verify(&path).unwrap();
    assert_eq!(report.records, 4); // .1:1, and lines 1, 5 and 6 (unterminated, but whole)
    let listed: Vec<(usize, &str)> = report
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(report.problems.iter().all(|p| p.file == path));
    assert_eq!(listed[0].0, 2);
    assert!(
        listed[0]
            .1
            .starts_with("not a v1 record: unknown field `cost`"),
        "{}",
        listed[0].1
    );
    assert_eq!(listed[1].0, 3);
    assert!(
        listed[1]
            .1
            .starts_with("not a v1 record: ocu_billable is true but billing is \"chatgpt_plan\""),
        "{}",
        listed[1].1
    );
    assert_eq!(listed[2], (4, "empty line"));
    assert_eq!(
        listed[3],
        (
            5,
            format!("duplicate id (first at {}:1)", old.display()).as_str()
        )
    );
    assert_eq!(
        listed[4],
        (
            6,
            "last line has no newline (a write cut short; the sidecar drops it at start)"
        )
    );

    let out = run_verify(&path).unwrap_err();
    let out_lines: Vec<&str> = out.lines().collect();
    assert_eq!(out_lines.len(), 6);
    assert_eq!(out_lines[2], format!("{}:4: empty line", path.display()));
    assert_eq!(out_lines[5], "5 problems in 2 files (4 records parsed)");
}

#[test]
fn long_problem_lists_are_cut_with_a_count() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    std::fs::write(&path, "{}\n".repeat(60)).unwrap();
    let out = run_verify(&path).unwrap_err();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 52);
    assert_eq!(
        lines[0],
        format!(
            "{}:1: not a v1 record: missing field `v` at line 1 column 2",
            path.display()
        )
    );
    assert_eq!(lines[50], "... and 10 more");
    assert_eq!(lines[51], "60 problems in 1 file (0 records parsed)");
}

#[test]
fn a_missing_ledger_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("none.jsonl");
    assert_eq!(
        run_verify(&path).unwrap_err(),
        format!("no ledger at {} (see ledger.path)", path.display())
    );
}
