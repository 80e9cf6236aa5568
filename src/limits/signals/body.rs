//! Error bodies answered before a stream starts (HTTP 429 and friends).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::durations::MAX_RESET;
use super::headers::plausible_unix;
use super::{classify_code, LimitKind};

/// Longest message kept from an upstream error (it is only read for "try again in").
const MAX_MESSAGE_LEN: usize = 2048;
/// Longest code or plan type kept.
const MAX_TOKEN_LEN: usize = 64;

/// What an error body says about limits. Every field is optional: upstreams differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// The limit kind named by `type` or `code`, when either names one.
    pub kind: Option<LimitKind>,
    /// The `type`/`code` token that named the kind, else the first one present.
    pub code: Option<String>,
    pub message: Option<String>,
    pub plan_type: Option<String>,
    /// Unix seconds.
    pub resets_at: Option<i64>,
    pub resets_in_seconds: Option<u64>,
}

impl ErrorBody {
    /// The reset the body announces, relative to `now`: `resets_at` first, then
    /// `resets_in_seconds`.
    pub fn reset_in(&self, now: SystemTime) -> Option<Duration> {
        let from_at = self.resets_at.and_then(|at| {
            let at =
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(at).ok()?))?;
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        });
        from_at.or_else(|| self.resets_in_seconds.map(Duration::from_secs))
    }
}

/// Parses `{"error": {...}}` (also `{"detail": {...}}` or the fields at the top level).
///
/// Returns `None` when the body is not a JSON object (an HTML page, say).
pub fn parse_error_body(body: &[u8], now: SystemTime) -> Option<ErrorBody> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let root = root.as_object()?;
    let error = ["error", "detail"]
        .iter()
        .find_map(|k| root.get(*k).and_then(Value::as_object))
        .unwrap_or(root);
    let field = |name: &str| error.get(name).and_then(Value::as_str).and_then(token);
    let type_ = field("type");
    let code = field("code");
    let kinds = [type_.as_deref(), code.as_deref()].map(|t| t.and_then(classify_code));
    // A used-up plan outranks a rate limit when the two fields disagree; on a tie `code`
    // is the more specific ("requests" vs "rate_limit_exceeded").
    let chosen = [0, 1]
        .into_iter()
        .filter_map(|i| kinds[i].map(|k| (i, k)))
        .max_by_key(|(i, k)| (k.exhausts(), *i));
    let (kind, code) = match chosen {
        Some((i, kind)) => (Some(kind), if i == 0 { type_ } else { code }),
        None => (None, type_.or(code)),
    };
    Some(ErrorBody {
        kind,
        code,
        message: error
            .get("message")
            .and_then(Value::as_str)
            .map(|m| truncate(m, MAX_MESSAGE_LEN)),
        plan_type: field("plan_type"),
        resets_at: error
            .get("resets_at")
            .and_then(number_or_digits)
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| plausible_unix(s, now)),
        resets_in_seconds: error
            .get("resets_in_seconds")
            .and_then(number_or_digits)
            .filter(|s| *s <= MAX_RESET.as_secs()),
    })
}

/// A non-negative whole number given as a JSON number (decimals truncated) or a digit string.
fn number_or_digits(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            // Truncation is intended; the range check keeps the cast exact enough.
            (f.is_finite() && (0.0..1e15).contains(&f)).then_some(f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        }
        _ => None,
    }
}

/// A short code token (lower case); anything longer or with odd characters is dropped.
fn token(value: &str) -> Option<String> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then(|| value.to_ascii_lowercase())
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    #[test]
    fn chatgpt_usage_limit_reached() {
        let body = br#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":1764003600,"resets_in_seconds":3600}}"#;
        assert_eq!(
            parse_error_body(body, now()),
            Some(ErrorBody {
                kind: Some(LimitKind::UsageLimit),
                code: Some("usage_limit_reached".into()),
                message: Some("The usage limit has been reached".into()),
                plan_type: Some("plus".into()),
                resets_at: Some(1_764_003_600),
                resets_in_seconds: Some(3600),
            })
        );
    }

    #[test]
    fn kind_in_code_or_type() {
        let b = br#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota"}}"#;
        assert_eq!(
            parse_error_body(b, now()).unwrap().kind,
            Some(LimitKind::InsufficientQuota)
        );
        let b = br#"{"error":{"type":"requests","code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 1.5s."}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (Some(LimitKind::RateLimit), Some("rate_limit_exceeded"))
        );
        let b = br#"{"error":{"type":"invalid_request_error","code":"usage_not_included"}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (
                Some(LimitKind::UsageNotIncluded),
                Some("usage_not_included")
            )
        );
        // A used-up plan outranks a rate limit.
        let b = br#"{"error":{"type":"rate_limit_exceeded","code":"insufficient_quota"}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (
                Some(LimitKind::InsufficientQuota),
                Some("insufficient_quota")
            )
        );
        let b = br#"{"detail":{"code":"workspace_member_usage_limit_reached"}}"#;
        assert_eq!(
            parse_error_body(b, now()).unwrap().kind,
            Some(LimitKind::UsageLimit)
        );
        let b = br#"{"type":"tokens","code":null,"message":"slow down"}"#;
        assert_eq!(
            parse_error_body(b, now()).unwrap().kind,
            Some(LimitKind::RateLimit)
        );
    }

    #[test]
    fn unknown_kind_keeps_the_code() {
        let b = br#"{"error":{"type":"server_error","code":"context_length_exceeded"}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!((e.kind, e.code.as_deref()), (None, Some("server_error")));
    }

    #[test]
    fn string_and_float_numbers() {
        let b = br#"{"error":{"type":"usage_limit_reached","resets_at":"1764003600","resets_in_seconds":12.9}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(
            (e.resets_at, e.resets_in_seconds),
            (Some(1_764_003_600), Some(12))
        );
        assert_eq!(e.reset_in(now()), Some(Duration::from_secs(3600)));
        let b = br#"{"error":{"resets_in_seconds":90}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(e.reset_in(now()), Some(Duration::from_secs(90)));
        // A reset time already past: now.
        let b = br#"{"error":{"resets_at":1763999000}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!(e.reset_in(now()), Some(Duration::ZERO));
    }

    #[test]
    fn non_json_bodies_are_not_error_bodies() {
        for b in [
            &b"<html><body>429 Too Many Requests</body></html>"[..],
            b"",
            b"\xff\xfe\x00",
            b"[1,2,3]",
            b"\"usage_limit_reached\"",
            b"{\"error\":",
        ] {
            assert_eq!(parse_error_body(b, now()), None);
        }
    }

    #[test]
    fn hostile_bodies_teach_nothing() {
        let b = br#"{"error":{"type":123,"code":{"x":1},"message":["m"],"plan_type":"<b>plus</b>","resets_at":-5,"resets_in_seconds":1e400}}"#;
        // 1e400 is not valid JSON for serde_json (out of range): the whole body is refused.
        assert_eq!(parse_error_body(b, now()), None);
        let b = br#"{"error":{"type":123,"code":{"x":1},"message":["m"],"plan_type":"<b>plus</b>","resets_at":-5,"resets_in_seconds":-1.5}}"#;
        assert_eq!(parse_error_body(b, now()), Some(ErrorBody::default()));
        let b = br#"{"error":{"type":"usage_limit_reached","resets_at":99999999999999999999999,"resets_in_seconds":99999999999}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!((e.resets_at, e.resets_in_seconds), (None, None));
        let b = br#"{"error":{"type":"usage_limit_reached","resets_at":"NaN","resets_in_seconds":"1e3"}}"#;
        let e = parse_error_body(b, now()).unwrap();
        assert_eq!((e.resets_at, e.resets_in_seconds), (None, None));
        // Deep nesting hits serde_json's recursion limit: refused, no stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_error_body(deep.as_bytes(), now()), None);
        // Long messages are kept bounded, on a char boundary.
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "\u{e9}".repeat(5000));
        let e = parse_error_body(long.as_bytes(), now()).unwrap();
        assert_eq!(e.message.unwrap().len(), MAX_MESSAGE_LEN);
    }
}
