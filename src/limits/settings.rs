//! The `[limits]` settings the limit state works with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a used-up ChatGPT plan does to its sessions (`limits.on_usage_limit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUsageLimit {
    /// Fail with the Codex-compatible 429 until the plan resets; billing never moves.
    #[default]
    Fail,
    /// New requests of affected sessions go to the org source (billed `org`). The proxy
    /// does the re-routing when [`crate::limits::Limits::admit`] rejects an exhausted
    /// `chatgpt_plan` key.
    FallbackToOrg,
}

/// `[limits]`, validated. `Default` is the SPEC default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsSettings {
    /// Pause: hold a request at most this long for a reset (`limits.max_hold`).
    pub max_hold: Duration,
    pub on_usage_limit: OnUsageLimit,
    /// Let one request through an exhausted account this often; zero turns probes off.
    pub exhausted_probe: Duration,
    /// Local pacing per billing source; 0 = off.
    pub requests_per_minute: u32,
    /// At most this many requests go out at once, both for local pacing and when held
    /// requests are released after a pause; 0 is taken as 1.
    pub burst: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            max_hold: Duration::from_secs(30),
            on_usage_limit: OnUsageLimit::Fail,
            exhausted_probe: Duration::from_secs(30 * 60),
            requests_per_minute: 0,
            burst: 20,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        assert_eq!(
            LimitsSettings::default(),
            LimitsSettings {
                max_hold: Duration::from_secs(30),
                on_usage_limit: OnUsageLimit::Fail,
                exhausted_probe: Duration::from_secs(1800),
                requests_per_minute: 0,
                burst: 20,
            }
        );
    }

    #[test]
    fn on_usage_limit_names() {
        let parse = |s: &str| serde_json::from_str::<OnUsageLimit>(s);
        assert_eq!(parse("\"fail\"").unwrap(), OnUsageLimit::Fail);
        assert_eq!(
            parse("\"fallback_to_org\"").unwrap(),
            OnUsageLimit::FallbackToOrg
        );
        assert!(parse("\"fallback\"").is_err());
    }
}
