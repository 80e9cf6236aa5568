//! The limit metrics: names, descriptions and updates (labels bounded: billing, window, kind).

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use super::signals::{LimitKind, RateWindow, WindowName};
use super::state::StateName;
use crate::billing::Billing;

pub const LIMIT_STATE: &str = "codex_sidecar_limit_state";
pub const LIMIT_USED_PERCENT: &str = "codex_sidecar_limit_used_percent";
pub const LIMIT_RESETS_AT: &str = "codex_sidecar_limit_resets_at_seconds";
pub const LIMIT_EVENTS: &str = "codex_sidecar_limit_events_total";
pub const HELD_REQUESTS: &str = "codex_sidecar_held_requests";

/// Registers the descriptions with the installed recorder.
pub fn describe() {
    describe_gauge!(
        LIMIT_STATE,
        "Limit state per billing source: 0 ok, 1 paused, 2 exhausted."
    );
    describe_gauge!(
        LIMIT_USED_PERCENT,
        Unit::Percent,
        "Used percent of the most used limit window the upstream reported."
    );
    describe_gauge!(
        LIMIT_RESETS_AT,
        Unit::Seconds,
        "Unix time at which that limit window resets."
    );
    describe_counter!(
        LIMIT_EVENTS,
        "Limit signals received from upstreams, by kind."
    );
    describe_gauge!(
        HELD_REQUESTS,
        "Requests waiting in the sidecar for a limit reset or pacing."
    );
}

/// Starting values, so every series exists from the start.
pub fn init() {
    for billing in Billing::ALL {
        gauge!(LIMIT_STATE, "billing" => billing.as_str()).set(0.0);
        gauge!(HELD_REQUESTS, "billing" => billing.as_str()).set(0.0);
    }
}

pub fn state(billing: Billing, state: StateName) {
    gauge!(LIMIT_STATE, "billing" => billing.as_str()).set(state.gauge_value());
}

pub fn event(billing: Billing, kind: LimitKind) {
    counter!(LIMIT_EVENTS, "billing" => billing.as_str(), "kind" => kind.as_str()).increment(1);
}

/// For each window name, the most used window over all families: the one that binds.
pub fn windows(billing: Billing, windows: &[RateWindow]) {
    for name in WindowName::ALL {
        let binding = windows
            .iter()
            .filter(|w| w.name == name)
            .max_by(|a, b| a.used_percent.total_cmp(&b.used_percent));
        let Some(window) = binding else { continue };
        let labels = [("billing", billing.as_str()), ("window", name.as_str())];
        gauge!(LIMIT_USED_PERCENT, &labels).set(window.used_percent);
        if let Some(at) = window.resets_at {
            // Unix seconds of this era fit an f64 exactly.
            gauge!(LIMIT_RESETS_AT, &labels).set(at as f64);
        }
    }
}

pub fn held(billing: Billing, delta: f64) {
    gauge!(HELD_REQUESTS, "billing" => billing.as_str()).increment(delta);
}
