//! The 429 answers the sidecar gives instead of touching a limited upstream, shaped as
//! Codex 0.171.0 parses them (PROTOCOL.md §4).

use std::time::Duration;

use serde::Serialize;

use super::clock::{ceil_secs, format_resets_in};
use super::signals::LimitKind;
use super::state::Deadline;
use crate::billing::Billing;

/// Why `admit` refused a request; render with [`Rejection::body`] and send `status`,
/// `content-type: application/json` and, when set, `Retry-After: retry_after_secs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub error_type: String,
    pub code: String,
    /// What hit, and when it resets, for a person.
    pub message: String,
    pub retry_after_secs: Option<u64>,
    pub plan_type: Option<String>,
    /// Unix seconds.
    pub resets_at: Option<i64>,
    pub kind: LimitKind,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    code: &'a str,
    message: &'a str,
    param: Option<()>,
    plan_type: Option<&'a str>,
    resets_at: Option<i64>,
    resets_in_seconds: Option<u64>,
}

impl Rejection {
    /// `{"error":{"type","code","message","param":null,"plan_type","resets_at","resets_in_seconds"}}`
    pub fn body(&self) -> Vec<u8> {
        let body = Body {
            error: ErrorFields {
                type_: &self.error_type,
                code: &self.code,
                message: &self.message,
                param: None,
                plan_type: self.plan_type.as_deref(),
                resets_at: self.resets_at,
                resets_in_seconds: self.retry_after_secs,
            },
        };
        // Serializing plain strings and numbers cannot fail; keep a valid body regardless.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"type":"rate_limit_exceeded","code":"rate_limit_exceeded","message":"rate limited","param":null}}"#.to_vec()
        })
    }

    /// Paused longer than `max_hold`: 429 `rate_limit_exceeded` with the time to the reset.
    pub fn paused(
        billing: Billing,
        reason: &str,
        until: Deadline,
        left: Duration,
        max_hold: Duration,
    ) -> Self {
        let secs = ceil_secs(left).max(1);
        let message = format!(
            "{} is rate limited ({reason}); it resets in {}{}, longer than the sidecar holds \
             requests (limits.max_hold = {}). Retry after {secs}s.",
            subject(billing),
            format_resets_in(secs),
            at(until),
            humantime::format_duration(max_hold),
        );
        Rejection::new(
            LimitKind::RateLimit,
            message,
            Some(secs),
            None,
            Some(until.unix),
        )
    }

    /// Local pacing would hold the request longer than `max_hold`.
    pub fn paced(billing: Billing, requests_per_minute: u32, wait: Duration) -> Self {
        let secs = ceil_secs(wait).max(1);
        let message = format!(
            "The sidecar paces {billing} requests to {requests_per_minute} a minute \
             (limits.requests_per_minute) and the queue is longer than limits.max_hold. \
             Retry after {secs}s."
        );
        Rejection::new(LimitKind::RateLimit, message, Some(secs), None, None)
    }

    /// Exhausted: the Codex-compatible used-up answer.
    pub fn exhausted(
        billing: Billing,
        kind: LimitKind,
        reason: &str,
        plan_type: Option<&str>,
        until: Option<(Deadline, Duration)>,
        probe_every: Duration,
    ) -> Self {
        let secs = until.map(|(_, left)| ceil_secs(left).max(1));
        let plan = plan_type.map(|p| format!(", plan {p}")).unwrap_or_default();
        let what = match kind {
            LimitKind::UsageNotIncluded => format!(
                "{} does not include Codex ({reason}{plan}): upgrade the plan, or use the \
                 organization's model access",
                subject(billing)
            ),
            LimitKind::InsufficientQuota => format!(
                "{} has no quota left ({reason}{plan}): add credits or raise the quota",
                subject(billing)
            ),
            LimitKind::UsageLimit | LimitKind::RateLimit => format!(
                "{} has reached its usage limit ({reason}{plan})",
                subject(billing)
            ),
        };
        let when = match (until, secs) {
            (Some((deadline, _)), Some(secs)) => format!(
                "; it resets in {}{}. Requests resume by themselves then.",
                format_resets_in(secs),
                at(deadline)
            ),
            _ if probe_every.is_zero() => {
                "; no reset time is known. Requests resume after a credential change.".into()
            }
            _ => format!(
                "; no reset time is known. The sidecar tries one request every {}.",
                humantime::format_duration(probe_every)
            ),
        };
        Rejection::new(
            kind,
            format!("{what}{when}"),
            secs,
            plan_type.map(Into::into),
            until.map(|(d, _)| d.unix),
        )
    }

    fn new(
        kind: LimitKind,
        message: String,
        retry_after_secs: Option<u64>,
        plan_type: Option<String>,
        resets_at: Option<i64>,
    ) -> Self {
        Rejection {
            status: 429,
            error_type: kind.error_type().into(),
            code: kind.error_type().into(),
            message,
            retry_after_secs,
            plan_type,
            resets_at,
            kind,
        }
    }
}

fn subject(billing: Billing) -> &'static str {
    match billing {
        Billing::ChatgptPlan => "The connected ChatGPT plan",
        Billing::Org => "The organization's model access",
    }
}

fn at(deadline: Deadline) -> String {
    deadline
        .rfc3339()
        .map(|t| format!(" (at {t})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn deadline(unix: i64) -> Deadline {
        Deadline {
            at: Instant::now(),
            unix,
        }
    }

    #[test]
    fn usage_limit_body_is_what_codex_parses() {
        let r = Rejection::exhausted(
            Billing::ChatgptPlan,
            LimitKind::UsageLimit,
            "usage_limit_reached",
            Some("plus"),
            Some((deadline(1_764_008_040), Duration::from_secs(8040))),
            Duration::from_secs(1800),
        );
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after_secs, Some(8040));
        assert_eq!(
            String::from_utf8(r.body()).unwrap_or_default(),
            r#"{"error":{"type":"usage_limit_reached","code":"usage_limit_reached","message":"The connected ChatGPT plan has reached its usage limit (usage_limit_reached, plan plus); it resets in 2h 14m (at 2025-11-24T18:14:00Z). Requests resume by themselves then.","param":null,"plan_type":"plus","resets_at":1764008040,"resets_in_seconds":8040}}"#
        );
    }

    #[test]
    fn usage_not_included_and_quota_bodies() {
        let r = Rejection::exhausted(
            Billing::ChatgptPlan,
            LimitKind::UsageNotIncluded,
            "usage_not_included",
            Some("free"),
            None,
            Duration::from_secs(1800),
        );
        assert_eq!(
            String::from_utf8(r.body()).unwrap_or_default(),
            r#"{"error":{"type":"usage_not_included","code":"usage_not_included","message":"The connected ChatGPT plan does not include Codex (usage_not_included, plan free): upgrade the plan, or use the organization's model access; no reset time is known. The sidecar tries one request every 30m.","param":null,"plan_type":"free","resets_at":null,"resets_in_seconds":null}}"#
        );
        let r = Rejection::exhausted(
            Billing::Org,
            LimitKind::InsufficientQuota,
            "insufficient_quota",
            None,
            None,
            Duration::ZERO,
        );
        assert_eq!(r.retry_after_secs, None);
        assert_eq!(
            String::from_utf8(r.body()).unwrap_or_default(),
            r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"The organization's model access has no quota left (insufficient_quota): add credits or raise the quota; no reset time is known. Requests resume after a credential change.","param":null,"plan_type":null,"resets_at":null,"resets_in_seconds":null}}"#
        );
    }

    #[test]
    fn paused_beyond_hold_body() {
        let r = Rejection::paused(
            Billing::Org,
            "rate_limit_exceeded",
            deadline(1_764_000_045),
            Duration::from_millis(44_100),
            Duration::from_secs(30),
        );
        assert_eq!(r.retry_after_secs, Some(45));
        assert_eq!(r.kind, LimitKind::RateLimit);
        assert_eq!(
            String::from_utf8(r.body()).unwrap_or_default(),
            r#"{"error":{"type":"rate_limit_exceeded","code":"rate_limit_exceeded","message":"The organization's model access is rate limited (rate_limit_exceeded); it resets in 45s (at 2025-11-24T16:00:45Z), longer than the sidecar holds requests (limits.max_hold = 30s). Retry after 45s.","param":null,"plan_type":null,"resets_at":1764000045,"resets_in_seconds":45}}"#
        );
    }

    #[test]
    fn paced_body() {
        let r = Rejection::paced(Billing::ChatgptPlan, 10, Duration::from_millis(5_500));
        assert_eq!(r.retry_after_secs, Some(6));
        assert_eq!(
            r.message,
            "The sidecar paces chatgpt_plan requests to 10 a minute (limits.requests_per_minute) \
             and the queue is longer than limits.max_hold. Retry after 6s."
        );
    }
}
