//! Holding, releasing and refusing requests of a paused account; local pacing.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::*;
use crate::limits::{LimitKind, StateName};

#[tokio::test(start_paused = true)]
async fn ok_admits_at_once() {
    let limits = limits(LimitsSettings::default());
    let start = Instant::now();
    let permit = limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!permit.probe);
    assert_eq!(permit.key, plan());
}

#[tokio::test(start_paused = true)]
async fn paused_within_max_hold_waits_for_the_reset() {
    let limits = limits(LimitsSettings::default());
    let start = Instant::now();
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "2")]));
    let permit = limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), secs(2));
    assert!(!permit.probe);
    assert_eq!(limits.snapshot()[0].state, StateName::Ok);
    // Another billing source or account is not held.
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "2")]));
    let start = Instant::now();
    limits.admit(&LimitKey::org()).await.unwrap();
    limits
        .admit(&LimitKey::new(Billing::ChatgptPlan, "acct-2"))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// 100 requests during a 2 s pause: none goes before the reset, then at most `burst`
/// (20) at once, the rest one per 50 ms (`burst` a second).
#[tokio::test(start_paused = true)]
async fn hundred_concurrent_admits_during_a_2s_pause_leave_paced() {
    let limits = limits(LimitsSettings::default());
    let start = Instant::now();
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "2")]));
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let limits = limits.clone();
        tasks.spawn(async move {
            let permit = limits.admit(&plan()).await;
            (permit, Instant::now())
        });
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(limits.snapshot()[0].held_requests, 100);
    let mut released: BTreeMap<Duration, usize> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (permit, at) = joined.unwrap();
        assert!(permit.is_ok());
        *released.entry(at - start).or_default() += 1;
    }
    let first = released.iter().next().map(|(at, n)| (*at, *n));
    assert_eq!(first, Some((secs(2), 20)));
    assert!(released.values().all(|n| *n <= 20));
    let later: Vec<_> = released.iter().skip(1).map(|(at, n)| (*at, *n)).collect();
    let expected: Vec<_> = (1..=80u32)
        .map(|i| (secs(2) + Duration::from_millis(50) * i, 1))
        .collect();
    assert_eq!(later, expected);
    assert_eq!(limits.snapshot()[0].held_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn newcomers_during_the_release_queue_behind_the_held() {
    let settings = LimitsSettings {
        burst: 2,
        ..LimitsSettings::default()
    };
    let limits = limits(settings);
    let start = Instant::now();
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "1")]));
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let limits = limits.clone();
        tasks.spawn(async move { limits.admit(&plan()).await.map(|_| Instant::now()) });
    }
    tokio::time::sleep(Duration::from_millis(1001)).await;
    // Two held requests are still waiting for release: a newcomer does not jump the queue.
    let newcomer = limits.admit(&plan()).await.map(|_| Instant::now()).unwrap();
    assert!(newcomer - start >= Duration::from_millis(1500));
    while let Some(joined) = tasks.join_next().await {
        assert!(joined.unwrap().unwrap() - start >= secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn paused_beyond_max_hold_is_refused_at_once() {
    let limits = limits(LimitsSettings::default());
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "45")]));
    let start = Instant::now();
    let rejection = limits.admit(&plan()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(rejection.status, 429);
    assert_eq!(rejection.kind, LimitKind::RateLimit);
    assert_eq!(rejection.retry_after_secs, Some(45));
    assert_eq!(rejection.resets_at, Some(T0 + 45));
    assert_eq!(
        String::from_utf8(rejection.body()).unwrap(),
        r#"{"error":{"type":"rate_limit_exceeded","code":"rate_limit_exceeded","message":"The connected ChatGPT plan is rate limited (http_429); it resets in 45s (at 2025-11-24T16:00:45Z), longer than the sidecar holds requests (limits.max_hold = 30s). Retry after 45s.","param":null,"plan_type":null,"resets_at":1764000045,"resets_in_seconds":45}}"#
    );
    // 20 s later the reset is within max_hold: held, not refused.
    tokio::time::advance(secs(20)).await;
    let start = Instant::now();
    limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), secs(25));
}

#[tokio::test(start_paused = true)]
async fn a_pause_extended_past_max_hold_refuses_the_held() {
    let limits = limits(LimitsSettings::default());
    let start = Instant::now();
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "2")]));
    let held = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.admit(&plan()).await })
    };
    tokio::time::sleep(secs(1)).await;
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "60")]));
    let rejection = held.await.unwrap().unwrap_err();
    // It woke at the first reset, saw the new one beyond its hold, and was refused.
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(rejection.retry_after_secs, Some(59));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_is_no_longer_counted() {
    let limits = limits(LimitsSettings::default());
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "10")]));
    let waiter = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.admit(&plan()).await })
    };
    tokio::time::sleep(secs(1)).await;
    assert_eq!(limits.snapshot()[0].held_requests, 1);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(limits.snapshot()[0].held_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn local_pacing_per_billing_source() {
    let settings = LimitsSettings {
        requests_per_minute: 60,
        burst: 2,
        ..LimitsSettings::default()
    };
    let limits = limits(settings);
    let start = Instant::now();
    for _ in 0..2 {
        limits.admit(&plan()).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    limits.admit(&plan()).await.unwrap();
    assert_eq!(start.elapsed(), secs(1));
    // The org source has its own pacer.
    limits.admit(&LimitKey::org()).await.unwrap();
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn local_pacing_longer_than_max_hold_is_refused() {
    let settings = LimitsSettings {
        requests_per_minute: 1,
        burst: 1,
        ..LimitsSettings::default()
    };
    let limits = limits(settings);
    limits.admit(&plan()).await.unwrap();
    let start = Instant::now();
    let rejection = limits.admit(&plan()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        (
            rejection.status,
            rejection.error_type.as_str(),
            rejection.retry_after_secs
        ),
        (429, "rate_limit_exceeded", Some(60))
    );
}
