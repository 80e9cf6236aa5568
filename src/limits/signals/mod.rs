//! Limit signals: pure functions that read what an upstream answer says about limits.
//!
//! Nothing here touches state; [`crate::limits::Limits`] applies the [`LimitSignal`]s.

mod body;
mod durations;
mod headers;

use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use body::{parse_error_body, ErrorBody};
pub use durations::{
    parse_go_duration, parse_retry_after, parse_retry_after_ms, parse_seconds, parse_try_again_in,
    MAX_RESET,
};
pub use headers::{
    parse_headers, parse_unix_seconds, unix_after, ApiRateLimit, Credits, HeaderSignals,
    RateWindow, WindowName,
};

/// How long to pause on a rate limit that names no reset at all (an HTML 429, a
/// `response.failed` without "try again in"): short, so the agent retries soon, long enough
/// not to hammer the upstream.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(5);

/// Codes longer than this are not codes (bounds what a hostile answer can make us keep).
const MAX_CODE_LEN: usize = 64;

/// What kind of limit an answer reports; the `kind` label of `limit_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Too many requests or tokens for now: pause.
    RateLimit,
    /// The plan's usage (or a workspace's usage or credits) is used up: exhausted.
    UsageLimit,
    /// The plan does not include Codex: exhausted.
    UsageNotIncluded,
    /// The API quota is used up: exhausted.
    InsufficientQuota,
}

impl LimitKind {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RateLimit => "rate_limit",
            LimitKind::UsageLimit => "usage_limit",
            LimitKind::UsageNotIncluded => "usage_not_included",
            LimitKind::InsufficientQuota => "insufficient_quota",
        }
    }

    /// Whether this kind exhausts the account (rather than pausing it).
    pub fn exhausts(self) -> bool {
        self != LimitKind::RateLimit
    }

    /// The OpenAI-shaped error `type`/`code` that Codex recognises for this kind.
    pub fn error_type(self) -> &'static str {
        match self {
            LimitKind::RateLimit => "rate_limit_exceeded",
            LimitKind::UsageLimit => "usage_limit_reached",
            LimitKind::UsageNotIncluded => "usage_not_included",
            LimitKind::InsufficientQuota => "insufficient_quota",
        }
    }
}

/// The limit kind an upstream error `type`, `code` or reached-type token names, if any.
pub fn classify_code(code: &str) -> Option<LimitKind> {
    let code = code.trim();
    if code.len() > MAX_CODE_LEN {
        return None;
    }
    let code = code.to_ascii_lowercase();
    match code.as_str() {
        "usage_limit_reached" => Some(LimitKind::UsageLimit),
        "usage_not_included" => Some(LimitKind::UsageNotIncluded),
        "insufficient_quota" => Some(LimitKind::InsufficientQuota),
        "rate_limit_exceeded"
        | "rate_limit_reached"
        | "rate_limit_error"
        | "requests"
        | "tokens" => Some(LimitKind::RateLimit),
        // workspace_{owner,member}_usage_limit_reached, workspace_{owner,member}_credits_depleted
        c if c.starts_with("workspace_")
            && (c.ends_with("_usage_limit_reached") || c.ends_with("_credits_depleted")) =>
        {
            Some(LimitKind::UsageLimit)
        }
        _ => None,
    }
}

/// One limit signal, ready to apply to an account's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSignal {
    pub kind: LimitKind,
    /// Short machine token: the upstream code (`usage_limit_reached`, `rate_limit_exceeded`,
    /// ...), `http_429`, or `primary_window_used_up` / `secondary_window_used_up`.
    pub reason: String,
    /// Time from the observation to the reset. Always set for [`LimitKind::RateLimit`]
    /// ([`DEFAULT_RATE_LIMIT_PAUSE`] when nothing said); `None` = unknown.
    pub reset_in: Option<Duration>,
    pub plan_type: Option<String>,
}

/// The signal in a response's status and headers (no body read): the reached-type
/// header, a 429, or a window used up (≥ 100 %) with a reset time.
pub fn signal_from_response(
    status: u16,
    headers: &HeaderSignals,
    now: SystemTime,
) -> Option<LimitSignal> {
    if let Some((kind, reason)) = reached_type(headers) {
        return Some(build(kind, reason, headers, None, None, now));
    }
    if status == 429 {
        return Some(build(
            LimitKind::RateLimit,
            "http_429".into(),
            headers,
            None,
            None,
            now,
        ));
    }
    used_up(headers, now)
}

/// The signal in a pre-stream error answer: the body's kind first, then the headers; any
/// other 429 (HTML included) is a rate limit.
pub fn signal_from_error(
    status: u16,
    headers: &HeaderSignals,
    body: &[u8],
    now: SystemTime,
) -> Option<LimitSignal> {
    let parsed = parse_error_body(body, now);
    let message = parsed.as_ref().and_then(|b| b.message.as_deref());
    let kind_and_reason = match parsed.as_ref() {
        Some(ErrorBody {
            kind: Some(kind),
            code: Some(code),
            ..
        }) => Some((*kind, code.clone())),
        _ => reached_type(headers),
    }
    .or_else(|| {
        let code = parsed.as_ref().and_then(|b| b.code.clone());
        (status == 429).then(|| {
            (
                LimitKind::RateLimit,
                code.unwrap_or_else(|| "http_429".into()),
            )
        })
    });
    match kind_and_reason {
        Some((kind, reason)) => {
            let mut signal = build(kind, reason, headers, parsed.as_ref(), message, now);
            signal.plan_type = parsed.and_then(|b| b.plan_type);
            Some(signal)
        }
        None => used_up(headers, now),
    }
}

/// The signal in a stream's `response.failed` event (`error.code`, `error.message`).
///
/// Codes that are not limits (`context_length_exceeded`, `server_is_overloaded`, ...) give
/// `None`.
pub fn signal_from_stream_failure(code: &str, message: &str) -> Option<LimitSignal> {
    let kind = classify_code(code)?;
    // "try again in" describes rate limits; a used-up plan's reset is not in the message.
    let reset_in = (kind == LimitKind::RateLimit)
        .then(|| parse_try_again_in(message))
        .flatten();
    Some(LimitSignal {
        kind,
        reason: code.trim().to_ascii_lowercase(),
        reset_in: with_default(kind, reset_in),
        plan_type: None,
    })
}

fn reached_type(headers: &HeaderSignals) -> Option<(LimitKind, String)> {
    let reached = headers.reached_type.as_deref()?;
    Some((classify_code(reached)?, reached.to_owned()))
}

fn used_up(headers: &HeaderSignals, now: SystemTime) -> Option<LimitSignal> {
    let window = headers.used_up_window()?;
    Some(LimitSignal {
        kind: LimitKind::RateLimit,
        reason: format!("{}_window_used_up", window.name.as_str()),
        reset_in: window.resets_at.map(|at| until_unix(at, now)),
        plan_type: None,
    })
}

/// Resolves the reset, most specific source first: the body's `resets_at` /
/// `resets_in_seconds`, `Retry-After`, (rate limits) `x-ratelimit-reset-*`, a used-up
/// window's reset, (rate limits) "try again in" in the message.
fn build(
    kind: LimitKind,
    reason: String,
    headers: &HeaderSignals,
    body: Option<&ErrorBody>,
    message: Option<&str>,
    now: SystemTime,
) -> LimitSignal {
    let rate = kind == LimitKind::RateLimit;
    let reset_in = body
        .and_then(|b| b.reset_in(now))
        .or(headers.retry_after)
        .or_else(|| headers.api_reset().filter(|_| rate))
        .or_else(|| {
            let at = headers.used_up_window()?.resets_at?;
            Some(until_unix(at, now))
        })
        .or_else(|| message.filter(|_| rate).and_then(parse_try_again_in));
    LimitSignal {
        kind,
        reason,
        reset_in: with_default(kind, reset_in),
        plan_type: None,
    }
}

fn with_default(kind: LimitKind, reset_in: Option<Duration>) -> Option<Duration> {
    match kind {
        LimitKind::RateLimit => Some(reset_in.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)),
        _ => reset_in,
    }
}

/// Time from `now` to the unix time `at` (zero when past).
fn until_unix(at: i64, now: SystemTime) -> Duration {
    let at = u64::try_from(at)
        .ok()
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    at.and_then(|at| at.duration_since(now).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
