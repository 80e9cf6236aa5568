//! `config/ledger.schema.json` against records this code really writes.
//!
//! A small validator for the keywords the schema uses (it fails on any other keyword, so
//! no constraint can be skipped silently), and a check that the schema and the strict
//! reader reject the same bad lines.

use super::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ledger.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Errors of `value` against `schema` (empty when valid), each with its JSON path.
fn validate(root: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let Value::Object(keywords) = schema else {
        panic!("schema at {at} is not an object");
    };
    let mut errors = Vec::new();
    macro_rules! fail {
        ($($arg:tt)*) => { errors.push(format!("{at}: {}", format!($($arg)*))) };
    }
    for (key, arg) in keywords {
        match key.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" | "format" => {}
            "$ref" => {
                let name = arg.as_str().unwrap().strip_prefix("#/$defs/").unwrap();
                let target = &root["$defs"][name];
                assert!(!target.is_null(), "unknown $ref {arg}");
                errors.extend(validate(root, target, value, at));
            }
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                    _ => panic!("type at {at}"),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => value.is_object(),
                    "string" => value.is_string(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    other => panic!("type {other} at {at}"),
                });
                if !ok {
                    fail!("{value} is not of type {arg}");
                }
            }
            "const" if value != arg => fail!("{value} is not {arg}"),
            "const" => {}
            "enum" if !arg.as_array().unwrap().contains(value) => {
                fail!("{value} is not one of {arg}")
            }
            "enum" => {}
            "minimum" | "maximum" => {
                if let Some(n) = value.as_f64() {
                    let bound = arg.as_f64().unwrap();
                    if (key == "minimum" && n < bound) || (key == "maximum" && n > bound) {
                        fail!("{value} is outside {key} {arg}");
                    }
                }
            }
            "minLength" => {
                if let Some(s) = value.as_str() {
                    if (s.chars().count() as u64) < arg.as_u64().unwrap() {
                        fail!("{value} is shorter than {arg}");
                    }
                }
            }
            "pattern" => {
                if let Some(s) = value.as_str() {
                    let re = regex_automata::dfa::regex::Regex::new(arg.as_str().unwrap()).unwrap();
                    if !re.is_match(s) {
                        fail!("{value} does not match {arg}");
                    }
                }
            }
            "required" => {
                if let Some(obj) = value.as_object() {
                    for name in arg.as_array().unwrap() {
                        if !obj.contains_key(name.as_str().unwrap()) {
                            fail!("missing required {name}");
                        }
                    }
                }
            }
            "properties" => {
                if let Some(obj) = value.as_object() {
                    for (name, sub) in arg.as_object().unwrap() {
                        if let Some(v) = obj.get(name) {
                            errors.extend(validate(root, sub, v, &format!("{at}/{name}")));
                        }
                    }
                }
            }
            "additionalProperties" => {
                assert_eq!(arg, &Value::Bool(false), "only `false` is supported");
                let known = keywords["properties"].as_object().unwrap();
                if let Some(obj) = value.as_object() {
                    for name in obj.keys().filter(|n| !known.contains_key(*n)) {
                        fail!("unexpected property {name:?}");
                    }
                }
            }
            "oneOf" => {
                let matching = arg
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|sub| validate(root, sub, value, at).is_empty())
                    .count();
                if matching != 1 {
                    fail!("{value} matches {matching} of oneOf, not exactly 1");
                }
            }
            other => panic!("keyword {other:?} at {at} is not supported by this test"),
        }
    }
    errors
}

fn check(line: &str) -> Vec<String> {
    let root = schema();
    validate(&root, &root, &serde_json::from_str(line).unwrap(), "")
}

/// Records covering every route, outcome, limit kind and nullable field.
fn variety() -> Vec<Record> {
    let routes = Route::ALL;
    let outcomes = Outcome::ALL;
    let kinds = LimitKind::ALL;
    let mut out = vec![sample()];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let billing = Billing::ALL[i % 2];
        out.push(Record {
            id: new_id(),
            billing,
            route: routes[i % routes.len()],
            outcome,
            model: (i % 3 != 0).then(|| "gpt-5.4".to_owned()),
            usage: (i % 2 == 0).then(|| usage(u64::MAX, 0, 1, 0, u64::MAX)),
            upstream_request_id: None,
            first_byte_ms: (i % 3 == 1).then_some(0),
            limit: Some(LimitNote {
                kind: kinds[i % kinds.len()],
                resets_at: (i % 2 == 1).then_some(1_764_000_000),
            }),
            account: (i % 2 == 0).then(|| AccountHash::of(&format!("acct-{i}"))),
            status: [100, 599, 429, 503][i % 4],
            duration_ms: 0,
            ..sample()
        });
    }
    out
}

#[test]
fn records_written_by_the_ledger_match_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let ledger = Ledger::open(settings(&path)).unwrap();
    let records = variety();
    for rec in &records {
        ledger.append(rec).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), records.len());
    for line in text.lines() {
        assert_eq!(check(line), Vec::<String>::new(), "{line}");
    }
}

#[test]
fn schema_and_reader_reject_the_same_bad_lines() {
    let good = String::from_utf8(sample().to_line()).unwrap();
    let mutations: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        (
            "unknown field",
            (r#""limit":null"#, r#""limit":null,"extra":1"#),
        ),
        ("missing model", (r#""model":"gpt-5.4","#, "")),
        (
            "ocu_billable mismatch",
            (r#""ocu_billable":false"#, r#""ocu_billable":true"#),
        ),
        ("other version", (r#""v":1"#, r#""v":2"#)),
        ("status as string", (r#""status":200"#, r#""status":"200""#)),
        ("status out of range", (r#""status":200"#, r#""status":42"#)),
        (
            "negative duration",
            (r#""duration_ms":812"#, r#""duration_ms":-1"#),
        ),
        (
            "bad id",
            (r#""id":"01JQ7ZK3M4N5P6Q7R8S9TVWXYZ""#, r#""id":"req-1""#),
        ),
        ("offset timestamp", (r#"00.907Z""#, r#"00.907+00:00""#)),
        (
            "unknown billing",
            (r#""billing":"chatgpt_plan""#, r#""billing":"plan""#),
        ),
        (
            "unknown outcome",
            (r#""outcome":"completed""#, r#""outcome":"done""#),
        ),
        (
            "unknown usage key",
            (r#""total":1290}"#, r#""total":1290,"audio":3}"#),
        ),
        ("missing usage key", (r#","total":1290}"#, "}")),
        (
            "empty session",
            (r#""session":"sess-1""#, r#""session":"""#),
        ),
        (
            "limit without resets_at",
            (r#""limit":null"#, r#""limit":{"kind":"usage_limit"}"#),
        ),
        (
            "unknown limit kind",
            (
                r#""limit":null"#,
                r#""limit":{"kind":"x","resets_at":null}"#,
            ),
        ),
        (
            "raw account id",
            (r#""limit":null"#, r#""limit":null,"account":"user-abc""#),
        ),
        ("usage as zero", (r#""usage":{"#, r#""usage":0,"u":{"#)),
    ]);
    assert!(check(&good).is_empty());
    for (name, (from, to)) in mutations {
        assert!(good.contains(from), "{name}");
        let bad = good.replacen(from, to, 1);
        assert!(
            serde_json::from_str::<Record>(&bad).is_err(),
            "reader accepts {name}"
        );
        assert!(!check(&bad).is_empty(), "schema accepts {name}: {bad}");
    }
}

#[test]
fn the_documented_example_is_a_valid_record() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ledger.md"));
    let line = doc.lines().find(|l| l.starts_with(r#"{"v":1,"#)).unwrap();
    let rec: Record = serde_json::from_str(line).unwrap();
    assert_eq!(check(line), Vec::<String>::new());
    assert_eq!(
        String::from_utf8(rec.to_line()).unwrap(),
        format!("{line}\n")
    );
}
