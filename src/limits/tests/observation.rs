//! What each answer teaches the state, the Retry-After the agent must see, hostile input.

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::*;
use crate::limits::{LimitKind, StateName};

/// CASES.md 4: a `response.failed` `rate_limit_exceeded` mid-stream pauses the account;
/// the next request is held for the "try again in" delay, then goes.
#[tokio::test(start_paused = true)]
async fn case_04_mid_stream_rate_limit_holds_the_next_request() {
    let limits = limits(LimitsSettings::default());
    limits.observe_response(
        &plan(),
        200,
        &headers(&[("content-type", "text/event-stream")]),
    );
    limits.observe_stream_failure(
        &plan(),
        "rate_limit_exceeded",
        "Rate limit reached for gpt-5 on requests per min. Please try again in 1.5s.",
    );
    let snapshot = &limits.snapshot()[0];
    assert_eq!(
        (
            snapshot.state,
            snapshot.reason.as_deref(),
            snapshot.until_unix
        ),
        (StateName::Paused, Some("rate_limit_exceeded"), Some(T0 + 2))
    );
    let start = Instant::now();
    limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn mid_stream_usage_limit_exhausts_and_other_failures_teach_nothing() {
    let limits = limits(LimitsSettings::default());
    limits.observe_stream_failure(&plan(), "context_length_exceeded", "too long");
    limits.observe_stream_failure(&plan(), "server_is_overloaded", "try again in 3s");
    assert_eq!(limits.snapshot()[0].state, StateName::Ok);
    limits.observe_stream_failure(&plan(), "insufficient_quota", "quota");
    assert_eq!(limits.snapshot()[0].state, StateName::Exhausted);
    assert_eq!(
        limits.admit(&plan()).await.unwrap_err().kind,
        LimitKind::InsufficientQuota
    );
}

/// CASES.md 9: every upstream 429 the agent sees gets a standard Retry-After whenever a
/// reset is known, wherever the upstream put it.
#[tokio::test(start_paused = true)]
async fn case_09_retry_after_for_every_429_with_a_known_reset() {
    let key = |n: &str| LimitKey::new(Billing::ChatgptPlan, n);
    let limits = limits(LimitsSettings::default());
    let none = HeaderMap::new();
    // In the body only (resets_in_seconds).
    let body = br#"{"error":{"type":"usage_limit_reached","resets_in_seconds":3600}}"#;
    assert_eq!(
        limits.observe_error_body(&key("a"), 429, &none, body),
        Some(3600)
    );
    // In x-ratelimit-reset-requests only, on an HTML 429 (rounded up).
    let h = headers(&[("x-ratelimit-reset-requests", "1.5s")]);
    assert_eq!(
        limits.observe_error_body(&key("b"), 429, &h, b"<html>slow down</html>"),
        Some(2)
    );
    // retry-after-ms only.
    let h = headers(&[("retry-after-ms", "2500")]);
    assert_eq!(limits.observe_response(&key("c"), 429, &h), Some(3));
    // "try again in" in the message only.
    let body = br#"{"error":{"code":"rate_limit_exceeded","message":"Please try again in 6m0s."}}"#;
    assert_eq!(
        limits.observe_error_body(&key("d"), 429, &none, body),
        Some(360)
    );
    // A used-up window's reset only.
    let h = headers(&[
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-reset-at", "1764000700"),
    ]);
    let body = br#"{"error":{"type":"usage_limit_reached"}}"#;
    assert_eq!(
        limits.observe_error_body(&key("e"), 429, &h, body),
        Some(700)
    );
    // Nothing said about a rate limit: the sidecar's own short pause.
    assert_eq!(
        limits.observe_error_body(&key("f"), 429, &none, b""),
        Some(5)
    );
    // An account already paused longer: the agent must wait for that.
    limits.observe_response(&key("g"), 429, &headers(&[("retry-after", "40")]));
    assert_eq!(
        limits.observe_response(&key("g"), 429, &headers(&[("retry-after", "1")])),
        Some(40)
    );
    // Unknown reset on a used-up plan: no invented Retry-After.
    assert_eq!(
        limits.observe_error_body(
            &key("h"),
            429,
            &none,
            br#"{"error":{"type":"usage_not_included"}}"#
        ),
        None
    );
    // Not a 429: no Retry-After.
    let body = br#"{"error":{"type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    assert_eq!(limits.observe_error_body(&key("i"), 400, &none, body), None);
}

#[tokio::test(start_paused = true)]
async fn a_full_window_on_a_success_pauses_until_its_reset() {
    let limits = limits(LimitsSettings::default());
    let h = headers(&[
        ("x-codex-primary-used-percent", "100.0"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-at", "1764000010"),
    ]);
    assert_eq!(limits.observe_response(&plan(), 200, &h), None);
    let snapshot = &limits.snapshot()[0];
    assert_eq!(
        (snapshot.state, snapshot.reason.as_deref()),
        (StateName::Paused, Some("primary_window_used_up"))
    );
    let start = Instant::now();
    limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn reached_type_header_on_a_429() {
    let limits = limits(LimitsSettings::default());
    let h = headers(&[
        (
            "x-codex-rate-limit-reached-type",
            "workspace_member_usage_limit_reached",
        ),
        ("retry-after", "600"),
    ]);
    assert_eq!(limits.observe_response(&plan(), 429, &h), Some(600));
    let r = limits.admit(&plan()).await.unwrap_err();
    assert_eq!(
        (r.error_type.as_str(), r.retry_after_secs),
        ("usage_limit_reached", Some(600))
    );
}

#[tokio::test(start_paused = true)]
async fn hostile_answers_never_panic_and_teach_nothing() {
    let limits = limits(LimitsSettings::default());
    let mut h = headers(&[
        ("retry-after", "99999999999999999999999999"),
        ("retry-after-ms", "NaN"),
        ("x-codex-primary-used-percent", "1e999"),
        ("x-codex-primary-reset-at", "-9223372036854775808"),
        ("x-codex-secondary-used-percent", "-0"),
        ("x-codex-secondary-reset-at", "9223372036854775807"),
        ("x-codex-rate-limit-reached-type", "totally_unknown"),
        ("x-ratelimit-reset-requests", "-1s"),
        ("x-ratelimit-reset-tokens", "999999999999h"),
    ]);
    h.append(
        "retry-after",
        HeaderValue::from_bytes(b"\xff\xfe\xfd").unwrap(),
    );
    h.append(
        "x-a-primary-used-percent",
        HeaderValue::from_bytes(b"\x80").unwrap(),
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"{\"error\":{\"resets_at\":-1,\"resets_in_seconds\":18446744073709551616}}".to_vec(),
        b"{\"error\":{\"type\":[],\"code\":{},\"message\":null}}".to_vec(),
        b"{\"error\":null}".to_vec(),
        "[".repeat(200_000).into_bytes(),
        pseudo_random_bytes(64 * 1024),
    ];
    for status in [200, 400, 401, 403, 500, 503] {
        assert_eq!(limits.observe_response(&plan(), status, &h), None);
        for body in &bodies {
            assert_eq!(limits.observe_error_body(&plan(), status, &h, body), None);
        }
    }
    for (code, message) in [
        ("", ""),
        ("\u{0}", "\u{fffd}"),
        ("x".repeat(10_000).as_str(), "try again in 1e400s"),
    ] {
        limits.observe_stream_failure(&plan(), code, message);
    }
    let snapshot = &limits.snapshot()[0];
    assert_eq!(snapshot.state, StateName::Ok);
    // "-0" is a valid 0 %; the rest of the windows were garbage.
    assert_eq!(snapshot.windows.len(), 1);
    // The hostile 429 is still a rate limit (a 429 is a 429), paused for the default.
    let noise = bodies.last().unwrap();
    assert_eq!(limits.observe_error_body(&plan(), 429, &h, noise), Some(5));
    // A real kind with garbage numbers: exhausted, with the garbage reset ignored.
    let body =
        br#"{"error":{"type":"usage_limit_reached","resets_at":1e308,"resets_in_seconds":-4}}"#;
    let key = LimitKey::new(Billing::ChatgptPlan, "acct-2");
    assert_eq!(
        limits.observe_error_body(&key, 429, &HeaderMap::new(), body),
        None
    );
    let snapshot = limits
        .snapshot()
        .into_iter()
        .find(|s| s.account == "acct-2")
        .unwrap();
    assert_eq!(
        (snapshot.state, snapshot.until_unix),
        (StateName::Exhausted, None)
    );
}

/// Deterministic noise (xorshift), so the test needs no random crate and never flakes.
fn pseudo_random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}
