//! Time for the limit state: tokio's clock for deadlines, the wall clock for what people see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where wall-clock time (unix `until`, RFC 3339 output) comes from.
#[derive(Clone, Copy, Debug)]
pub enum WallClock {
    /// `SystemTime::now()`: production.
    System,
    /// `wall` at tokio instant `at`, advancing with tokio's clock: tests under paused
    /// time see wall time move exactly as `tokio::time::advance` moves it.
    Anchored { wall: SystemTime, at: Instant },
}

impl WallClock {
    /// A wall clock reading `wall` now and advancing with tokio's clock.
    pub fn anchored(wall: SystemTime) -> Self {
        WallClock::Anchored {
            wall,
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            WallClock::System => SystemTime::now(),
            WallClock::Anchored { wall, at } => wall.checked_add(at.elapsed()).unwrap_or(*wall),
        }
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) of a unix time; `None` outside years 1970..=9999, which
/// humantime cannot format.
pub fn rfc3339(unix: i64) -> Option<String> {
    const YEAR_10000: u64 = 253_402_300_800;
    let secs = u64::try_from(unix).ok().filter(|s| *s < YEAR_10000)?;
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Whole seconds of `d`, rounded up: a Retry-After must never be early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// "2h 14m", "3m 5s", "45s", "2d 3h": the two largest units, a zero second unit omitted.
pub fn format_resets_in(secs: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    for (i, (size, name)) in units.iter().enumerate() {
        if secs >= *size || *size == 1 {
            let first = secs / size;
            let rest = secs % size;
            return match units.get(i + 1) {
                Some((next, next_name)) if rest / next > 0 => {
                    format!("{first}{name} {}{next_name}", rest / next)
                }
                _ => format!("{first}{name}"),
            };
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_resets_in(0), "0s");
        assert_eq!(format_resets_in(45), "45s");
        assert_eq!(format_resets_in(60), "1m");
        assert_eq!(format_resets_in(185), "3m 5s");
        assert_eq!(format_resets_in(8040), "2h 14m");
        assert_eq!(format_resets_in(7200), "2h");
        assert_eq!(format_resets_in(7259), "2h");
        assert_eq!(format_resets_in(183_600), "2d 3h");
        assert_eq!(format_resets_in(u64::MAX), "213503982334601d 7h");
    }

    #[test]
    fn rfc3339_bounds() {
        assert_eq!(
            rfc3339(1_764_003_600).as_deref(),
            Some("2025-11-24T17:00:00Z")
        );
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(-1), None);
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(
            rfc3339(253_402_300_799).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
    }

    #[test]
    fn ceil() {
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn anchored_wall_clock_follows_tokio_time() {
        let start = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let clock = WallClock::anchored(start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(unix_secs(clock.now()), 1_764_000_090);
    }
}
