//! `ledger summary` on a fixture with a rotated file and a bad line.

use super::*;
use std::io::Write;

/// Live file: two ChatGPT-plan records, two org ones (one without model or usage), and a
/// line that is not a record; `.1`: one older org record.
fn fixture(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledger.jsonl");
    let older = Record {
        ts: Timestamp::parse_strict("2025-11-23T00:00:00Z").unwrap(),
        ..record(
            Billing::Org,
            Some("gpt-5.4-mini"),
            Some(usage(10, 0, 5, 0, 15)),
        )
    };
    std::fs::write(rotated_path(&path, 1), older.to_line()).unwrap();
    let rejected = Record {
        status: 503,
        outcome: Outcome::Rejected,
        ..record(Billing::Org, None, None)
    };
    let mut live = std::fs::File::create(&path).unwrap();
    for rec in [
        record(
            Billing::ChatgptPlan,
            Some("gpt-5.4"),
            Some(usage(100, 80, 10, 2, 110)),
        ),
        record(
            Billing::ChatgptPlan,
            Some("gpt-5.4"),
            Some(usage(200, 0, 20, 5, 220)),
        ),
        record(
            Billing::Org,
            Some("gpt-5.4"),
            Some(usage(1000, 500, 50, 0, 1050)),
        ),
        rejected,
    ] {
        live.write_all(&rec.to_line()).unwrap();
    }
    live.write_all(b"not json\n").unwrap();
    path
}

#[test]
fn table_per_billing_source_and_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture(tmp.path());
    let table = run_summary(&path, None, false).unwrap();
    let expected = [
        &format!("ledger: {} (+1 rotated)\n", path.display()),
        "records: 5\n",
        "\n",
        "billing       model         requests  no_usage  input  cached_input  output  reasoning  total\n",
        "chatgpt_plan  gpt-5.4              2         0    300            80      30          7    330\n",
        "org           -                    1         1      0             0       0          0      0\n",
        "org           gpt-5.4              1         0   1000           500      50          0   1050\n",
        "org           gpt-5.4-mini         1         0     10             0       5          0     15\n",
        "chatgpt_plan  (all)                2         0    300            80      30          7    330\n",
        "org           (all)                3         1   1010           500      55          0   1065\n",
        "ocu_billable  (all)                3         1   1010           500      55          0   1065\n",
        "\n",
        "warning: 1 unreadable lines skipped (run `codex-sidecar ledger verify`)\n",
    ]
    .concat();
    assert_eq!(table, expected);
}

#[test]
fn since_leaves_out_older_records_and_json_has_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture(tmp.path());
    let json = run_summary(&path, Some("2025-11-24T00:00:00Z"), true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["since"], "2025-11-24T00:00:00.000Z");
    assert_eq!(v["records"], 4);
    assert_eq!(v["unreadable_lines"], 1);
    assert_eq!(
        v["files"],
        serde_json::json!([
            rotated_path(&path, 1).display().to_string(),
            path.display().to_string()
        ])
    );
    assert_eq!(
        v["by_billing"],
        serde_json::json!([
            {"billing": "chatgpt_plan", "ocu_billable": false, "requests": 2, "without_usage": 0,
             "input": 300, "cached_input": 80, "output": 30, "reasoning": 7, "total": 330},
            {"billing": "org", "ocu_billable": true, "requests": 2, "without_usage": 1,
             "input": 1000, "cached_input": 500, "output": 50, "reasoning": 0, "total": 1050},
        ])
    );
    assert_eq!(
        v["ocu_billable"],
        serde_json::json!({"requests": 2, "without_usage": 1, "input": 1000,
            "cached_input": 500, "output": 50, "reasoning": 0, "total": 1050})
    );
    assert_eq!(
        v["by_model"][0],
        serde_json::json!({"billing": "chatgpt_plan", "model": "gpt-5.4", "requests": 2,
            "without_usage": 0, "input": 300, "cached_input": 80, "output": 30,
            "reasoning": 7, "total": 330})
    );
    assert_eq!(v["by_model"][1]["model"], serde_json::Value::Null);
    assert_eq!(v["by_model"].as_array().unwrap().len(), 3);
}

#[test]
fn an_unterminated_last_line_is_not_counted_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let line = sample().to_line();
    std::fs::write(&path, &line[..line.len() - 1]).unwrap();
    let s = summarize(&path, None).unwrap();
    assert_eq!((s.records, s.unreadable_lines), (0, 1));
}

#[test]
fn a_missing_ledger_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.jsonl");
    assert_eq!(
        run_summary(&path, None, false).unwrap_err(),
        format!("no ledger at {} (see ledger.path)", path.display())
    );
}

#[test]
fn since_accepts_rfc3339_dates_and_durations_ago() {
    let now = Timestamp::parse_strict("2025-11-24T16:00:00Z")
        .unwrap()
        .to_system_time();
    let at = |s: &str| parse_since(s, now).map(|t| t.to_string());
    assert_eq!(at("24h").unwrap(), "2025-11-23T16:00:00.000Z");
    assert_eq!(at("90min").unwrap(), "2025-11-24T14:30:00.000Z");
    assert_eq!(
        at("2025-11-24T10:00:00Z").unwrap(),
        "2025-11-24T10:00:00.000Z"
    );
    assert_eq!(
        at("2025-11-24T10:00:00.5Z").unwrap(),
        "2025-11-24T10:00:00.500Z"
    );
    assert_eq!(
        at("2025-11-24T12:00:00+02:00").unwrap(),
        "2025-11-24T10:00:00.000Z"
    );
    assert_eq!(
        at("2025-11-24T05:30:00-04:30").unwrap(),
        "2025-11-24T10:00:00.000Z"
    );
    assert_eq!(at("2025-11-24").unwrap(), "2025-11-24T00:00:00.000Z");
    assert_eq!(at("100000days").unwrap(), "1970-01-01T00:00:00.000Z");
    for bad in [
        "yesterday",
        "2025-11-24T10:00:00",
        "2025-11-24T10:00:00+25:00",
        "",
        "é",
    ] {
        assert_eq!(
            at(bad).unwrap_err(),
            format!(
                "--since {bad:?}: expected an RFC 3339 time (2025-11-24T16:00:00Z) or a duration ago (24h)"
            ),
        );
    }
}
