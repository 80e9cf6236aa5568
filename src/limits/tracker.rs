//! [`Limits`]: the shared limit state of every account, its events and its clocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use super::clock::{ceil_secs, rfc3339, unix_secs, WallClock};
use super::pacing::Pacer;
use super::report::{LimitSnapshot, Transition};
use super::settings::LimitsSettings;
use super::signals::LimitKind;
use super::state::{AccountState, Change, Phase, StateName, REASON_CREDENTIAL_CHANGED};
use super::telemetry;
use crate::billing::Billing;

/// Transitions kept for slow subscribers before the oldest are dropped.
const EVENT_BUFFER: usize = 256;

/// Which limit state a request belongs to: one per billing source and account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LimitKey {
    pub billing: Billing,
    /// An opaque, non-secret account id (a hash of the ChatGPT account id; "org").
    pub account: String,
}

impl LimitKey {
    pub fn new(billing: Billing, account: impl Into<String>) -> Self {
        LimitKey {
            billing,
            account: account.into(),
        }
    }

    /// The org source's single key.
    pub fn org() -> Self {
        LimitKey::new(Billing::Org, "org")
    }
}

/// The limit state of every account. Cheap to clone: all clones share one state.
#[derive(Clone, Debug)]
pub struct Limits {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub settings: LimitsSettings,
    pub wall: WallClock,
    pub accounts: Mutex<HashMap<LimitKey, Account>>,
    /// `limits.requests_per_minute` pacers: [chatgpt_plan, org].
    pub pacing: [Option<Pacer>; 2],
    pub events: broadcast::Sender<Transition>,
    /// Wakes [`Limits::run_expiry`] when a new reset time is set.
    pub wake: Notify,
}

/// One account: its state, its post-pause release pacer, its held-request count.
#[derive(Debug)]
pub(super) struct Account {
    pub state: AccountState,
    pub release: Arc<Pacer>,
    pub held: Arc<AtomicU64>,
}

impl Limits {
    /// Limits on the system wall clock.
    pub fn new(settings: LimitsSettings) -> Self {
        Limits::with_wall_clock(settings, WallClock::System)
    }

    /// Limits on a given wall clock (tests use [`WallClock::anchored`]).
    pub fn with_wall_clock(settings: LimitsSettings, wall: WallClock) -> Self {
        let pacer = || Pacer::per_minute(settings.requests_per_minute, settings.burst);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        telemetry::init();
        Limits {
            inner: Arc::new(Inner {
                pacing: [pacer(), pacer()],
                settings,
                wall,
                accounts: Mutex::new(HashMap::new()),
                events,
                wake: Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &LimitsSettings {
        &self.inner.settings
    }

    /// Every transition from now on (for `events.url`). A receiver that lags loses the
    /// oldest events, never blocks a request.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner.events.subscribe()
    }

    /// A credential change: the account starts over at `ok` with no windows.
    pub fn reset_account(&self, key: &LimitKey) {
        let mut accounts = self.inner.lock();
        if let Some(account) = accounts.get_mut(key) {
            let change = account.state.clear(REASON_CREDENTIAL_CHANGED);
            account.state.windows.clear();
            account.state.credits.clear();
            if let Some(change) = change {
                self.inner.publish(key, &account.state.phase, change);
            }
        }
    }

    /// Every account's state, sorted by billing then account; due resets are applied first.
    pub fn snapshot(&self) -> Vec<LimitSnapshot> {
        let now = Instant::now();
        let mut accounts = self.inner.lock();
        let mut out: Vec<LimitSnapshot> = accounts
            .iter_mut()
            .map(|(key, account)| {
                if let Some(change) = account.state.expire(now) {
                    self.inner.publish(key, &account.state.phase, change);
                }
                snapshot_of(key, account, now)
            })
            .collect();
        out.sort_by(|a, b| (a.billing, &a.account).cmp(&(b.billing, &b.account)));
        out
    }

    /// Clears due states as their reset times come, so gauges, events and `/status` turn
    /// back to `ok` even with no traffic (requests also clear them on arrival). Run it for
    /// the life of the server (e.g. in a `select!` with the shutdown signal).
    pub async fn run_expiry(&self) {
        loop {
            let next = self.expire_due();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// Applies due resets; returns the next reset deadline.
    fn expire_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut accounts = self.inner.lock();
        let mut next: Option<Instant> = None;
        for (key, account) in accounts.iter_mut() {
            if let Some(change) = account.state.expire(now) {
                self.inner.publish(key, &account.state.phase, change);
            }
            if let Some(until) = account.state.phase.until() {
                next = Some(next.map_or(until.at, |n| n.min(until.at)));
            }
        }
        next
    }
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<LimitKey, Account>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn new_account(&self) -> Account {
        Account {
            state: AccountState::default(),
            release: Arc::new(Pacer::release(self.settings.burst)),
            held: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Logs, counts and broadcasts one change; called with the state already changed.
    pub fn publish(&self, key: &LimitKey, phase: &Phase, change: Change) {
        let until = phase.until();
        let (kind, plan_type) = match phase {
            Phase::Exhausted {
                kind, plan_type, ..
            } => (Some(*kind), plan_type.clone()),
            Phase::Paused { .. } => (Some(LimitKind::RateLimit), None),
            Phase::Ok => (None, None),
        };
        let transition = Transition {
            billing: key.billing,
            account: key.account.clone(),
            from: change.from,
            to: change.to,
            reason: change.reason,
            kind,
            plan_type,
            until: until.and_then(|u| u.rfc3339()),
            until_unix: until.map(|u| u.unix),
            at: rfc3339(unix_secs(self.wall.now())).unwrap_or_default(),
        };
        let until_text = transition.until.as_deref().unwrap_or("unknown");
        if transition.to == StateName::Ok {
            tracing::info!(
                billing = %key.billing, account = %key.account,
                from = transition.from.as_str(), to = transition.to.as_str(),
                reason = %transition.reason,
                "limit state cleared"
            );
        } else {
            tracing::warn!(
                billing = %key.billing, account = %key.account,
                from = transition.from.as_str(), to = transition.to.as_str(),
                reason = %transition.reason, until = until_text,
                "limit state changed"
            );
            self.wake.notify_one();
        }
        telemetry::state(key.billing, transition.to);
        // No subscriber is fine: events are best effort.
        let _ = self.events.send(transition);
    }
}

fn snapshot_of(key: &LimitKey, account: &Account, now: Instant) -> LimitSnapshot {
    let state = &account.state;
    let until = state.phase.until();
    let (reason, kind, plan_type) = match &state.phase {
        Phase::Ok => (None, None, None),
        Phase::Paused { reason, .. } => (Some(reason.clone()), Some(LimitKind::RateLimit), None),
        Phase::Exhausted {
            reason,
            kind,
            plan_type,
            ..
        } => (Some(reason.clone()), Some(*kind), plan_type.clone()),
    };
    LimitSnapshot {
        billing: key.billing,
        account: key.account.clone(),
        state: state.phase.name(),
        reason,
        kind,
        plan_type,
        until: until.and_then(|u| u.rfc3339()),
        until_unix: until.map(|u| u.unix),
        resets_in_seconds: until.map(|u| ceil_secs(u.at.saturating_duration_since(now))),
        held_requests: account.held.load(Ordering::Relaxed),
        windows: state.windows.clone(),
        credits: state.credits.clone(),
    }
}
