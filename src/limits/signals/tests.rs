//! Tests of signal classification: which answers are limits, of what kind, resetting when.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::UNIX_EPOCH;

const NOW: u64 = 1_764_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderSignals {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    parse_headers(&h, now())
}

fn signal(
    kind: LimitKind,
    reason: &str,
    reset_secs: Option<u64>,
    plan: Option<&str>,
) -> LimitSignal {
    LimitSignal {
        kind,
        reason: reason.into(),
        reset_in: reset_secs.map(Duration::from_secs),
        plan_type: plan.map(Into::into),
    }
}

#[test]
fn kinds_and_labels() {
    let cases = [
        ("usage_limit_reached", Some(LimitKind::UsageLimit)),
        ("usage_not_included", Some(LimitKind::UsageNotIncluded)),
        ("insufficient_quota", Some(LimitKind::InsufficientQuota)),
        ("rate_limit_exceeded", Some(LimitKind::RateLimit)),
        ("rate_limit_reached", Some(LimitKind::RateLimit)),
        ("requests", Some(LimitKind::RateLimit)),
        ("tokens", Some(LimitKind::RateLimit)),
        (
            "workspace_owner_usage_limit_reached",
            Some(LimitKind::UsageLimit),
        ),
        (
            "workspace_member_usage_limit_reached",
            Some(LimitKind::UsageLimit),
        ),
        (
            "workspace_owner_credits_depleted",
            Some(LimitKind::UsageLimit),
        ),
        (
            "Workspace_Member_Credits_Depleted",
            Some(LimitKind::UsageLimit),
        ),
        ("context_length_exceeded", None),
        ("server_is_overloaded", None),
        ("workspace_", None),
        ("", None),
    ];
    for (code, kind) in cases {
        assert_eq!(classify_code(code), kind, "{code}");
    }
    let labels: Vec<_> = [
        LimitKind::RateLimit,
        LimitKind::UsageLimit,
        LimitKind::UsageNotIncluded,
        LimitKind::InsufficientQuota,
    ]
    .iter()
    .map(|k| (k.as_str(), k.error_type(), k.exhausts()))
    .collect();
    assert_eq!(
        labels,
        vec![
            ("rate_limit", "rate_limit_exceeded", false),
            ("usage_limit", "usage_limit_reached", true),
            ("usage_not_included", "usage_not_included", true),
            ("insufficient_quota", "insufficient_quota", true),
        ]
    );
}

#[test]
fn success_without_limits_is_no_signal() {
    let h = headers(&[
        ("x-codex-primary-used-percent", "99.9"),
        ("x-codex-primary-reset-at", "1764000600"),
    ]);
    assert_eq!(signal_from_response(200, &h, now()), None);
    assert_eq!(signal_from_response(500, &h, now()), None);
}

#[test]
fn used_up_window_with_reset_pauses_even_on_success() {
    let h = headers(&[
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-reset-at", "1764000600"),
        ("x-codex-secondary-used-percent", "100.5"),
        ("x-codex-secondary-reset-at", "1764007200"),
    ]);
    assert_eq!(
        signal_from_response(200, &h, now()),
        Some(signal(
            LimitKind::RateLimit,
            "secondary_window_used_up",
            Some(7200),
            None
        ))
    );
    // Without a reset time a full window teaches nothing.
    let h = headers(&[("x-codex-primary-used-percent", "100")]);
    assert_eq!(signal_from_response(200, &h, now()), None);
}

#[test]
fn reached_type_header() {
    let h = headers(&[
        ("x-codex-rate-limit-reached-type", "rate_limit_reached"),
        ("retry-after", "12"),
    ]);
    assert_eq!(
        signal_from_response(429, &h, now()),
        Some(signal(
            LimitKind::RateLimit,
            "rate_limit_reached",
            Some(12),
            None
        ))
    );
    let h = headers(&[
        (
            "x-codex-rate-limit-reached-type",
            "workspace_owner_credits_depleted",
        ),
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-reset-at", "1764000900"),
    ]);
    assert_eq!(
        signal_from_response(429, &h, now()),
        Some(signal(
            LimitKind::UsageLimit,
            "workspace_owner_credits_depleted",
            Some(900),
            None
        ))
    );
}

#[test]
fn plain_429_uses_whatever_headers_say() {
    let h = headers(&[("retry-after", "Mon, 24 Nov 2025 16:00:42 GMT")]);
    assert_eq!(
        signal_from_response(429, &h, now()),
        Some(signal(LimitKind::RateLimit, "http_429", Some(42), None))
    );
    let h = headers(&[("x-ratelimit-reset-requests", "6m0s")]);
    assert_eq!(
        signal_from_response(429, &h, now()),
        Some(signal(LimitKind::RateLimit, "http_429", Some(360), None))
    );
    // Nothing said: the default pause.
    assert_eq!(
        signal_from_response(429, &HeaderSignals::default(), now()),
        Some(signal(LimitKind::RateLimit, "http_429", Some(5), None))
    );
}

#[test]
fn chatgpt_usage_limit_body() {
    let body = br#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":1764003600,"resets_in_seconds":3600}}"#;
    assert_eq!(
        signal_from_error(429, &HeaderSignals::default(), body, now()),
        Some(signal(
            LimitKind::UsageLimit,
            "usage_limit_reached",
            Some(3600),
            Some("plus")
        ))
    );
    // resets_in_seconds alone.
    let body =
        br#"{"error":{"type":"usage_limit_reached","plan_type":"pro","resets_in_seconds":60}}"#;
    assert_eq!(
        signal_from_error(429, &HeaderSignals::default(), body, now()),
        Some(signal(
            LimitKind::UsageLimit,
            "usage_limit_reached",
            Some(60),
            Some("pro")
        ))
    );
}

#[test]
fn usage_not_included_and_insufficient_quota_have_no_invented_reset() {
    let body = br#"{"error":{"type":"usage_not_included","plan_type":"free"}}"#;
    assert_eq!(
        signal_from_error(429, &HeaderSignals::default(), body, now()),
        Some(signal(
            LimitKind::UsageNotIncluded,
            "usage_not_included",
            None,
            Some("free")
        ))
    );
    // x-ratelimit-reset-* and "try again in" describe rate limits, not a quota.
    let h = headers(&[("x-ratelimit-reset-requests", "1s")]);
    let body = br#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota. Try again in 2s"}}"#;
    assert_eq!(
        signal_from_error(429, &h, body, now()),
        Some(signal(
            LimitKind::InsufficientQuota,
            "insufficient_quota",
            None,
            None
        ))
    );
}

#[test]
fn openai_rate_limit_body() {
    let body = br#"{"error":{"type":"tokens","code":"rate_limit_exceeded","message":"Rate limit reached for gpt-5 on tokens per min. Please try again in 1.5s."}}"#;
    let s = signal_from_error(429, &HeaderSignals::default(), body, now()).unwrap();
    assert_eq!(s.kind, LimitKind::RateLimit);
    assert_eq!(s.reason, "rate_limit_exceeded");
    assert_eq!(s.reset_in, Some(Duration::from_millis(1500)));
    // Headers beat the message.
    let h = headers(&[("retry-after-ms", "250")]);
    let s = signal_from_error(429, &h, body, now()).unwrap();
    assert_eq!(s.reset_in, Some(Duration::from_millis(250)));
}

#[test]
fn html_429_is_a_rate_limit_with_header_resets() {
    let h = headers(&[("retry-after", "9")]);
    assert_eq!(
        signal_from_error(
            429,
            &h,
            b"<html><h1>429 Too Many Requests</h1></html>",
            now()
        ),
        Some(signal(LimitKind::RateLimit, "http_429", Some(9), None))
    );
    // A JSON 429 with an unknown code keeps the code as the reason.
    assert_eq!(
        signal_from_error(
            429,
            &HeaderSignals::default(),
            br#"{"error":{"code":"slow_down"}}"#,
            now()
        ),
        Some(signal(LimitKind::RateLimit, "slow_down", Some(5), None))
    );
}

#[test]
fn other_errors_are_not_limits() {
    let body = br#"{"error":{"type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    assert_eq!(
        signal_from_error(400, &HeaderSignals::default(), body, now()),
        None
    );
    assert_eq!(
        signal_from_error(502, &HeaderSignals::default(), b"<html>", now()),
        None
    );
    // ...unless the body names a limit whatever the status.
    let body = br#"{"error":{"type":"usage_not_included"}}"#;
    assert_eq!(
        signal_from_error(403, &HeaderSignals::default(), body, now()).map(|s| s.kind),
        Some(LimitKind::UsageNotIncluded)
    );
}

#[test]
fn stream_failures() {
    assert_eq!(
        signal_from_stream_failure(
            "rate_limit_exceeded",
            "Rate limit reached for requests. Please try again in 20ms."
        ),
        Some(LimitSignal {
            kind: LimitKind::RateLimit,
            reason: "rate_limit_exceeded".into(),
            reset_in: Some(Duration::from_millis(20)),
            plan_type: None,
        })
    );
    assert_eq!(
        signal_from_stream_failure("rate_limit_exceeded", ""),
        Some(signal(
            LimitKind::RateLimit,
            "rate_limit_exceeded",
            Some(5),
            None
        ))
    );
    assert_eq!(
        signal_from_stream_failure("insufficient_quota", "You exceeded your current quota"),
        Some(signal(
            LimitKind::InsufficientQuota,
            "insufficient_quota",
            None,
            None
        ))
    );
    assert_eq!(
        signal_from_stream_failure("usage_limit_reached", "try again in 10s"),
        Some(signal(
            LimitKind::UsageLimit,
            "usage_limit_reached",
            None,
            None
        ))
    );
    assert_eq!(
        signal_from_stream_failure("context_length_exceeded", "too long"),
        None
    );
    assert_eq!(
        signal_from_stream_failure("server_is_overloaded", "try again in 1s"),
        None
    );
    assert_eq!(signal_from_stream_failure("\u{0}\u{ff}", "\u{fffd}"), None);
}
