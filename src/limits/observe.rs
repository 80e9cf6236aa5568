//! What the proxy reports back after a request: headers, error bodies, stream failures,
//! successes. Each updates the account's windows and state.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

use super::admission::Permit;
use super::clock::ceil_secs;
use super::signals::{
    parse_headers, signal_from_error, signal_from_response, signal_from_stream_failure,
    HeaderSignals, LimitSignal,
};
use super::state::{Phase, REASON_SUCCEEDED};
use super::telemetry;
use super::tracker::{LimitKey, Limits};

impl Limits {
    /// Reads an upstream response's head: windows and credits (on every response, success
    /// too), the reached-type header, a 429, a window used up with a reset time.
    ///
    /// Call exactly one of this or [`Limits::observe_error_body`] per upstream response.
    /// Returns, for a 429, the `Retry-After` seconds the agent must see when a reset is
    /// known (CASES.md 9).
    pub fn observe_response(
        &self,
        key: &LimitKey,
        status: u16,
        headers: &HeaderMap,
    ) -> Option<u64> {
        let wall = self.inner.wall.now();
        let parsed = parse_headers(headers, wall);
        let signal = signal_from_response(status, &parsed, wall);
        self.apply(key, Some(&parsed), signal.as_ref(), wall);
        self.retry_after(key, status, signal.as_ref())
    }

    /// Reads a pre-stream error answer (status, headers and the body read in full): the
    /// body's limit kind (`type` or `code`), else the headers; any other 429, HTML
    /// included, is a rate limit. Returns what [`Limits::observe_response`] returns.
    pub fn observe_error_body(
        &self,
        key: &LimitKey,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<u64> {
        let wall = self.inner.wall.now();
        let parsed = parse_headers(headers, wall);
        let signal = signal_from_error(status, &parsed, body, wall);
        self.apply(key, Some(&parsed), signal.as_ref(), wall);
        self.retry_after(key, status, signal.as_ref())
    }

    /// Reads a `response.failed` event's `error.code` and `error.message` (CASES.md 4).
    pub fn observe_stream_failure(&self, key: &LimitKey, code: &str, message: &str) {
        let wall = self.inner.wall.now();
        let signal = signal_from_stream_failure(code, message);
        self.apply(key, None, signal.as_ref(), wall);
    }

    /// A request completed successfully. It clears an exhausted account when it was
    /// admitted during this exhaustion (the probe); a request that was already in flight
    /// when the account ran out proves nothing and clears nothing (CASES.md 7, 8).
    pub fn observe_success(&self, permit: &Permit) {
        let mut accounts = self.inner.lock();
        let Some(account) = accounts.get_mut(&permit.key) else {
            return;
        };
        let exhausted = matches!(account.state.phase, Phase::Exhausted { .. });
        if exhausted && permit.generation == account.state.generation {
            if let Some(change) = account.state.clear(REASON_SUCCEEDED) {
                self.inner
                    .publish(&permit.key, &account.state.phase, change);
            }
        }
    }

    fn apply(
        &self,
        key: &LimitKey,
        headers: Option<&HeaderSignals>,
        signal: Option<&LimitSignal>,
        wall: SystemTime,
    ) {
        let now = Instant::now();
        let inner = &self.inner;
        let mut accounts = inner.lock();
        let account = accounts
            .entry(key.clone())
            .or_insert_with(|| inner.new_account());
        if let Some(change) = account.state.expire(now) {
            inner.publish(key, &account.state.phase, change);
        }
        if let Some(headers) = headers {
            account
                .state
                .observe_windows(&headers.windows, &headers.credits);
            telemetry::windows(key.billing, &headers.windows);
        }
        let Some(signal) = signal else { return };
        telemetry::event(key.billing, signal.kind);
        tracing::debug!(
            billing = %key.billing, account = %key.account,
            kind = signal.kind.as_str(), reason = %signal.reason,
            reset_in = ?signal.reset_in,
            "limit signal"
        );
        let until_before = account.state.phase.until();
        let probe_every = inner.settings.exhausted_probe;
        match account.state.apply(signal, now, wall, probe_every) {
            Some(change) => inner.publish(key, &account.state.phase, change),
            // A pause extended: the expiry task must not wake too early and stop.
            None if account.state.phase.until() != until_before => inner.wake.notify_one(),
            None => {}
        }
    }

    /// For a 429: seconds until the account may be used again, else until the signal's
    /// own reset; `None` when no reset is known.
    fn retry_after(
        &self,
        key: &LimitKey,
        status: u16,
        signal: Option<&LimitSignal>,
    ) -> Option<u64> {
        if status != 429 {
            return None;
        }
        let now = Instant::now();
        let state_left = self
            .inner
            .lock()
            .get(key)
            .and_then(|a| a.state.phase.until())
            .map(|u| u.at.saturating_duration_since(now));
        let left: Option<Duration> = state_left.or_else(|| signal.and_then(|s| s.reset_in));
        left.map(ceil_secs)
    }
}
