//! One account's limit state machine: `ok` → `paused` → `exhausted`, and back.
//!
//! Pure and synchronous: callers pass the time in, so every transition is testable.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::clock::{rfc3339, unix_secs};
use super::signals::{unix_after, Credits, LimitKind, LimitSignal, RateWindow};

/// The state names used in `/status`, events and the `limit_state` gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Ok,
    Paused,
    Exhausted,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Ok => "ok",
            StateName::Paused => "paused",
            StateName::Exhausted => "exhausted",
        }
    }

    /// The `limit_state` gauge value: 0 ok, 1 paused, 2 exhausted.
    pub fn gauge_value(self) -> f64 {
        match self {
            StateName::Ok => 0.0,
            StateName::Paused => 1.0,
            StateName::Exhausted => 2.0,
        }
    }
}

/// A reset time, both as a tokio deadline (for waiting) and unix seconds (for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub unix: i64,
}

impl Deadline {
    /// `after` from now; `None` only if the clocks overflow (never for delays ≤ MAX_RESET).
    pub fn after(after: Duration, now: Instant, wall: SystemTime) -> Option<Deadline> {
        Some(Deadline {
            at: now.checked_add(after)?,
            unix: unix_after(wall, after)?,
        })
    }

    pub fn rfc3339(&self) -> Option<String> {
        rfc3339(self.unix)
    }
}

/// Where an account stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Ok,
    /// Rate limited: requests wait for `until` (within `max_hold`) or get 429.
    Paused {
        until: Deadline,
        reason: String,
    },
    /// Used up: requests fail at once, except one probe every `exhausted_probe`.
    Exhausted {
        /// `None`: no reset time known; only a probe or a credential change clears it.
        until: Option<Deadline>,
        reason: String,
        kind: LimitKind,
        plan_type: Option<String>,
        /// Earliest time of the next probe; `None` when probes are off.
        next_probe: Option<Instant>,
    },
}

impl Phase {
    pub fn name(&self) -> StateName {
        match self {
            Phase::Ok => StateName::Ok,
            Phase::Paused { .. } => StateName::Paused,
            Phase::Exhausted { .. } => StateName::Exhausted,
        }
    }

    /// When the phase ends by itself, if it does.
    pub fn until(&self) -> Option<Deadline> {
        match self {
            Phase::Ok => None,
            Phase::Paused { until, .. } => Some(*until),
            Phase::Exhausted { until, .. } => *until,
        }
    }
}

/// A change of state name, to be logged, counted and published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: StateName,
    pub to: StateName,
    pub reason: String,
}

/// Why a limited state went back to `ok`.
pub const REASON_RESET_REACHED: &str = "reset_time_reached";
pub const REASON_SUCCEEDED: &str = "request_succeeded";
pub const REASON_CREDENTIAL_CHANGED: &str = "credential_changed";

/// One account's state and the latest windows its upstream reported.
#[derive(Clone, Debug)]
pub struct AccountState {
    pub phase: Phase,
    pub windows: Vec<RateWindow>,
    pub credits: Vec<Credits>,
    /// Bumped each time the account becomes exhausted; a permit remembers the value it
    /// was admitted under, so only a request admitted during this exhaustion (a probe)
    /// can clear it by succeeding.
    pub generation: u64,
}

impl Default for AccountState {
    fn default() -> Self {
        AccountState {
            phase: Phase::Ok,
            windows: Vec::new(),
            credits: Vec::new(),
            generation: 0,
        }
    }
}

impl AccountState {
    /// Keeps the latest windows and credits (an answer without them changes nothing).
    pub fn observe_windows(&mut self, windows: &[RateWindow], credits: &[Credits]) {
        if !windows.is_empty() {
            self.windows = windows.to_vec();
        }
        if !credits.is_empty() {
            self.credits = credits.to_vec();
        }
    }

    /// Back to `ok` when the phase's reset time has come.
    pub fn expire(&mut self, now: Instant) -> Option<Change> {
        match self.phase.until() {
            Some(until) if until.at <= now => self.clear(REASON_RESET_REACHED),
            _ => None,
        }
    }

    /// Back to `ok` (success of a probe, credential change).
    pub fn clear(&mut self, reason: &str) -> Option<Change> {
        let from = self.phase.name();
        if from == StateName::Ok {
            return None;
        }
        self.phase = Phase::Ok;
        Some(Change {
            from,
            to: StateName::Ok,
            reason: reason.to_owned(),
        })
    }

    /// Applies a signal. A rate limit pauses (or extends a pause) but never softens an
    /// exhausted account; a used-up kind exhausts, refreshing the details when already
    /// exhausted.
    pub fn apply(
        &mut self,
        signal: &LimitSignal,
        now: Instant,
        wall: SystemTime,
        probe_every: Duration,
    ) -> Option<Change> {
        let from = self.phase.name();
        if signal.kind.exhausts() {
            let until = signal
                .reset_in
                .or_else(|| self.used_up_reset(wall))
                .and_then(|d| Deadline::after(d, now, wall));
            // A later signal that names no reset (a stream failure) keeps the known one.
            let until = match &self.phase {
                Phase::Exhausted { until: known, .. } => until.or(*known),
                _ => until,
            };
            let next_probe = match &self.phase {
                Phase::Exhausted { next_probe, .. } => *next_probe,
                _ => {
                    self.generation += 1;
                    (!probe_every.is_zero())
                        .then(|| now.checked_add(probe_every))
                        .flatten()
                }
            };
            let plan_type = match &self.phase {
                Phase::Exhausted { plan_type, .. } => {
                    signal.plan_type.clone().or_else(|| plan_type.clone())
                }
                _ => signal.plan_type.clone(),
            };
            self.phase = Phase::Exhausted {
                until,
                reason: signal.reason.clone(),
                kind: signal.kind,
                plan_type,
                next_probe,
            };
        } else {
            let Some(until) = signal
                .reset_in
                .filter(|d| !d.is_zero())
                .and_then(|d| Deadline::after(d, now, wall))
            else {
                // "Retry now": nothing to pause for.
                return None;
            };
            match &mut self.phase {
                Phase::Exhausted { .. } => return None,
                Phase::Paused { until: old, reason } => {
                    if until.at > old.at {
                        *old = until;
                        reason.clone_from(&signal.reason);
                    }
                    return None;
                }
                Phase::Ok => {
                    self.phase = Phase::Paused {
                        until,
                        reason: signal.reason.clone(),
                    };
                }
            }
        }
        let to = self.phase.name();
        (from != to).then(|| Change {
            from,
            to,
            reason: signal.reason.clone(),
        })
    }

    /// The time until the latest reset of the windows used up (≥ 100 %), if any is ahead.
    fn used_up_reset(&self, wall: SystemTime) -> Option<Duration> {
        let now = unix_secs(wall);
        let at = self
            .windows
            .iter()
            .filter(|w| w.used_percent >= 100.0)
            .filter_map(|w| w.resets_at)
            .filter(|at| *at > now)
            .max()?;
        u64::try_from(at - now).ok().map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::limits::signals::WindowName;
    use std::time::UNIX_EPOCH;

    const PROBE: Duration = Duration::from_secs(1800);

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    fn rate(secs: u64, reason: &str) -> LimitSignal {
        LimitSignal {
            kind: LimitKind::RateLimit,
            reason: reason.into(),
            reset_in: Some(Duration::from_secs(secs)),
            plan_type: None,
        }
    }

    fn usage(secs: Option<u64>, plan: Option<&str>) -> LimitSignal {
        LimitSignal {
            kind: LimitKind::UsageLimit,
            reason: "usage_limit_reached".into(),
            reset_in: secs.map(Duration::from_secs),
            plan_type: plan.map(Into::into),
        }
    }

    fn change(from: StateName, to: StateName, reason: &str) -> Option<Change> {
        Some(Change {
            from,
            to,
            reason: reason.into(),
        })
    }

    #[test]
    fn ok_paused_extended_then_expired() {
        let now = Instant::now();
        let mut s = AccountState::default();
        assert_eq!(
            s.apply(&rate(10, "rate_limit_exceeded"), now, wall(), PROBE),
            change(StateName::Ok, StateName::Paused, "rate_limit_exceeded")
        );
        let first = s.phase.until().unwrap();
        assert_eq!(first.unix, 1_764_000_010);
        // A shorter pause does not shorten; a longer one extends, silently.
        assert_eq!(s.apply(&rate(5, "http_429"), now, wall(), PROBE), None);
        assert_eq!(s.phase.until(), Some(first));
        assert_eq!(s.apply(&rate(20, "http_429"), now, wall(), PROBE), None);
        assert_eq!(
            s.phase,
            Phase::Paused {
                until: Deadline {
                    at: now + Duration::from_secs(20),
                    unix: 1_764_000_020
                },
                reason: "http_429".into()
            }
        );
        assert_eq!(s.expire(now + Duration::from_secs(19)), None);
        assert_eq!(
            s.expire(now + Duration::from_secs(20)),
            change(StateName::Paused, StateName::Ok, REASON_RESET_REACHED)
        );
        assert_eq!(s.phase, Phase::Ok);
    }

    #[test]
    fn zero_reset_rate_limit_does_not_pause() {
        let mut s = AccountState::default();
        assert_eq!(
            s.apply(&rate(0, "http_429"), Instant::now(), wall(), PROBE),
            None
        );
        assert_eq!(s.phase, Phase::Ok);
    }

    #[test]
    fn exhausted_outranks_paused_and_is_not_softened() {
        let now = Instant::now();
        let mut s = AccountState::default();
        s.apply(&rate(10, "rate_limit_exceeded"), now, wall(), PROBE);
        assert_eq!(
            s.apply(&usage(Some(3600), Some("plus")), now, wall(), PROBE),
            change(
                StateName::Paused,
                StateName::Exhausted,
                "usage_limit_reached"
            )
        );
        assert_eq!(s.generation, 1);
        assert_eq!(
            s.apply(&rate(10, "rate_limit_exceeded"), now, wall(), PROBE),
            None
        );
        // A later usage signal refreshes the details, keeps the plan type and a known
        // reset, stays one exhaustion (same generation, same probe schedule).
        assert_eq!(s.apply(&usage(None, None), now, wall(), PROBE), None);
        assert_eq!(s.phase.until().map(|u| u.unix), Some(1_764_003_600));
        assert_eq!(s.apply(&usage(Some(60), None), now, wall(), PROBE), None);
        assert_eq!(s.generation, 1);
        assert_eq!(
            s.phase,
            Phase::Exhausted {
                until: Some(Deadline {
                    at: now + Duration::from_secs(60),
                    unix: 1_764_000_060
                }),
                reason: "usage_limit_reached".into(),
                kind: LimitKind::UsageLimit,
                plan_type: Some("plus".into()),
                next_probe: Some(now + PROBE),
            }
        );
    }

    #[test]
    fn exhausted_without_reset_takes_a_used_up_window() {
        let now = Instant::now();
        let mut s = AccountState::default();
        let window = |used: f64, at: i64| RateWindow {
            family: "codex".into(),
            name: WindowName::Primary,
            used_percent: used,
            window_minutes: Some(300),
            resets_at: Some(at),
        };
        s.observe_windows(
            &[window(100.0, 1_764_000_500), window(50.0, 1_764_009_000)],
            &[],
        );
        s.apply(&usage(None, None), now, wall(), PROBE);
        assert_eq!(s.phase.until().map(|d| d.unix), Some(1_764_000_500));
        // Nothing known: no until, no probes when probes are off.
        let mut s = AccountState::default();
        s.apply(&usage(None, None), now, wall(), Duration::ZERO);
        assert_eq!(
            s.phase,
            Phase::Exhausted {
                until: None,
                reason: "usage_limit_reached".into(),
                kind: LimitKind::UsageLimit,
                plan_type: None,
                next_probe: None,
            }
        );
        assert_eq!(s.expire(now + Duration::from_secs(1_000_000)), None);
        assert_eq!(
            s.clear(REASON_CREDENTIAL_CHANGED),
            change(
                StateName::Exhausted,
                StateName::Ok,
                REASON_CREDENTIAL_CHANGED
            )
        );
        assert_eq!(s.clear(REASON_CREDENTIAL_CHANGED), None);
    }

    #[test]
    fn windows_are_kept_until_replaced() {
        let mut s = AccountState::default();
        let w = RateWindow {
            family: "codex".into(),
            name: WindowName::Secondary,
            used_percent: 12.0,
            window_minutes: None,
            resets_at: None,
        };
        s.observe_windows(std::slice::from_ref(&w), &[]);
        s.observe_windows(&[], &[]);
        assert_eq!(s.windows, vec![w]);
    }
}
