//! What the upstream's JSON says: the few fields the reader needs, and cheap byte-level sniffing.
//!
//! Parsing is lenient where the upstream's shape may vary (numbers, strings or null in the same
//! place) and never fails loudly: an object we cannot read simply teaches nothing.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

/// The fields the reader looks at in any object it meets: a Responses event, a response object,
/// a Chat Completions chunk or body, or an error body. Everything else is skipped unread.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Obj {
    pub kind: Option<Value>,
    pub object: Option<Value>,
    pub id: Option<Value>,
    pub model: Option<Value>,
    pub status: Option<Value>,
    /// Read straight from the raw member (`usage_of`): no `Value` is built for it.
    pub usage: Option<Usage>,
    pub error: Option<Value>,
    pub incomplete_details: Option<Value>,
    pub code: Option<Value>,
    pub message: Option<Value>,
    pub choices: Option<Vec<Choice>>,
    pub response: Option<Box<Obj>>,
}

/// One Chat Completions choice: only how it finished matters here.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct Choice {
    pub finish_reason: Option<Value>,
}

/// An error object as the upstream sent it (`{"error": {...}}` bodies, failed responses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiError {
    /// The error's `type`.
    pub error_type: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// ChatGPT usage-limit bodies: the plan that ran out.
    pub plan_type: Option<String>,
    /// ChatGPT usage-limit bodies: unix seconds when the window resets.
    pub resets_at: Option<u64>,
    pub resets_in_seconds: Option<u64>,
}

impl ApiError {
    /// Reads an error value: an object with the usual fields, or a bare message string.
    pub(super) fn from_value(value: &Value) -> Option<ApiError> {
        match value {
            Value::Object(map) => Some(ApiError {
                error_type: map.get("type").and_then(text),
                code: map.get("code").and_then(text),
                message: map.get("message").and_then(text),
                plan_type: map.get("plan_type").and_then(text),
                resets_at: map.get("resets_at").and_then(count),
                resets_in_seconds: map.get("resets_in_seconds").and_then(count),
            }),
            Value::String(message) => Some(ApiError {
                message: Some(message.clone()),
                ..ApiError::default()
            }),
            _ => None,
        }
    }

    /// The error's code (or, the upstream being inconsistent, its type) and message.
    pub(super) fn code_and_message(&self) -> (Option<String>, Option<String>) {
        (
            self.code.clone().or_else(|| self.error_type.clone()),
            self.message.clone(),
        )
    }
}

/// Reads one JSON object; anything else (invalid JSON, an array, too deep) gives `None`.
/// Only the members `Obj` keeps are parsed; the rest are skipped unread (`scan`).
pub(super) fn parse(data: &[u8]) -> Option<Obj> {
    parse_object(data, true)
}

/// `parse`, reading a `response` member only when `nested` (events nest a response object,
/// which nests no further one: a chain of them is not followed).
fn parse_object(data: &[u8], nested: bool) -> Option<Obj> {
    let mut obj = Obj::default();
    // A member the reader keeps in a shape it cannot read (`"response": 7`) makes the object
    // unreadable, as it did when the whole object went through serde.
    let mut readable = true;
    super::scan::members(data, |key, raw| {
        let slot = match key {
            b"type" => &mut obj.kind,
            b"object" => &mut obj.object,
            b"id" => &mut obj.id,
            b"model" => &mut obj.model,
            b"status" => &mut obj.status,
            b"usage" => {
                obj.usage = usage_of(raw);
                return;
            }
            b"error" => &mut obj.error,
            b"incomplete_details" => &mut obj.incomplete_details,
            b"code" => &mut obj.code,
            b"message" => &mut obj.message,
            b"choices" => {
                match serde_json::from_slice(raw) {
                    Ok(choices) => obj.choices = choices,
                    Err(_) => readable = false,
                }
                return;
            }
            b"response" if nested => {
                if raw != b"null" {
                    obj.response = parse_object(raw, false).map(Box::new);
                    readable &= obj.response.is_some();
                }
                return;
            }
            _ => return,
        };
        match serde_json::from_slice(raw) {
            Ok(Value::Null) => *slot = None,
            Ok(value) => *slot = Some(value),
            Err(_) => readable = false,
        }
    })?;
    readable.then_some(obj)
}

/// A string field, or a number written as one (some upstreams send numeric codes).
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer count; anything else counts as missing.
fn count(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// Token usage from a Responses (`input_tokens`…) or Chat Completions (`prompt_tokens`…)
/// usage object, given raw. Missing detail fields are 0; a missing total is input + output;
/// a count that is not a non-negative integer counts as missing.
pub(super) fn usage_of(raw: &[u8]) -> Option<Usage> {
    #[derive(Default)]
    struct Seen {
        /// Whether a Responses name (`input_tokens`, `output_tokens`) is there at all.
        responses: bool,
        input: Option<u64>,
        output: Option<u64>,
        prompt: Option<u64>,
        completion: Option<u64>,
        total: Option<u64>,
        /// Cached and reasoning tokens, Responses names then Chat names.
        details: [u64; 4],
    }
    let mut s = Seen::default();
    super::scan::members(raw, |key, value| match key {
        b"input_tokens" => (s.responses, s.input) = (true, raw_count(value)),
        b"output_tokens" => (s.responses, s.output) = (true, raw_count(value)),
        b"prompt_tokens" => s.prompt = raw_count(value),
        b"completion_tokens" => s.completion = raw_count(value),
        b"total_tokens" => s.total = raw_count(value),
        b"input_tokens_details" => s.details[0] = raw_detail(value, b"cached_tokens"),
        b"output_tokens_details" => s.details[1] = raw_detail(value, b"reasoning_tokens"),
        b"prompt_tokens_details" => s.details[2] = raw_detail(value, b"cached_tokens"),
        b"completion_tokens_details" => s.details[3] = raw_detail(value, b"reasoning_tokens"),
        _ => {}
    })?;
    let (input, output, cached_input, reasoning) = if s.responses {
        (s.input, s.output, s.details[0], s.details[1])
    } else {
        (s.prompt, s.completion, s.details[2], s.details[3])
    };
    if input.is_none() && output.is_none() {
        return None;
    }
    let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
    Some(Usage {
        input,
        cached_input,
        output,
        reasoning,
        total: s.total.unwrap_or(input.saturating_add(output)),
    })
}

/// A raw JSON number that is a non-negative integer within u64 (what `Value::as_u64` takes).
fn raw_count(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// The count under `key` in a raw details object; 0 when it is missing or not an object.
fn raw_detail(raw: &[u8], key: &[u8]) -> u64 {
    let mut n = None;
    let _ = super::scan::members(raw, |k, v| {
        if k == key {
            n = raw_count(v);
        }
    });
    n.unwrap_or(0)
}

/// Searchers for the keys the reader looks for, built once (building one costs more than
/// searching a typical event).
static TYPE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\""));

/// Keys whose non-null value makes an untyped event worth parsing.
pub(super) static TELLING_KEYS: LazyLock<[Finder<'static>; 4]> = LazyLock::new(|| {
    [
        Finder::new(b"\"usage\""),
        Finder::new(b"\"error\""),
        Finder::new(b"\"finish_reason\""),
        Finder::new(b"\"incomplete_details\""),
    ]
});

/// The value of the first `"type"` key, if it is a plain string (no escapes), found without
/// parsing. Responses events put their `type` first, so this is their event type.
pub(super) fn sniff_type(data: &[u8]) -> Option<&[u8]> {
    let at = TYPE_KEY.find(data)?;
    let rest = after_colon(&data[at + TYPE_KEY.needle().len()..])?;
    let rest = rest.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then_some(&rest[..end])
}

/// Whether some occurrence of `key` (a quoted key) in `data` has a value other than `null`.
/// A cheap, over-eager test: a false positive only costs a parse.
pub(super) fn has_value(data: &[u8], key: &Finder<'_>) -> bool {
    let len = key.needle().len();
    key.find_iter(data)
        .any(|at| after_colon(&data[at + len..]).is_some_and(|value| !value.starts_with(b"null")))
}

/// The bytes after `\s*:\s*`, if that is what follows.
fn after_colon(rest: &[u8]) -> Option<&[u8]> {
    Some(
        rest.trim_ascii_start()
            .strip_prefix(b":")?
            .trim_ascii_start(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What serde reads into the fields `Obj` keeps: the oracle for `parse`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Oracle {
        #[serde(rename = "type")]
        kind: Option<Value>,
        object: Option<Value>,
        id: Option<Value>,
        model: Option<Value>,
        status: Option<Value>,
        usage: Option<Value>,
        error: Option<Value>,
        incomplete_details: Option<Value>,
        code: Option<Value>,
        message: Option<Value>,
        choices: Option<Vec<Choice>>,
        response: Option<Box<Oracle>>,
    }

    impl Oracle {
        fn into_obj(self) -> Obj {
            Obj {
                kind: self.kind,
                object: self.object,
                id: self.id,
                model: self.model,
                status: self.status,
                usage: self.usage.as_ref().and_then(value_usage),
                error: self.error,
                incomplete_details: self.incomplete_details,
                code: self.code,
                message: self.message,
                choices: self.choices,
                response: self.response.map(|r| Box::new(r.into_obj())),
            }
        }
    }

    /// The usage reading on a parsed `Value` (how the reader did it before `usage_of`
    /// read raw members): the oracle for `usage_of`.
    fn value_usage(value: &Value) -> Option<Usage> {
        let map = value.as_object()?;
        let get = |key: &str| map.get(key).and_then(count);
        let detail = |outer: &str, inner: &str| {
            map.get(outer)
                .and_then(|d| d.get(inner))
                .and_then(count)
                .unwrap_or(0)
        };
        let responses = map.contains_key("input_tokens") || map.contains_key("output_tokens");
        let (input, output, cached_input, reasoning) = if responses {
            (
                get("input_tokens"),
                get("output_tokens"),
                detail("input_tokens_details", "cached_tokens"),
                detail("output_tokens_details", "reasoning_tokens"),
            )
        } else {
            (
                get("prompt_tokens"),
                get("completion_tokens"),
                detail("prompt_tokens_details", "cached_tokens"),
                detail("completion_tokens_details", "reasoning_tokens"),
            )
        };
        if input.is_none() && output.is_none() {
            return None;
        }
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        Some(Usage {
            input,
            cached_input,
            output,
            reasoning,
            total: get("total_tokens").unwrap_or(input.saturating_add(output)),
        })
    }

    /// `usage_of` on a value's JSON text, checked against the oracle.
    fn both(value: &Value) -> Option<Usage> {
        let raw = usage_of(value.to_string().as_bytes());
        assert_eq!(raw, value_usage(value), "{value}");
        raw
    }

    #[test]
    fn responses_usage_exact() {
        let usage = json!({"input_tokens": 1234, "input_tokens_details": {"cached_tokens": 1000},
            "output_tokens": 56, "output_tokens_details": {"reasoning_tokens": 7}, "total_tokens": 1290});
        assert_eq!(
            both(&usage),
            Some(Usage {
                input: 1234,
                cached_input: 1000,
                output: 56,
                reasoning: 7,
                total: 1290
            })
        );
    }

    #[test]
    fn chat_usage_exact_and_missing_details() {
        let usage = json!({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 2}});
        assert_eq!(
            both(&usage),
            Some(Usage {
                input: 19,
                cached_input: 3,
                output: 10,
                reasoning: 2,
                total: 29
            })
        );
        let bare = json!({"prompt_tokens": 5, "completion_tokens": 4,
            "prompt_tokens_details": null});
        assert_eq!(
            both(&bare),
            Some(Usage {
                input: 5,
                cached_input: 0,
                output: 4,
                reasoning: 0,
                total: 9
            })
        );
    }

    #[test]
    fn unusable_usage_is_none() {
        assert_eq!(both(&json!(null)), None);
        assert_eq!(both(&json!({})), None);
        assert_eq!(both(&json!({"input_tokens": "many"})), None);
        assert_eq!(both(&json!([1, 2])), None);
        let negative = json!({"input_tokens": -1, "output_tokens": 2, "total_tokens": 1.5});
        assert_eq!(
            both(&negative),
            Some(Usage {
                input: 0,
                cached_input: 0,
                output: 2,
                reasoning: 0,
                total: 2
            })
        );
    }

    #[test]
    fn usage_edge_cases_read_as_the_value_reading_did() {
        for value in [
            json!({"input_tokens": null, "prompt_tokens": 5, "completion_tokens": 3}),
            json!({"output_tokens": 4, "input_tokens_details": null, "output_tokens_details": 7}),
            json!({"input_tokens": 1, "input_tokens_details": [1], "output_tokens_details": {"reasoning_tokens": "x"}}),
            json!({"input_tokens": 18_446_744_073_709_551_615u64, "output_tokens": 1}),
            json!({"input_tokens": 1e3, "output_tokens": 2.0, "total_tokens": 99_999_999_999_999_999_999.0}),
            json!({"prompt_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1, "x": {"reasoning_tokens": 9}}}),
            json!({"usage": {"input_tokens": 1}}),
            json!("input_tokens"),
        ] {
            both(&value);
        }
    }

    #[test]
    fn api_error_fields() {
        let body = json!({"type": "usage_limit_reached", "message": "The usage limit has been reached",
            "plan_type": "plus", "resets_at": 1_764_000_000u64, "resets_in_seconds": 3600});
        let error = ApiError::from_value(&body).unwrap();
        assert_eq!(
            error,
            ApiError {
                error_type: Some("usage_limit_reached".into()),
                code: None,
                message: Some("The usage limit has been reached".into()),
                plan_type: Some("plus".into()),
                resets_at: Some(1_764_000_000),
                resets_in_seconds: Some(3600),
            }
        );
        assert_eq!(
            error.code_and_message(),
            (
                Some("usage_limit_reached".into()),
                Some("The usage limit has been reached".into())
            )
        );
        let numeric = ApiError::from_value(&json!({"code": 429, "type": "requests"})).unwrap();
        assert_eq!(numeric.code_and_message(), (Some("429".into()), None));
        assert_eq!(ApiError::from_value(&json!(7)), None);
    }

    /// The members serde would read, for every object the fixtures hold: each event of the
    /// Responses and Chat streams (all three endings) and the non-streamed bodies.
    #[test]
    fn scan_reads_what_serde_reads() {
        use crate::tap::fixtures::{self, Ending};
        let mut objects: Vec<Vec<u8>> = vec![
            fixtures::responses_json(),
            fixtures::chat_json(),
            br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_vec(),
            br#"{"detail":"Unauthorized"}"#.to_vec(),
            br#" {"type" : "error", "code":429, "message":"slow \"down\" \u00e9", "usage":null} "#.to_vec(),
        ];
        let streams = [
            fixtures::responses_stream_ending(40_000, Ending::Completed),
            fixtures::responses_stream_ending(40_000, Ending::Incomplete),
            fixtures::responses_stream_ending(40_000, Ending::Failed),
            fixtures::chat_stream(50, true, "stop"),
            fixtures::chat_stream(50, false, "length"),
        ];
        for stream in &streams {
            let text = std::str::from_utf8(stream).unwrap();
            for line in text.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    if data != "[DONE]" {
                        objects.push(data.as_bytes().to_vec());
                    }
                }
            }
        }
        assert!(objects.len() > 300, "{}", objects.len());
        let mut with_usage = 0;
        for data in &objects {
            let oracle = serde_json::from_slice::<Oracle>(data).unwrap().into_obj();
            let scanned = parse(data).unwrap();
            with_usage += usize::from(
                scanned.usage.is_some()
                    || scanned.response.as_ref().is_some_and(|r| r.usage.is_some()),
            );
            assert_eq!(scanned, oracle, "{}", String::from_utf8_lossy(data));
        }
        assert_eq!(with_usage, 6);
    }

    /// Random objects (nested values of every kind, the keys the reader keeps among others,
    /// strings with escapes) read the same by the member walk and by serde.
    #[test]
    fn random_objects_read_as_serde_reads_them() {
        const KEYS: [&str; 24] = [
            "type",
            "object",
            "id",
            "model",
            "status",
            "usage",
            "error",
            "incomplete_details",
            "code",
            "message",
            "choices",
            "response",
            "finish_reason",
            "reason",
            "input_tokens",
            "output_tokens",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "input_tokens_details",
            "cached_tokens",
            "reasoning_tokens",
            "output",
            "x\"y",
        ];
        const TEXTS: [&str; 6] = [
            "",
            "gpt-5.4",
            "a\"b\\c",
            "line\nbreak\u{1}",
            "é ✓ 𝄞",
            "}]{[",
        ];
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: usize) -> usize {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % n as u64) as usize
            }
        }
        fn value(rng: &mut Rng, depth: usize, in_response: bool) -> Value {
            match rng.below(if depth > 3 { 6 } else { 9 }) {
                0 => Value::Null,
                1 => json!(rng.below(2) == 0),
                2 => json!([0u64, 7, 1_764_000_000, u64::MAX][rng.below(4)]),
                3 => json!([-1i64, i64::MIN][rng.below(2)]),
                4 => json!([1.5f64, 1e300, -0.25][rng.below(3)]),
                5 => json!(TEXTS[rng.below(TEXTS.len())]),
                6 | 7 => object(rng, depth + 1, in_response),
                _ => Value::Array(
                    (0..rng.below(4))
                        .map(|_| value(rng, depth + 1, in_response))
                        .collect(),
                ),
            }
        }
        fn object(rng: &mut Rng, depth: usize, in_response: bool) -> Value {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(9) {
                let key = KEYS[rng.below(KEYS.len())];
                // A response nests no further response (`parse` reads one level).
                if key == "response" && (in_response || depth > 0) {
                    continue;
                }
                let v = value(rng, depth, in_response || key == "response");
                map.insert(key.to_owned(), v);
            }
            Value::Object(map)
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut readable, mut unreadable) = (0, 0);
        for i in 0..4_000 {
            let obj = object(&mut rng, 0, false);
            let text = if i % 3 == 0 {
                serde_json::to_string_pretty(&obj).unwrap()
            } else {
                obj.to_string()
            };
            let oracle = serde_json::from_str::<Oracle>(&text)
                .ok()
                .map(Oracle::into_obj);
            // The one difference, on purpose: serde reads a struct from an array too, so it
            // took `"response": [...]` as a response; the walk takes only an object.
            let expected = if obj.get("response").is_some_and(Value::is_array) {
                None
            } else {
                oracle
            };
            let scanned = parse(text.as_bytes());
            assert_eq!(scanned, expected, "{text}");
            if scanned.is_some() {
                readable += 1;
            } else {
                unreadable += 1;
            }
        }
        // Both kinds of object were met.
        assert!(
            readable > 1_000 && unreadable > 100,
            "{readable} {unreadable}"
        );
    }

    #[test]
    fn what_is_not_one_object_teaches_nothing() {
        for bad in [
            &b"[1]"[..],
            b"{\"usage\":{\"input_tokens\":1}",
            b"{\"a\":1} x",
            b"",
            b"\"s\"",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // A chain of nested responses is read one level deep.
        let chain = parse(br#"{"response":{"id":"a","response":{"id":"b"}}}"#).unwrap();
        assert_eq!(chain.response.unwrap().id, Some(json!("a")));
    }

    #[test]
    fn sniffing() {
        assert_eq!(
            sniff_type(br#"{"type":"response.completed","x":1}"#),
            Some(&b"response.completed"[..])
        );
        assert_eq!(sniff_type(br#"{ "type" : "error" }"#), Some(&b"error"[..]));
        assert_eq!(sniff_type(br#"{"type":"a\"b"}"#), None);
        assert_eq!(sniff_type(br#"{"type":5}"#), None);
        assert_eq!(sniff_type(br#"{"type""#), None);
        let usage = Finder::new(b"\"usage\"");
        assert!(!has_value(br#"{"usage":null,"x":"\"usage\": 1"}"#, &usage));
        assert!(has_value(
            br#"{"usage":null,"y":{"usage" : {"a":1}}}"#,
            &usage
        ));
        assert!(!has_value(br#"{"usage""#, &usage));
    }
}
