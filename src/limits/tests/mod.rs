//! Tests of [`Limits`] as the proxy uses it, under paused tokio time.
//!
//! - `admission`: holds, release pacing, rejections, local pacing.
//! - `exhaustion`: used-up accounts, probes, clearing (CASES.md 7, 8).
//! - `observation`: what each answer teaches, Retry-After (CASES.md 4, 9), hostile input.
//! - `visibility`: transitions, snapshots, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admission;
mod exhaustion;
mod observation;
mod visibility;

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{LimitKey, Limits, LimitsSettings, WallClock};
use crate::billing::Billing;

/// 2025-11-24T16:00:00Z: the wall time when each test starts.
const T0: i64 = 1_764_000_000;

fn limits(settings: LimitsSettings) -> Limits {
    let start = UNIX_EPOCH + Duration::from_secs(T0 as u64);
    Limits::with_wall_clock(settings, WallClock::anchored(start))
}

fn plan() -> LimitKey {
    LimitKey::new(Billing::ChatgptPlan, "acct-1")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn usage_limit_body(resets_at: i64) -> Vec<u8> {
    format!(
        r#"{{"error":{{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":{resets_at}}}}}"#
    )
    .into_bytes()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
