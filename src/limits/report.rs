//! What the limit state tells the outside: `/status` snapshots and transition events.

use serde::Serialize;

use super::signals::{Credits, LimitKind, RateWindow};
use super::state::StateName;
use crate::billing::Billing;

/// One state change, as logged, and as POSTed to `events.url`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transition {
    pub billing: Billing,
    pub account: String,
    pub from: StateName,
    pub to: StateName,
    /// Why: the upstream code (`usage_limit_reached`, ...), or for a return to `ok`
    /// `reset_time_reached`, `request_succeeded` or `credential_changed`.
    pub reason: String,
    /// The limit kind of a transition into `paused`/`exhausted`.
    pub kind: Option<LimitKind>,
    pub plan_type: Option<String>,
    /// RFC 3339 (UTC) and unix seconds of the reset, when known.
    pub until: Option<String>,
    pub until_unix: Option<i64>,
    /// RFC 3339 (UTC) time of the change.
    pub at: String,
}

/// One account's limit state for `/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitSnapshot {
    pub billing: Billing,
    pub account: String,
    pub state: StateName,
    pub reason: Option<String>,
    pub kind: Option<LimitKind>,
    pub plan_type: Option<String>,
    pub until: Option<String>,
    pub until_unix: Option<i64>,
    pub resets_in_seconds: Option<u64>,
    /// Requests waiting in the sidecar for this account right now.
    pub held_requests: u64,
    /// Latest windows the upstream reported (kept across states).
    pub windows: Vec<RateWindow>,
    pub credits: Vec<Credits>,
}
