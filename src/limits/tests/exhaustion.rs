//! Used-up accounts: immediate refusals, periodic probes, clearing (CASES.md 7, 8).

use http::HeaderMap;
use tokio::time::Instant;

use super::*;
use crate::limits::{LimitKind, StateName, Transition};

/// CASES.md 7: after one `usage_limit_reached`, no request reaches that account before
/// `resets_at` except one probe every `exhausted_probe` (30 min), even with a client
/// retrying every 10 s for the whole 2 hours.
#[tokio::test(start_paused = true)]
async fn case_07_used_up_plan_is_not_retried_before_resets_at_except_the_probe() {
    let limits = limits(LimitsSettings::default());
    let start = Instant::now();
    let resets_at = T0 + 7200;
    let retry = limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(resets_at),
    );
    assert_eq!(retry, Some(7200));
    let mut upstream_calls = Vec::new();
    loop {
        let elapsed = start.elapsed();
        match limits.admit(&plan()).await {
            Ok(permit) => {
                upstream_calls.push((elapsed.as_secs(), permit.probe));
                if elapsed >= secs(7200) {
                    break;
                }
                // The upstream still says used up.
                limits.observe_error_body(
                    &plan(),
                    429,
                    &HeaderMap::new(),
                    &usage_limit_body(resets_at),
                );
            }
            Err(rejection) => {
                assert_eq!(rejection.error_type, "usage_limit_reached");
                assert_eq!(rejection.resets_at, Some(resets_at));
                assert_eq!(rejection.plan_type.as_deref(), Some("plus"));
                let left = 7200 - elapsed.as_secs();
                assert_eq!(rejection.retry_after_secs, Some(left));
            }
        }
        tokio::time::advance(secs(10)).await;
    }
    assert_eq!(
        upstream_calls,
        vec![(1800, true), (3600, true), (5400, true), (7200, false)]
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_refusal_is_the_codex_usage_limit_answer() {
    let limits = limits(LimitsSettings::default());
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 8040),
    );
    tokio::time::advance(secs(60)).await;
    let rejection = limits.admit(&plan()).await.unwrap_err();
    assert_eq!(
        (rejection.status, rejection.retry_after_secs),
        (429, Some(7980))
    );
    assert_eq!(
        String::from_utf8(rejection.body()).unwrap(),
        r#"{"error":{"type":"usage_limit_reached","code":"usage_limit_reached","message":"The connected ChatGPT plan has reached its usage limit (usage_limit_reached, plan plus); it resets in 2h 13m (at 2025-11-24T18:14:00Z). Requests resume by themselves then.","param":null,"plan_type":"plus","resets_at":1764008040,"resets_in_seconds":7980}}"#
    );
}

#[tokio::test(start_paused = true)]
async fn usage_not_included_and_insufficient_quota_refusals() {
    let limits = limits(LimitsSettings::default());
    let body = br#"{"error":{"type":"usage_not_included","plan_type":"free"}}"#;
    assert_eq!(
        limits.observe_error_body(&plan(), 429, &HeaderMap::new(), body),
        None
    );
    let r = limits.admit(&plan()).await.unwrap_err();
    assert_eq!(
        (
            r.error_type.as_str(),
            r.code.as_str(),
            r.kind,
            r.retry_after_secs,
            r.resets_at
        ),
        (
            "usage_not_included",
            "usage_not_included",
            LimitKind::UsageNotIncluded,
            None,
            None
        )
    );
    let org = LimitKey::org();
    let body = br#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota"}}"#;
    limits.observe_error_body(&org, 429, &HeaderMap::new(), body);
    let r = limits.admit(&org).await.unwrap_err();
    assert_eq!(
        (r.error_type.as_str(), r.kind),
        ("insufficient_quota", LimitKind::InsufficientQuota)
    );
}

/// CASES.md 8: the state clears by itself at `resets_at`, with no request and no restart.
#[tokio::test(start_paused = true)]
async fn case_08_exhausted_clears_by_itself_at_resets_at() {
    let limits = limits(LimitsSettings::default());
    let mut events = limits.subscribe();
    let expiry = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.run_expiry().await })
    };
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 3600),
    );
    assert_eq!(events.recv().await.unwrap().to, StateName::Exhausted);
    let start = Instant::now();
    let cleared: Transition = events.recv().await.unwrap();
    assert_eq!(start.elapsed(), secs(3600));
    assert_eq!(
        (
            cleared.from,
            cleared.to,
            cleared.reason.as_str(),
            cleared.at.as_str()
        ),
        (
            StateName::Exhausted,
            StateName::Ok,
            "reset_time_reached",
            "2025-11-24T17:00:00Z"
        )
    );
    assert_eq!(limits.snapshot()[0].state, StateName::Ok);
    let permit = limits.admit(&plan()).await.unwrap();
    assert!(!permit.probe);
    expiry.abort();
}

/// CASES.md 8: the first success (the probe) clears it too.
#[tokio::test(start_paused = true)]
async fn case_08_exhausted_clears_on_the_first_success() {
    let limits = limits(LimitsSettings::default());
    // No reset known at all: only a probe can clear it.
    let body = br#"{"error":{"type":"usage_limit_reached"}}"#;
    limits.observe_error_body(&plan(), 429, &HeaderMap::new(), body);
    assert!(limits.admit(&plan()).await.is_err());
    tokio::time::advance(secs(1800)).await;
    let probe = limits.admit(&plan()).await.unwrap();
    assert!(probe.probe);
    // Only one probe per interval.
    assert!(limits.admit(&plan()).await.is_err());
    limits.observe_success(&probe);
    assert_eq!(limits.snapshot()[0].state, StateName::Ok);
    let next = limits.admit(&plan()).await.unwrap();
    assert!(!next.probe);
}

/// CASES.md 7: a long request admitted before the account ran out finishes fine; that
/// proves nothing about the account now and must not reopen it.
#[tokio::test(start_paused = true)]
async fn case_07_success_of_a_request_admitted_before_exhaustion_does_not_clear() {
    let limits = limits(LimitsSettings::default());
    let in_flight = limits.admit(&plan()).await.unwrap();
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 3600),
    );
    limits.observe_success(&in_flight);
    assert_eq!(limits.snapshot()[0].state, StateName::Exhausted);
    assert!(limits.admit(&plan()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_keeps_the_account_exhausted_and_waits_a_full_interval() {
    let limits = limits(LimitsSettings::default());
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 86_400),
    );
    tokio::time::advance(secs(1800)).await;
    let probe = limits.admit(&plan()).await.unwrap();
    assert!(probe.probe);
    // The probe got a 500: no limit signal, nothing cleared.
    limits.observe_error_body(&plan(), 500, &HeaderMap::new(), b"<html>oops</html>");
    tokio::time::advance(secs(1799)).await;
    assert!(limits.admit(&plan()).await.is_err());
    tokio::time::advance(secs(1)).await;
    assert!(limits.admit(&plan()).await.unwrap().probe);
}

#[tokio::test(start_paused = true)]
async fn probes_off_means_no_probe() {
    let settings = LimitsSettings {
        exhausted_probe: Duration::ZERO,
        ..LimitsSettings::default()
    };
    let limits = limits(settings);
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 86_400),
    );
    tokio::time::advance(secs(86_399)).await;
    assert!(limits.admit(&plan()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_credential_change_clears_the_account() {
    let limits = limits(LimitsSettings::default());
    let mut events = limits.subscribe();
    limits.observe_response(
        &plan(),
        200,
        &headers(&[
            ("x-codex-primary-used-percent", "30"),
            ("x-codex-primary-reset-at", "1764003600"),
        ]),
    );
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 3600),
    );
    limits.reset_account(&plan());
    let snapshot = &limits.snapshot()[0];
    assert_eq!((snapshot.state, snapshot.windows.len()), (StateName::Ok, 0));
    assert!(!limits.admit(&plan()).await.unwrap().probe);
    events.recv().await.unwrap();
    let cleared = events.recv().await.unwrap();
    assert_eq!(cleared.reason, "credential_changed");
}

#[tokio::test(start_paused = true)]
async fn fallback_setting_is_visible_to_the_proxy() {
    let settings = LimitsSettings {
        on_usage_limit: crate::limits::OnUsageLimit::FallbackToOrg,
        ..LimitsSettings::default()
    };
    let limits = limits(settings);
    assert_eq!(
        limits.settings().on_usage_limit,
        crate::limits::OnUsageLimit::FallbackToOrg
    );
}
