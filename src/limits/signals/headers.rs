//! Limit headers read on every upstream response: `x-<family>-*` windows and credits,
//! `x-codex-rate-limit-reached-type`, `x-ratelimit-*` and `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, RETRY_AFTER};
use http::HeaderMap;
use serde::Serialize;

use super::durations::{
    parse_go_duration, parse_retry_after, parse_retry_after_ms, parse_seconds, MAX_RESET,
};

/// At most this many limit families are read from one response (bounds hostile input).
const MAX_FAMILIES: usize = 8;
/// Longest family name kept (`codex`, `codex-other`, ...).
const MAX_FAMILY_LEN: usize = 48;
/// Longest short token kept (reached type, credit balance).
const MAX_TOKEN_LEN: usize = 64;
/// Used percentages above this are garbage, not a reading.
const MAX_USED_PERCENT: f64 = 10_000.0;

// Names read on every response, as `HeaderName`s: a lookup by `&str` (or a `format!`ed
// name) parses and checks the name each time, which the profile showed on every request.
static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static REACHED_TYPE: HeaderName = HeaderName::from_static("x-codex-rate-limit-reached-type");
/// `x-ratelimit-{limit,remaining,reset}-requests`.
static API_REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
/// `x-ratelimit-{limit,remaining,reset}-tokens`.
static API_TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Which of a family's two windows (e.g. 5 hours and a week).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowName {
    Primary,
    Secondary,
}

impl WindowName {
    pub const ALL: [WindowName; 2] = [WindowName::Primary, WindowName::Secondary];

    /// The name used in headers and as the metrics `window` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowName::Primary => "primary",
            WindowName::Secondary => "secondary",
        }
    }
}

/// One usage window as the ChatGPT backend reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateWindow {
    pub family: String,
    pub name: WindowName,
    pub used_percent: f64,
    pub window_minutes: Option<u64>,
    /// Unix seconds.
    pub resets_at: Option<i64>,
}

/// Credit state of a family (`x-<family>-credits-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Credits {
    pub family: String,
    pub has_credits: Option<bool>,
    pub unlimited: Option<bool>,
    pub balance: Option<String>,
}

/// One OpenAI API `x-ratelimit-*-{requests|tokens}` triple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiRateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<Duration>,
}

/// Everything limit-related that one response's headers say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderSignals {
    pub windows: Vec<RateWindow>,
    pub credits: Vec<Credits>,
    /// `x-codex-rate-limit-reached-type`, lower case.
    pub reached_type: Option<String>,
    /// `retry-after-ms`, else `retry-after`.
    pub retry_after: Option<Duration>,
    pub requests: ApiRateLimit,
    pub tokens: ApiRateLimit,
}

impl HeaderSignals {
    /// The reset of the OpenAI API limit that ran out: the latest reset among those with
    /// nothing remaining, else the latest reset given.
    pub fn api_reset(&self) -> Option<Duration> {
        let pairs = [self.requests, self.tokens];
        let spent = pairs
            .iter()
            .filter(|p| p.remaining == Some(0))
            .filter_map(|p| p.reset)
            .max();
        spent.or_else(|| pairs.iter().filter_map(|p| p.reset).max())
    }

    /// The latest reset (unix seconds) of the windows used up (≥ 100 %), with its window.
    pub fn used_up_window(&self) -> Option<&RateWindow> {
        self.windows
            .iter()
            .filter(|w| w.used_percent >= 100.0 && w.resets_at.is_some())
            .max_by_key(|w| w.resets_at)
    }
}

/// Reads all limit headers. Values that are not UTF-8, not numbers, out of range or
/// implausible are skipped.
pub fn parse_headers(headers: &HeaderMap, now: SystemTime) -> HeaderSignals {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = text(&RETRY_AFTER_MS)
        .and_then(parse_retry_after_ms)
        .or_else(|| text(&RETRY_AFTER).and_then(|v| parse_retry_after(v, now)));
    let (window_families, credit_families) = families(headers);
    let mut windows = Vec::new();
    for family in &window_families {
        for name in WindowName::ALL {
            if let Some(window) = read_window(headers, family, name, now) {
                windows.push(window);
            }
        }
    }
    let credits = credit_families
        .iter()
        .filter_map(|family| read_credits(headers, family))
        .collect();
    HeaderSignals {
        windows,
        credits,
        reached_type: text(&REACHED_TYPE).and_then(token),
        retry_after,
        requests: read_api_limit(headers, &API_REQUESTS),
        tokens: read_api_limit(headers, &API_TOKENS),
    }
}

/// Family names found in `x-<family>-{primary|secondary}-used-percent` and
/// `x-<family>-credits-*` header names, sorted, bounded in count and length.
fn families(headers: &HeaderMap) -> (Vec<String>, Vec<String>) {
    let mut windows: Vec<String> = Vec::new();
    let mut credits: Vec<String> = Vec::new();
    for name in headers.keys() {
        let name = name.as_str();
        let Some(rest) = name.strip_prefix("x-") else {
            continue;
        };
        let window_family = rest
            .strip_suffix("-primary-used-percent")
            .or_else(|| rest.strip_suffix("-secondary-used-percent"));
        let credit_family = [
            "-credits-has-credits",
            "-credits-unlimited",
            "-credits-balance",
        ]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix));
        for (family, list) in [(window_family, &mut windows), (credit_family, &mut credits)] {
            if let Some(family) = family.filter(|f| valid_family(f)) {
                if list.len() < MAX_FAMILIES && !list.iter().any(|f| f == family) {
                    list.push(family.to_owned());
                }
            }
        }
    }
    windows.sort();
    credits.sort();
    (windows, credits)
}

fn valid_family(family: &str) -> bool {
    !family.is_empty()
        && family.len() <= MAX_FAMILY_LEN
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn read_window(
    headers: &HeaderMap,
    family: &str,
    name: WindowName,
    now: SystemTime,
) -> Option<RateWindow> {
    let get = |field: &str| {
        headers
            .get(format!("x-{family}-{}-{field}", name.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let used_percent = get("used-percent")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|p| p.is_finite() && (0.0..=MAX_USED_PERCENT).contains(p))?;
    let window_minutes = get("window-minutes")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|m| *m <= MAX_RESET.as_secs() / 60);
    let resets_at = get("reset-at")
        .and_then(|v| parse_unix_seconds(v, now))
        .or_else(|| {
            let after = get("reset-after-seconds").and_then(parse_seconds)?;
            unix_after(now, after)
        });
    Some(RateWindow {
        family: family.to_owned(),
        name,
        used_percent,
        window_minutes,
        resets_at,
    })
}

fn read_credits(headers: &HeaderMap, family: &str) -> Option<Credits> {
    let get = |field: &str| {
        headers
            .get(format!("x-{family}-credits-{field}"))
            .and_then(|v| v.to_str().ok())
    };
    let credits = Credits {
        family: family.to_owned(),
        has_credits: get("has-credits").and_then(parse_bool),
        unlimited: get("unlimited").and_then(parse_bool),
        balance: get("balance").and_then(token),
    };
    let empty =
        credits.has_credits.is_none() && credits.unlimited.is_none() && credits.balance.is_none();
    (!empty).then_some(credits)
}

/// One `x-ratelimit-*` triple; `names` are its limit, remaining and reset headers.
fn read_api_limit(headers: &HeaderMap, names: &[HeaderName; 3]) -> ApiRateLimit {
    let get = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let [limit, remaining, reset] = names;
    ApiRateLimit {
        limit: get(limit).and_then(|v| v.parse().ok()),
        remaining: get(remaining).and_then(|v| v.parse().ok()),
        reset: get(reset).and_then(|v| parse_go_duration(v).or_else(|| parse_seconds(v))),
    }
}

/// A unix time in seconds (integer, or decimal truncated), positive and no further than
/// [`MAX_RESET`] from `now`.
pub fn parse_unix_seconds(value: &str, now: SystemTime) -> Option<i64> {
    let value = value.trim();
    let whole = value.split_once('.').map_or(value, |(w, f)| {
        if f.bytes().all(|b| b.is_ascii_digit()) {
            w
        } else {
            ""
        }
    });
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    plausible_unix(whole.parse::<i64>().ok()?, now)
}

/// Keeps a unix time that is positive and at most [`MAX_RESET`] after `now`.
pub fn plausible_unix(secs: i64, now: SystemTime) -> Option<i64> {
    let latest = unix_after(now, MAX_RESET)?;
    (secs > 0 && secs <= latest).then_some(secs)
}

/// `now + after` in unix seconds (rounded up, so a reset is never reported early).
pub fn unix_after(now: SystemTime, after: Duration) -> Option<i64> {
    let at = now.checked_add(after)?.duration_since(UNIX_EPOCH).ok()?;
    let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
    i64::try_from(secs).ok()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A short printable token, lower-cased (upstream codes, balances); anything else is dropped.
fn token(value: &str) -> Option<String> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then(|| value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use http::{HeaderName, HeaderValue};

    const NOW: u64 = 1_764_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn codex_family_windows_and_credits() {
        let h = map(&[
            ("x-codex-primary-used-percent", "42.5"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-at", "1764003600"),
            ("x-codex-secondary-used-percent", "7"),
            ("x-codex-secondary-window-minutes", "10080"),
            ("x-codex-secondary-reset-at", "1764500000"),
            ("x-codex-credits-has-credits", "False"),
            ("x-codex-credits-unlimited", "false"),
            ("x-codex-credits-balance", "0"),
            ("x-request-id", "req_1"),
        ]);
        let s = parse_headers(&h, now());
        assert_eq!(
            s.windows,
            vec![
                RateWindow {
                    family: "codex".into(),
                    name: WindowName::Primary,
                    used_percent: 42.5,
                    window_minutes: Some(300),
                    resets_at: Some(1_764_003_600),
                },
                RateWindow {
                    family: "codex".into(),
                    name: WindowName::Secondary,
                    used_percent: 7.0,
                    window_minutes: Some(10080),
                    resets_at: Some(1_764_500_000),
                },
            ]
        );
        assert_eq!(
            s.credits,
            vec![Credits {
                family: "codex".into(),
                has_credits: Some(false),
                unlimited: Some(false),
                balance: Some("0".into()),
            }]
        );
        assert_eq!(s.reached_type, None);
        assert_eq!(s.retry_after, None);
        assert_eq!(s.used_up_window(), None);
    }

    #[test]
    fn any_family_name_is_read() {
        let h = map(&[
            ("x-codex-other-primary-used-percent", "100"),
            ("x-codex-other-primary-reset-at", "1764000100"),
            ("x-gpt-5_mini-secondary-used-percent", "3"),
        ]);
        let s = parse_headers(&h, now());
        let families: Vec<_> = s
            .windows
            .iter()
            .map(|w| (w.family.as_str(), w.name))
            .collect();
        assert_eq!(
            families,
            vec![
                ("codex-other", WindowName::Primary),
                ("gpt-5_mini", WindowName::Secondary)
            ]
        );
        let up = s.used_up_window().unwrap();
        assert_eq!(
            (up.family.as_str(), up.resets_at),
            ("codex-other", Some(1_764_000_100))
        );
    }

    #[test]
    fn reset_after_seconds_when_no_reset_at() {
        let h = map(&[
            ("x-codex-primary-used-percent", "100"),
            ("x-codex-primary-reset-after-seconds", "90"),
        ]);
        let s = parse_headers(&h, now());
        assert_eq!(s.windows[0].resets_at, Some(1_764_000_090));
    }

    #[test]
    fn reached_type_and_retry_after() {
        let h = map(&[
            (
                "x-codex-rate-limit-reached-type",
                " Workspace_Owner_Credits_Depleted ",
            ),
            ("retry-after", "30"),
        ]);
        let s = parse_headers(&h, now());
        assert_eq!(
            s.reached_type.as_deref(),
            Some("workspace_owner_credits_depleted")
        );
        assert_eq!(s.retry_after, Some(Duration::from_secs(30)));
        // retry-after-ms wins: it is the more precise of the two.
        let h = map(&[("retry-after", "30"), ("retry-after-ms", "1250")]);
        assert_eq!(
            parse_headers(&h, now()).retry_after,
            Some(Duration::from_millis(1250))
        );
        // A bad retry-after-ms falls back to retry-after.
        let h = map(&[("retry-after", "30"), ("retry-after-ms", "soon")]);
        assert_eq!(
            parse_headers(&h, now()).retry_after,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn openai_api_ratelimit_headers() {
        let h = map(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let s = parse_headers(&h, now());
        assert_eq!(
            s.requests,
            ApiRateLimit {
                limit: Some(500),
                remaining: Some(0),
                reset: Some(Duration::from_millis(120)),
            }
        );
        assert_eq!(s.tokens.reset, Some(Duration::from_secs(360)));
        // The spent limit decides, not the longest reset.
        assert_eq!(s.api_reset(), Some(Duration::from_millis(120)));
        // Nothing known spent: the latest reset.
        let h = map(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "2"),
        ]);
        assert_eq!(
            parse_headers(&h, now()).api_reset(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn hostile_headers_teach_nothing() {
        let mut h = map(&[
            ("x-codex-primary-used-percent", "NaN"),
            ("x-codex-secondary-used-percent", "-5"),
            ("x-big-primary-used-percent", "1e308"),
            ("x-inf-primary-used-percent", "inf"),
            ("x-ok-primary-used-percent", "50"),
            ("x-ok-primary-window-minutes", "99999999999999999999999"),
            ("x-ok-primary-reset-at", "-1764000000"),
            ("x-ok-secondary-used-percent", "1"),
            ("x-ok-secondary-reset-at", "99999999999"),
            ("x--primary-used-percent", "5"),
            ("x-codex-rate-limit-reached-type", "<script>"),
            ("retry-after", "-3"),
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-reset-requests", "NaNs"),
            ("x-codex-credits-balance", "\"; drop"),
        ]);
        h.append(
            "x-bin-primary-used-percent",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        h.append(
            "x-ok-primary-window-minutes",
            HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        let s = parse_headers(&h, now());
        assert_eq!(
            s,
            HeaderSignals {
                windows: vec![
                    RateWindow {
                        family: "ok".into(),
                        name: WindowName::Primary,
                        used_percent: 50.0,
                        window_minutes: None,
                        resets_at: None,
                    },
                    RateWindow {
                        family: "ok".into(),
                        name: WindowName::Secondary,
                        used_percent: 1.0,
                        window_minutes: None,
                        resets_at: None,
                    },
                ],
                ..HeaderSignals::default()
            }
        );
    }

    #[test]
    fn family_count_is_bounded() {
        let mut h = HeaderMap::new();
        for i in 0..200 {
            h.insert(
                HeaderName::from_bytes(format!("x-f{i}-primary-used-percent").as_bytes()).unwrap(),
                HeaderValue::from_static("100"),
            );
        }
        let long = format!("x-{}-primary-used-percent", "a".repeat(500));
        h.insert(
            HeaderName::from_bytes(long.as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
        assert_eq!(parse_headers(&h, now()).windows.len(), MAX_FAMILIES);
    }

    #[test]
    fn unix_seconds() {
        assert_eq!(parse_unix_seconds("1764003600", now()), Some(1_764_003_600));
        assert_eq!(
            parse_unix_seconds("1764003600.75", now()),
            Some(1_764_003_600)
        );
        for bad in [
            "",
            "0",
            "-5",
            "1e9",
            "1764003600.x",
            "99999999999999999999",
            "abc",
        ] {
            assert_eq!(parse_unix_seconds(bad, now()), None, "{bad:?}");
        }
    }
}
