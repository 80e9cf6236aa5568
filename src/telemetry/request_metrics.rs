//! Handles to the metrics every request updates, registered once.
//!
//! `counter!(name, labels...)` builds its key and looks it up in the recorder's registry on
//! every call: for the ten updates of a request that was about 6,000 instructions
//! (`benches/PROFILE.md`). A handle is a shared atomic: updating it is a few instructions.
//! The names and labels are those of SPEC "Metrics", as the macros gave them.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

use crate::billing::Billing;
use crate::ledger::Route;
use crate::usage::Usage;

/// Status classes, in the order of [`RouteMetrics::requests`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's handles.
pub struct RouteMetrics {
    pub inflight: Gauge,
    pub overhead: Histogram,
    by_billing: [BillingMetrics; 2],
}

/// One route and billing source's handles.
pub struct BillingMetrics {
    requests: [Counter; 5],
    pub duration: Histogram,
    pub first_byte: Histogram,
}

pub struct RequestMetrics {
    by_route: [RouteMetrics; 4],
    /// By billing source: input, cached input, output, reasoning.
    tokens: [[Counter; 4]; 2],
}

static HANDLES: OnceLock<RequestMetrics> = OnceLock::new();

/// The handles, registered with the process's recorder on first use.
pub fn request_metrics() -> &'static RequestMetrics {
    HANDLES.get_or_init(|| {
        // Handles taken before the recorder is installed would count into nothing.
        let _ = super::metrics_handle();
        RequestMetrics::register()
    })
}

impl RequestMetrics {
    fn register() -> Self {
        RequestMetrics {
            by_route: Route::ALL.map(|route| {
                let r = route.as_str();
                RouteMetrics {
                    inflight: metrics::gauge!("codex_sidecar_inflight_requests", "route" => r),
                    overhead: metrics::histogram!("codex_sidecar_overhead_seconds", "route" => r),
                    by_billing: Billing::ALL.map(|billing| {
                        let b = billing.as_str();
                        BillingMetrics {
                            requests: CLASSES.map(|class| {
                                metrics::counter!("codex_sidecar_requests_total",
                                    "route" => r, "billing" => b, "status" => class)
                            }),
                            duration: metrics::histogram!("codex_sidecar_request_duration_seconds",
                                "route" => r, "billing" => b),
                            first_byte: metrics::histogram!("codex_sidecar_upstream_first_byte_seconds",
                                "route" => r, "billing" => b),
                        }
                    }),
                }
            }),
            tokens: Billing::ALL.map(|billing| {
                let b = billing.as_str();
                ["input", "cached_input", "output", "reasoning"]
                    .map(|kind| metrics::counter!("codex_sidecar_tokens_total", "billing" => b, "kind" => kind))
            }),
        }
    }

    pub fn route(&self, route: Route) -> &RouteMetrics {
        &self.by_route[route_index(route)]
    }

    /// Adds a usage report to `tokens_total`.
    pub fn tokens(&self, billing: Billing, usage: &Usage) {
        let [input, cached, output, reasoning] = &self.tokens[billing_index(billing)];
        input.increment(usage.input);
        cached.increment(usage.cached_input);
        output.increment(usage.output);
        reasoning.increment(usage.reasoning);
    }
}

impl RouteMetrics {
    pub fn billing(&self, billing: Billing) -> &BillingMetrics {
        &self.by_billing[billing_index(billing)]
    }
}

impl BillingMetrics {
    /// `requests_total` for a status (its class; anything outside 100..=499 counts as 5xx).
    pub fn requests(&self, status: u16) -> &Counter {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        &self.requests[class]
    }
}

fn route_index(route: Route) -> usize {
    match route {
        Route::Responses => 0,
        Route::ResponsesCompact => 1,
        Route::Models => 2,
        Route::ChatCompletions => 3,
    }
}

fn billing_index(billing: Billing) -> usize {
    match billing {
        Billing::ChatgptPlan => 0,
        Billing::Org => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_the_all_arrays() {
        for (i, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route_index(route), i);
        }
        for (i, billing) in Billing::ALL.into_iter().enumerate() {
            assert_eq!(billing_index(billing), i);
        }
    }
}
