//! `admit`: whether a request may go to its upstream now, after a wait, or not at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pacing::Pacer;
use super::rejection::Rejection;
use super::signals::MAX_RESET;
use super::state::Phase;
use super::telemetry;
use super::tracker::{LimitKey, Limits};
use crate::billing::Billing;

/// Leave to send one request to an account's upstream. Pass it back to
/// [`Limits::observe_success`] when the request succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit {
    pub key: LimitKey,
    /// This request is the periodic probe of an exhausted account.
    pub probe: bool,
    /// The account's exhaustion generation when admitted.
    pub(super) generation: u64,
}

/// What the state says a request should do now.
enum Step {
    Go {
        generation: u64,
        release: Arc<Pacer>,
        others_held: bool,
    },
    Probe {
        generation: u64,
    },
    Wait {
        until: Instant,
        held: Arc<AtomicU64>,
    },
    Reject(Rejection),
}

/// Counts a request as held (gauge and `/status`) while it lives.
struct Hold {
    billing: Billing,
    held: Arc<AtomicU64>,
}

impl Hold {
    fn new(billing: Billing, held: Arc<AtomicU64>) -> Self {
        held.fetch_add(1, Ordering::Relaxed);
        telemetry::held(billing, 1.0);
        Hold { billing, held }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        telemetry::held(self.billing, -1.0);
    }
}

impl Limits {
    /// Admits a request for `key`:
    /// - `ok`: at once (through `requests_per_minute` pacing when on);
    /// - `paused` until within `max_hold`: waits for the reset without touching the
    ///   upstream, then leaves through the account's release pacer (`burst` at once, then
    ///   `burst` a second);
    /// - `paused` longer: 429 `rate_limit_exceeded` at once;
    /// - `exhausted`: the Codex-compatible 429 at once, except one probe per
    ///   `exhausted_probe` (a `Permit` with `probe: true`).
    ///
    /// No request waits in here longer than `max_hold` plus its turn in the release after
    /// a pause. Dropping the future (client gone) un-counts the request at once.
    pub async fn admit(&self, key: &LimitKey) -> Result<Permit, Rejection> {
        let arrival = Instant::now();
        let max_hold = self.inner.settings.max_hold.min(MAX_RESET);
        let deadline = arrival.checked_add(max_hold).unwrap_or(arrival);
        let mut hold: Option<Hold> = None;
        let mut waited = false;
        let mut released = false;
        loop {
            match self.step(key, deadline) {
                Step::Go {
                    generation,
                    release,
                    others_held,
                } => {
                    // Held requests leave paced; a newcomer during the release queues
                    // behind them rather than adding to the burst.
                    if !released && (waited || others_held) {
                        release.acquire().await;
                        released = true;
                        continue;
                    }
                    self.pace(key, deadline, &mut hold).await?;
                    return Ok(Permit {
                        key: key.clone(),
                        probe: false,
                        generation,
                    });
                }
                Step::Probe { generation } => {
                    return Ok(Permit {
                        key: key.clone(),
                        probe: true,
                        generation,
                    })
                }
                Step::Wait { until, held } => {
                    hold.get_or_insert_with(|| Hold::new(key.billing, held));
                    waited = true;
                    released = false;
                    tokio::time::sleep_until(until).await;
                }
                Step::Reject(rejection) => return Err(rejection),
            }
        }
    }

    /// Reads (and on a probe, updates) the state under the lock.
    fn step(&self, key: &LimitKey, deadline: Instant) -> Step {
        let now = Instant::now();
        let inner = &self.inner;
        let mut accounts = inner.lock();
        let account = accounts
            .entry(key.clone())
            .or_insert_with(|| inner.new_account());
        if let Some(change) = account.state.expire(now) {
            inner.publish(key, &account.state.phase, change);
        }
        let generation = account.state.generation;
        match &mut account.state.phase {
            Phase::Ok => Step::Go {
                generation,
                release: Arc::clone(&account.release),
                others_held: account.held.load(Ordering::Relaxed) > 0,
            },
            Phase::Paused { until, reason } => {
                if until.at <= deadline {
                    Step::Wait {
                        until: until.at,
                        held: Arc::clone(&account.held),
                    }
                } else {
                    let left = until.at.saturating_duration_since(now);
                    Step::Reject(Rejection::paused(
                        key.billing,
                        reason,
                        *until,
                        left,
                        inner.settings.max_hold,
                    ))
                }
            }
            Phase::Exhausted {
                until,
                reason,
                kind,
                plan_type,
                next_probe,
            } => {
                let probe_every = inner.settings.exhausted_probe;
                if next_probe.is_some_and(|due| due <= now) {
                    *next_probe = now.checked_add(probe_every);
                    tracing::info!(
                        billing = %key.billing, account = %key.account,
                        "letting one probe request through an exhausted account"
                    );
                    return Step::Probe { generation };
                }
                let until = until.map(|u| (u, u.at.saturating_duration_since(now)));
                Step::Reject(Rejection::exhausted(
                    key.billing,
                    *kind,
                    reason,
                    plan_type.as_deref(),
                    until,
                    probe_every,
                ))
            }
        }
    }

    /// `limits.requests_per_minute`: waits for a cell unless that would pass `deadline`.
    async fn pace(
        &self,
        key: &LimitKey,
        deadline: Instant,
        hold: &mut Option<Hold>,
    ) -> Result<(), Rejection> {
        let billing = key.billing;
        let index = match billing {
            Billing::ChatgptPlan => 0,
            Billing::Org => 1,
        };
        let Some(pacer) = &self.inner.pacing[index] else {
            return Ok(());
        };
        loop {
            let Err(wait) = pacer.try_acquire() else {
                return Ok(());
            };
            let wait = wait.max(Duration::from_millis(1));
            let now = Instant::now();
            if now.checked_add(wait).is_none_or(|ready| ready > deadline) {
                return Err(Rejection::paced(
                    billing,
                    self.inner.settings.requests_per_minute,
                    wait,
                ));
            }
            if hold.is_none() {
                let held = self.inner.lock().get(key).map(|a| Arc::clone(&a.held));
                *hold = held.map(|held| Hold::new(billing, held));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
