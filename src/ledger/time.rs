//! Wall-clock timestamps of records: millisecond precision, written as RFC 3339 UTC.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time at millisecond precision, e.g. `2025-11-24T16:00:00.123Z`.
///
/// Kept between the Unix epoch and the end of year 9999, the range RFC 3339 can write,
/// so formatting never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_ms: u64,
}

impl Timestamp {
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX_UNIX_MS: u64 = 253_402_300_799_999;

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch (clamped to year 9999).
    pub fn from_unix_ms(ms: u64) -> Self {
        Timestamp {
            unix_ms: ms.min(Self::MAX_UNIX_MS),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        self.unix_ms
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_ms)
    }

    /// This timestamp plus `d` (e.g. the end time from a start and a duration).
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self::from_unix_ms(self.unix_ms.saturating_add(ms))
    }

    /// Parses the form records use: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, `Z` only).
    pub fn parse_strict(s: &str) -> Result<Self, String> {
        if !s.ends_with('Z') {
            return Err(format!(
                "timestamp {s:?} is not RFC 3339 UTC (must end in Z)"
            ));
        }
        humantime::parse_rfc3339(s)
            .map(Self::from)
            .map_err(|e| format!("timestamp {s:?} is not RFC 3339: {e}"))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::from_unix_ms(ms)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_rfc3339_millis(self.to_system_time()), f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_strict(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        let t = Timestamp::from_unix_ms(1_764_000_000_123);
        assert_eq!(t.to_string(), "2025-11-24T16:00:00.123Z");
        assert_eq!(
            Timestamp::from_unix_ms(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_ms(u64::MAX).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn times_before_the_epoch_clamp_to_it() {
        let t = Timestamp::from(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(t.unix_ms(), 0);
    }

    #[test]
    fn parses_strictly() {
        let t = Timestamp::parse_strict("2025-11-24T16:00:00.123Z").unwrap();
        assert_eq!(t.unix_ms(), 1_764_000_000_123);
        assert_eq!(
            Timestamp::parse_strict("2025-11-24T16:00:00Z")
                .unwrap()
                .unix_ms(),
            1_764_000_000_000
        );
        assert!(Timestamp::parse_strict("2025-11-24T16:00:00+00:00").is_err());
        assert!(Timestamp::parse_strict("2025-11-24 16:00:00Z").is_err());
        assert!(Timestamp::parse_strict("yesterday").is_err());
        assert!(Timestamp::parse_strict("2025-13-24T16:00:00Z").is_err());
    }

    #[test]
    fn adds_durations() {
        let t = Timestamp::from_unix_ms(1000).saturating_add(Duration::from_millis(812));
        assert_eq!(t.unix_ms(), 1812);
    }
}
