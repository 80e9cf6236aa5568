//! One request's context as it passes the pipeline, and its single end: the
//! ledger record, the metrics and the access log line, written exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::app::App;
use crate::billing::Billing;
use crate::error::ApiError;
use crate::ledger::{LimitNote, Record, Timestamp};
use crate::limits::{LimitKey, Permit};
use crate::tap::Observer;
use crate::telemetry::request_metrics;
use crate::usage::Usage;

use super::route::Route;
use super::session::Pin;

pub use crate::ledger::Outcome;

pub struct Exchange {
    app: Arc<App>,
    pub id: String,
    started_wall: SystemTime,
    started: Instant,
    pub route: Route,
    pub session: String,
    pub pin: Option<Pin>,
    pub limit_key: Option<LimitKey>,
    /// The limits' leave for this request (a success reports back with it).
    pub permit: Option<Permit>,
    model: Option<String>,
    pub status: u16,
    upstream_sent: Option<Instant>,
    first_byte: Option<Duration>,
    upstream_request_id: Option<String>,
    limit: Option<LimitNote>,
    overhead: Duration,
    held: Duration,
    finished: bool,
}

impl Exchange {
    pub fn begin(app: Arc<App>, route: Route, session: String, started: Instant) -> Self {
        request_metrics().route(route).inflight.increment(1.0);
        Exchange {
            app,
            id: crate::ledger::new_id(),
            started_wall: SystemTime::now(),
            started,
            route,
            session,
            pin: None,
            limit_key: None,
            permit: None,
            model: None,
            status: 0,
            upstream_sent: None,
            first_byte: None,
            upstream_request_id: None,
            limit: None,
            overhead: Duration::ZERO,
            held: Duration::ZERO,
            finished: false,
        }
    }

    pub fn billing(&self) -> Billing {
        self.pin.as_ref().map_or(Billing::Org, |p| p.billing)
    }

    /// Time spent held by the limits: not the sidecar's overhead.
    pub fn held(&mut self, d: Duration) {
        self.held += d;
    }

    /// Marks the moment the request leaves for the upstream: the sidecar's own
    /// time so far (holds excluded) counts as overhead.
    pub fn sending(&mut self) {
        let now = Instant::now();
        self.overhead += now.duration_since(self.started).saturating_sub(self.held);
        self.upstream_sent = Some(now);
    }

    /// The upstream's response headers arrived.
    pub fn headers_arrived(&mut self, status: u16, request_id: Option<String>) -> Instant {
        let now = Instant::now();
        self.status = status;
        self.first_byte = self.upstream_sent.map(|s| now.duration_since(s));
        self.upstream_request_id = request_id;
        if let Some(fb) = self.first_byte {
            request_metrics()
                .route(self.route)
                .billing(self.billing())
                .first_byte
                .record(fb.as_secs_f64());
        }
        now
    }

    pub fn add_overhead(&mut self, d: Duration) {
        self.overhead += d;
    }

    pub fn set_model(&mut self, model: Option<String>) {
        if model.is_some() {
            self.model = model;
        }
    }

    pub fn set_limit(&mut self, kind: crate::limits::LimitKind, resets_at: Option<i64>) {
        self.limit = Some(LimitNote {
            kind: note_kind(kind),
            resets_at: resets_at.and_then(|t| u64::try_from(t).ok()),
        });
    }

    /// Takes what the stream reader learned.
    pub fn learn(&mut self, obs: &Observer) {
        if let Some(m) = obs.model() {
            self.model = Some(m.to_owned());
        }
        if self.upstream_request_id.is_none() {
            self.upstream_request_id = obs.response_id().map(str::to_owned);
        }
    }

    /// A `response.failed` (or error event) inside the stream: tell the limits.
    pub fn stream_failure(&mut self, code: &str, message: &str) {
        if let Some(key) = &self.limit_key {
            self.app.limits.observe_stream_failure(key, code, message);
            if let Some(signal) = crate::limits::signals::signal_from_stream_failure(code, message)
            {
                let resets_at = signal.reset_in.map(crate::time::unix_after);
                self.set_limit(signal.kind, resets_at);
            }
        }
    }

    /// The upstream broke off or went silent mid-stream.
    pub fn upstream_failed(&mut self, err: &ApiError) {
        tracing::warn!(request_id = %self.id, route = self.route.as_str(), error = %err.message, "upstream stream failed");
    }

    /// Writes the record, the metrics and the access line. Called once.
    pub fn finish(&mut self, outcome: Outcome, usage: Option<Usage>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let route = self.route.as_str();
        let billing = self.billing();
        let duration = self.started.elapsed();
        if outcome == Outcome::Completed {
            if let Some(permit) = &self.permit {
                self.app.limits.observe_success(permit);
            }
        }
        let status = recorded_status(self.status, outcome);
        let record = Record {
            id: self.id.clone(),
            ts: Timestamp::now(),
            started: Timestamp::from_unix_ms(
                self.started_wall
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            session: self.session.clone(),
            billing,
            route: self.route,
            model: self.model.clone(),
            status,
            outcome,
            usage,
            upstream_request_id: self.upstream_request_id.clone(),
            duration_ms: duration.as_millis() as u64,
            first_byte_ms: self.first_byte.map(|d| d.as_millis() as u64),
            limit: self.limit,
            account: self.pin.as_ref().and_then(|p| p.account.clone()),
        };
        if let Some(ledger) = &self.app.ledger {
            // Errors are counted and logged by the ledger itself.
            let _ = ledger.append(&record);
        }
        let by_route = request_metrics().route(self.route);
        let by_billing = by_route.billing(billing);
        by_billing.requests(status).increment(1);
        by_billing.duration.record(duration.as_secs_f64());
        by_route.overhead.record(self.overhead.as_secs_f64());
        by_route.inflight.decrement(1.0);
        if let Some(u) = &usage {
            request_metrics().tokens(billing, u);
        }
        tracing::info!(
            target: "codex_sidecar::access",
            request_id = record.id.as_str(),
            session = record.session.as_str(),
            billing = billing.as_str(),
            route,
            status = record.status,
            outcome = outcome.as_str(),
            model = record.model.as_deref().unwrap_or("-"),
            duration_ms = record.duration_ms,
            first_byte_ms = record.first_byte_ms,
            overhead_us = self.overhead.as_micros() as u64,
            input_tokens = usage.map(|u| u.input),
            output_tokens = usage.map(|u| u.output),
            "request"
        );
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Dropped unfinished: the agent went away while the request was held
        // or waiting for the upstream's headers.
        if !self.finished {
            self.finish(Outcome::ClientCancelled, None);
        }
    }
}

/// The status of the record: what the agent saw, or, when it went away before
/// any status was sent, 499 (nginx's "client closed request"; never 0).
fn recorded_status(status: u16, outcome: Outcome) -> u16 {
    match (status, outcome) {
        (0, Outcome::ClientCancelled) => 499,
        (0, _) => 502,
        (s, _) => s,
    }
}

/// The ledger's name for a limit kind.
fn note_kind(k: crate::limits::LimitKind) -> crate::ledger::LimitKind {
    use crate::ledger::LimitKind as L;
    use crate::limits::LimitKind as K;
    match k {
        K::RateLimit => L::RateLimit,
        K::UsageLimit => L::UsageLimit,
        K::UsageNotIncluded => L::UsageNotIncluded,
        K::InsufficientQuota => L::InsufficientQuota,
    }
}
