//! Limits: reads rate-limit and usage-limit signals and pauses or fails requests the way
//! Codex understands.
//!
//! # Signals ([`signals`])
//! Pure parsers for everything an upstream says about limits: `x-<family>-*` window and
//! credit headers (any family, on every response), `x-codex-rate-limit-reached-type`,
//! `x-ratelimit-*`, `Retry-After`/`retry-after-ms`, error bodies (kind in `type` or
//! `code`), `response.failed` codes and "try again in Xs". Garbage teaches nothing.
//!
//! # State machine (`state.rs`), one per [`LimitKey`] (billing source + account)
//! ```text
//!          rate limit (reset > 0)               used-up kind
//!   ok ───────────────────────────▶ paused ───────────────────▶ exhausted
//!    ▲ ◀── until reached ───────────┘                              │
//!    └──── until reached | probe succeeds | credential change ────┘
//! ```
//! - `paused{until, reason}`: a later rate limit only extends `until`; an exhausted
//!   account is never softened back to paused.
//! - `exhausted{until, reason, kind, plan_type}`: `until` may be unknown (then only a
//!   probe or a credential change clears it). A request's success clears it only if the
//!   request was admitted during this exhaustion (each exhaustion bumps a generation the
//!   [`Permit`] carries), so a long stream that started before cannot reopen the gate.
//! - Rate limits with no reset given pause for [`signals::DEFAULT_RATE_LIMIT_PAUSE`].
//! - Due states are cleared lazily by every call and eagerly by [`Limits::run_expiry`].
//!
//! # Admission and pacing ([`Limits::admit`])
//! Deadlines use `tokio::time::Instant` (paused-time testable); governor runs on a clock
//! built from it. A paused account holds requests (never touching the upstream) until
//! the reset when that is within `max_hold`. When it comes, all holders wake at once and
//! each must take a cell from the account's release pacer (GCRA: `burst` cells at once,
//! refilled at `burst` per second), so at most `burst` leave together and the rest follow
//! at a steady rate: no stampede. While any request is still held, newcomers queue through
//! the same pacer instead of adding to the burst. Then `requests_per_minute` (per billing
//! source, burst `burst`) paces everything when set; a pacing wait longer than what is
//! left of `max_hold` is refused with 429 `rate_limit_exceeded` and `Retry-After`.
//!
//! # Visibility
//! Each transition: one log line, the `limit_state` gauge, a [`Transition`] on a
//! broadcast channel ([`Limits::subscribe`]) for `events.url`; [`Limits::snapshot`] for
//! `/status`; metrics in [`telemetry`].

mod admission;
mod clock;
mod observe;
mod pacing;
mod rejection;
mod report;
mod settings;
pub mod signals;
mod state;
pub mod telemetry;
mod tracker;

pub use admission::Permit;
pub use clock::{format_resets_in, WallClock};
pub use rejection::Rejection;
pub use report::{LimitSnapshot, Transition};
pub use settings::{LimitsSettings, OnUsageLimit};
pub use signals::LimitKind;
pub use state::StateName;
pub use tracker::{LimitKey, Limits};

#[cfg(test)]
mod tests;
