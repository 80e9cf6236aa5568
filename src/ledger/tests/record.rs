//! Record bytes and strict reading.

use super::*;

const SAMPLE_LINE: &str = concat!(
    r#"{"v":1,"id":"01JQ7ZK3M4N5P6Q7R8S9TVWXYZ","ts":"2025-11-24T16:00:00.907Z","#,
    r#""started":"2025-11-24T16:00:00.095Z","session":"sess-1","billing":"chatgpt_plan","#,
    r#""ocu_billable":false,"route":"responses","model":"gpt-5.4","status":200,"#,
    r#""outcome":"completed","usage":{"input":1234,"cached_input":1000,"output":56,"#,
    r#""reasoning":7,"total":1290},"upstream_request_id":"req_abc","duration_ms":812,"#,
    r#""first_byte_ms":95,"limit":null}"#,
    "\n"
);

#[test]
fn serializes_to_the_exact_line_in_spec_order() {
    assert_eq!(String::from_utf8(sample().to_line()).unwrap(), SAMPLE_LINE);
}

#[test]
fn org_record_with_limit_and_account_is_ocu_billable() {
    let rec = Record {
        billing: Billing::Org,
        route: Route::ChatCompletions,
        model: None,
        status: 429,
        outcome: Outcome::Limited,
        usage: None,
        upstream_request_id: None,
        first_byte_ms: None,
        limit: Some(LimitNote {
            kind: LimitKind::InsufficientQuota,
            resets_at: Some(1_764_000_000),
        }),
        account: Some(AccountHash::of("acct-123")),
        ..sample()
    };
    assert!(rec.ocu_billable());
    let line = String::from_utf8(rec.to_line()).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"v":1,"id":"01JQ7ZK3M4N5P6Q7R8S9TVWXYZ","ts":"2025-11-24T16:00:00.907Z","#,
            r#""started":"2025-11-24T16:00:00.095Z","session":"sess-1","billing":"org","#,
            r#""ocu_billable":true,"route":"chat_completions","model":null,"status":429,"#,
            r#""outcome":"limited","usage":null,"upstream_request_id":null,"duration_ms":812,"#,
            r#""first_byte_ms":null,"limit":{"kind":"insufficient_quota","resets_at":1764000000},"#,
            r#""account":"3abf465e869e7b65598ec70e64b86462"}"#,
            "\n"
        )
    );
    assert!(!line.contains("acct-123"));
    assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), rec);
}

/// The hand-written line is byte for byte what serde writes, for every variant of every
/// enum, present and absent optionals, and strings with everything JSON must escape.
#[test]
fn the_line_is_what_serde_writes() {
    let strings = [
        "sess-1",
        "",
        "quote \" backslash \\ slash / tab \t nl \n cr \r bs \u{8} ff \u{c}",
        "nul \u{0} unit \u{1f} del \u{7f} é ✓ 𝄞 \u{2028}",
    ];
    let outcomes = Outcome::ALL;
    let kinds = LimitKind::ALL;
    let mut checked = 0;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        for (j, text) in strings.iter().enumerate() {
            let n = (i * strings.len() + j) as u64;
            let rec = Record {
                session: (*text).to_owned(),
                billing: Billing::ALL[j % 2],
                route: Route::ALL[(i + j) % Route::ALL.len()],
                model: (j % 2 == 0).then(|| (*text).to_owned()),
                status: [200, 429, 499, 502][j],
                outcome,
                usage: (i % 2 == 0).then_some(Usage {
                    input: u64::MAX - n,
                    cached_input: n,
                    output: 0,
                    reasoning: 7,
                    total: u64::MAX,
                }),
                upstream_request_id: (j % 3 != 0).then(|| format!("req_{text}")),
                duration_ms: n * 1_000_003,
                first_byte_ms: (j % 2 == 1).then_some(n),
                limit: (j > 0).then_some(LimitNote {
                    kind: kinds[(i + j) % kinds.len()],
                    resets_at: (j % 2 == 0).then_some(1_764_000_000 + n),
                }),
                account: (i % 3 == 0).then(|| AccountHash::of(text)),
                ts: Timestamp::from_unix_ms(Timestamp::MAX_UNIX_MS - n),
                started: Timestamp::from_unix_ms(n),
                ..sample()
            };
            let mut serde_line = serde_json::to_vec(&rec).unwrap();
            serde_line.push(b'\n');
            assert_eq!(
                String::from_utf8(rec.to_line()).unwrap(),
                String::from_utf8(serde_line).unwrap()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn reads_back_what_it_writes() {
    assert_eq!(
        serde_json::from_str::<Record>(SAMPLE_LINE).unwrap(),
        sample()
    );
}

/// The sample line with `from` replaced by `to`, read strictly: the error message.
fn reject(from: &str, to: &str) -> String {
    assert!(SAMPLE_LINE.contains(from), "{from}");
    let line = SAMPLE_LINE.replacen(from, to, 1);
    serde_json::from_str::<Record>(&line)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn reading_is_strict() {
    let cases = [
        (
            r#""limit":null}"#,
            r#""limit":null,"extra":1}"#,
            "unknown field `extra`",
        ),
        (r#""model":"gpt-5.4","#, "", "missing field `model`"),
        (
            r#""limit":null"#,
            r#""limit":null,"usage":null"#,
            "duplicate field `usage`",
        ),
        (
            r#""ocu_billable":false"#,
            r#""ocu_billable":true"#,
            "ocu_billable is true but billing is \"chatgpt_plan\" (must be billing == \"org\")",
        ),
        (
            r#""v":1"#,
            r#""v":2"#,
            "schema version 2 is not supported (this build reads 1)",
        ),
        (
            r#""status":200"#,
            r#""status":"200""#,
            "invalid type: string \"200\", expected u16",
        ),
        (
            r#""status":200"#,
            r#""status":42"#,
            "status 42 is not an HTTP status",
        ),
        (
            r#""duration_ms":812"#,
            r#""duration_ms":-1"#,
            "invalid value: integer `-1`, expected u64",
        ),
        (
            r#""id":"01JQ7ZK3M4N5P6Q7R8S9TVWXYZ""#,
            r#""id":"req-1""#,
            "id \"req-1\" is not a 26-character record id",
        ),
        (
            r#""ts":"2025-11-24T16:00:00.907Z""#,
            r#""ts":"2025-11-24T16:00:00.907+00:00""#,
            "is not RFC 3339 UTC (must end in Z)",
        ),
        (
            r#""billing":"chatgpt_plan""#,
            r#""billing":"plan""#,
            "unknown variant `plan`",
        ),
        (
            r#""outcome":"completed""#,
            r#""outcome":"done""#,
            "unknown variant `done`",
        ),
        (
            r#""total":1290}"#,
            r#""total":1290,"audio":3}"#,
            "unknown field `audio`",
        ),
        (r#","total":1290}"#, "}", "missing field `total`"),
        (
            r#""session":"sess-1""#,
            r#""session":"""#,
            "session is empty",
        ),
        (
            r#""limit":null"#,
            r#""limit":{"kind":"usage_limit"}"#,
            "missing field `resets_at`",
        ),
        (
            r#""limit":null"#,
            r#""limit":null,"account":"user-abc""#,
            "account must be 32 lower-case hex digits (a hash, never the id)",
        ),
    ];
    for (from, to, expected) in cases {
        let err = reject(from, to);
        assert!(err.contains(expected), "{from} -> {to}: {err}");
    }
}

#[test]
fn names_match_the_serialized_forms() {
    for route in Route::ALL {
        assert_eq!(
            serde_json::to_string(&route).unwrap(),
            format!("\"{}\"", route.as_str())
        );
    }
    for o in Outcome::ALL {
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            format!("\"{}\"", o.as_str())
        );
    }
    for k in LimitKind::ALL {
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            format!("\"{}\"", k.as_str())
        );
    }
}
