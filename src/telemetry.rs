//! Metric names, descriptions and buckets (SPEC "Metrics"), the Prometheus
//! recorder, and log setup.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

mod json_line;
mod request_metrics;

pub use request_metrics::request_metrics;

/// Buckets that resolve sub-millisecond overhead.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];
/// Buckets from a fast JSON answer to a multi-minute stream.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("codex_sidecar_overhead_seconds".into()),
                    &OVERHEAD_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Fails only if another recorder is installed (tests): keep ours for rendering.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Drains histogram samples into their buckets every few seconds: the
/// recorder otherwise keeps every sample until the next scrape, so a sidecar
/// nobody scrapes (a developer's machine) would grow for ever.
pub async fn metrics_upkeep() {
    let handle = metrics_handle();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(
        "codex_sidecar_requests_total",
        "Requests that reached the route table, by route, billing source and status class."
    );
    describe_histogram!(
        "codex_sidecar_request_duration_seconds",
        Unit::Seconds,
        "Whole request time, to the last byte of the answer."
    );
    describe_histogram!(
        "codex_sidecar_upstream_first_byte_seconds",
        Unit::Seconds,
        "From sending the request upstream to its response headers."
    );
    describe_histogram!(
        "codex_sidecar_overhead_seconds",
        Unit::Seconds,
        "Time spent inside the sidecar, upstream wait excluded."
    );
    describe_gauge!("codex_sidecar_inflight_requests", "Requests in progress.");
    describe_counter!(
        "codex_sidecar_tokens_total",
        "Tokens the upstream reported, by billing source and kind."
    );
    describe_counter!(
        "codex_sidecar_limit_events_total",
        "Rate-limit and usage-limit signals seen, by billing source and kind."
    );
    describe_gauge!(
        "codex_sidecar_limit_state",
        "Limit state per billing source: 0 ok, 1 paused, 2 exhausted."
    );
    describe_gauge!(
        "codex_sidecar_limit_used_percent",
        "Used percent of the plan's limit windows."
    );
    describe_gauge!(
        "codex_sidecar_limit_resets_at_seconds",
        Unit::Seconds,
        "Unix time at which a limit window resets."
    );
    describe_gauge!(
        "codex_sidecar_held_requests",
        "Requests waiting for a rate limit to reset."
    );
    describe_gauge!(
        "codex_sidecar_sessions",
        "Known sessions by billing source and state."
    );
    describe_gauge!(
        "codex_sidecar_credential_state",
        "1 for the current state of each credential source."
    );
    describe_counter!(
        "codex_sidecar_credential_refresh_total",
        "ChatGPT token refreshes by outcome."
    );
    describe_counter!(
        "codex_sidecar_upstream_errors_total",
        "Upstream failures by kind."
    );
    describe_counter!(
        "codex_sidecar_ledger_records_total",
        "Ledger records written, by billing source."
    );
    describe_counter!(
        "codex_sidecar_ledger_write_errors_total",
        "Ledger records that could not be written."
    );
    describe_gauge!(
        "codex_sidecar_build_info",
        "Always 1; the version label says which build runs."
    );
    metrics::gauge!("codex_sidecar_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Pre-create bounded series so dashboards and alerts see zeros, not gaps.
    for kind in ["connect", "tls", "timeout", "reset", "protocol"] {
        metrics::counter!("codex_sidecar_upstream_errors_total", "kind" => kind).absolute(0);
    }
    metrics::counter!("codex_sidecar_ledger_write_errors_total").absolute(0);
    for outcome in ["ok", "failed", "permanent_failure"] {
        metrics::counter!("codex_sidecar_credential_refresh_total", "outcome" => outcome)
            .absolute(0);
    }
    for billing in crate::billing::Billing::ALL {
        for kind in [
            "rate_limit",
            "usage_limit",
            "usage_not_included",
            "insufficient_quota",
        ] {
            metrics::counter!("codex_sidecar_limit_events_total", "billing" => billing.as_str(), "kind" => kind).absolute(0);
        }
        let b = billing.as_str();
        metrics::counter!("codex_sidecar_ledger_records_total", "billing" => b).absolute(0);
        for kind in ["input", "cached_input", "output", "reasoning"] {
            metrics::counter!("codex_sidecar_tokens_total", "billing" => b, "kind" => kind)
                .absolute(0);
        }
        for route in crate::ledger::Route::ALL {
            for class in ["2xx", "4xx", "5xx"] {
                metrics::counter!("codex_sidecar_requests_total", "route" => route.as_str(), "billing" => b, "status" => class)
                    .absolute(0);
            }
        }
    }
}

/// Counts one upstream failure.
pub fn upstream_error(kind: &'static str) {
    metrics::counter!("codex_sidecar_upstream_errors_total", "kind" => kind).increment(1);
}

/// Sets up logging to stderr. Returns a handle to change the level on reload.
pub fn init_logging(format: LogFormat, level: &str) -> Option<LogReload> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(json_line::JsonLine::new())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    result.ok().map(|_| LogReload(handle))
}

/// Changes the log level of a running process (SIGHUP).
pub struct LogReload(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl LogReload {
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.0.reload(f).map_err(|e| e.to_string())
    }
}
