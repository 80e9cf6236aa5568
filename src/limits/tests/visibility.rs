//! Transitions, `/status` snapshots and metrics.

use http::HeaderMap;
use metrics_exporter_prometheus::PrometheusBuilder;

use super::*;
use crate::limits::{LimitKind, StateName, Transition};

#[tokio::test(start_paused = true)]
async fn every_transition_is_published() {
    let limits = limits(LimitsSettings::default());
    let mut events = limits.subscribe();
    limits.observe_response(&plan(), 429, &headers(&[("retry-after", "2")]));
    limits.observe_error_body(
        &plan(),
        429,
        &HeaderMap::new(),
        &usage_limit_body(T0 + 7200),
    );
    tokio::time::advance(secs(7200)).await;
    limits.snapshot();
    let paused = events.recv().await.unwrap();
    assert_eq!(
        paused,
        Transition {
            billing: Billing::ChatgptPlan,
            account: "acct-1".into(),
            from: StateName::Ok,
            to: StateName::Paused,
            reason: "http_429".into(),
            kind: Some(LimitKind::RateLimit),
            plan_type: None,
            until: Some("2025-11-24T16:00:02Z".into()),
            until_unix: Some(T0 + 2),
            at: "2025-11-24T16:00:00Z".into(),
        }
    );
    let exhausted = events.recv().await.unwrap();
    assert_eq!(
        serde_json::to_string(&exhausted).unwrap(),
        r#"{"billing":"chatgpt_plan","account":"acct-1","from":"paused","to":"exhausted","reason":"usage_limit_reached","kind":"usage_limit","plan_type":"plus","until":"2025-11-24T18:00:00Z","until_unix":1764007200,"at":"2025-11-24T16:00:00Z"}"#
    );
    let cleared = events.recv().await.unwrap();
    assert_eq!(
        serde_json::to_string(&cleared).unwrap(),
        r#"{"billing":"chatgpt_plan","account":"acct-1","from":"exhausted","to":"ok","reason":"reset_time_reached","kind":null,"plan_type":null,"until":null,"until_unix":null,"at":"2025-11-24T18:00:00Z"}"#
    );
    assert!(events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn snapshot_for_status() {
    let limits = limits(LimitsSettings::default());
    limits.admit(&LimitKey::org()).await.unwrap();
    let h = headers(&[
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-at", "1764003600"),
        ("x-codex-secondary-used-percent", "41.5"),
        ("x-codex-secondary-window-minutes", "10080"),
        ("x-codex-secondary-reset-at", "1764500000"),
        ("x-codex-credits-has-credits", "false"),
    ]);
    limits.observe_error_body(
        &plan(),
        429,
        &h,
        br#"{"error":{"type":"usage_limit_reached","plan_type":"plus"}}"#,
    );
    tokio::time::advance(secs(600)).await;
    let json = serde_json::to_string_pretty(&limits.snapshot()).unwrap();
    assert_eq!(
        json,
        r#"[
  {
    "billing": "chatgpt_plan",
    "account": "acct-1",
    "state": "exhausted",
    "reason": "usage_limit_reached",
    "kind": "usage_limit",
    "plan_type": "plus",
    "until": "2025-11-24T17:00:00Z",
    "until_unix": 1764003600,
    "resets_in_seconds": 3000,
    "held_requests": 0,
    "windows": [
      {
        "family": "codex",
        "name": "primary",
        "used_percent": 100.0,
        "window_minutes": 300,
        "resets_at": 1764003600
      },
      {
        "family": "codex",
        "name": "secondary",
        "used_percent": 41.5,
        "window_minutes": 10080,
        "resets_at": 1764500000
      }
    ],
    "credits": [
      {
        "family": "codex",
        "has_credits": false,
        "unlimited": null,
        "balance": null
      }
    ]
  },
  {
    "billing": "org",
    "account": "org",
    "state": "ok",
    "reason": null,
    "kind": null,
    "plan_type": null,
    "until": null,
    "until_unix": null,
    "resets_in_seconds": null,
    "held_requests": 0,
    "windows": [],
    "credits": []
  }
]"#
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_use_the_spec_names_and_bounded_labels() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    crate::limits::telemetry::describe();
    let limits = limits(LimitsSettings::default());
    let h = headers(&[
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-reset-at", "1764003600"),
        ("x-other-primary-used-percent", "20"),
        ("x-codex-secondary-used-percent", "41.5"),
        ("x-codex-secondary-reset-at", "1764500000"),
    ]);
    limits.observe_error_body(
        &plan(),
        429,
        &h,
        br#"{"error":{"type":"usage_limit_reached"}}"#,
    );
    limits.observe_response(&LimitKey::org(), 429, &headers(&[("retry-after", "5")]));
    let held = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.admit(&LimitKey::org()).await })
    };
    tokio::time::sleep(secs(1)).await;
    let text = handle.render();
    for line in [
        r#"codex_sidecar_limit_state{billing="chatgpt_plan"} 2"#,
        r#"codex_sidecar_limit_state{billing="org"} 1"#,
        r#"codex_sidecar_limit_used_percent{billing="chatgpt_plan",window="primary"} 100"#,
        r#"codex_sidecar_limit_used_percent{billing="chatgpt_plan",window="secondary"} 41.5"#,
        r#"codex_sidecar_limit_resets_at_seconds{billing="chatgpt_plan",window="primary"} 1764003600"#,
        r#"codex_sidecar_limit_resets_at_seconds{billing="chatgpt_plan",window="secondary"} 1764500000"#,
        r#"codex_sidecar_limit_events_total{billing="chatgpt_plan",kind="usage_limit"} 1"#,
        r#"codex_sidecar_limit_events_total{billing="org",kind="rate_limit"} 1"#,
        r#"codex_sidecar_held_requests{billing="org"} 1"#,
        r#"codex_sidecar_held_requests{billing="chatgpt_plan"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    held.await.unwrap().unwrap();
    let text = handle.render();
    assert!(
        text.lines()
            .any(|l| l == r#"codex_sidecar_held_requests{billing="org"} 0"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"codex_sidecar_limit_state{billing="org"} 0"#),
        "{text}"
    );
    // No family, account or reason ever becomes a label.
    assert!(!text.contains("acct-1") && !text.contains("other") && !text.contains("family"));
}
