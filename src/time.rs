//! Wall-clock helpers: RFC 3339 text and unix seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-12-03T21:36:42Z` for a unix time, if representable.
pub fn rfc3339_from_unix(secs: i64) -> Option<String> {
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Millisecond-precision RFC 3339 text of a time.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds since the epoch (0 before it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds `d` from now (saturating).
pub fn unix_after(d: Duration) -> i64 {
    unix_now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
