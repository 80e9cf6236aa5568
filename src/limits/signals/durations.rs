//! Reset delays as upstreams write them: `Retry-After`, `retry-after-ms`, Go durations, "try again in Xs".
//!
//! Every parser here is total: garbage, signs, NaN, overflow or absurdly long delays give
//! `None` (nothing learned), never a panic.

use std::time::{Duration, SystemTime};

/// Delays and reset times further away than this are treated as garbage, not as a reset.
///
/// The longest real window is a week (secondary window, 10080 minutes); plans reset at the
/// latest monthly. A year leaves room for both while keeping every `Instant` addition safe.
pub const MAX_RESET: Duration = Duration::from_secs(366 * 24 * 3600);

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a `Retry-After` value: delay seconds (integer or decimal) or an HTTP date.
///
/// A date in the past means "now" (`Duration::ZERO`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(delay) = parse_decimal(value, NANOS_PER_SEC) {
        return Some(delay);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
    (delay <= MAX_RESET).then_some(delay)
}

/// Parses a `retry-after-ms` value: milliseconds, integer or decimal.
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    parse_decimal(value.trim(), NANOS_PER_MILLI)
}

/// Parses plain delay seconds ("60", "1.5"), as some `x-ratelimit-reset-*` values are written.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    parse_decimal(value.trim(), NANOS_PER_SEC)
}

/// Parses a Go `time.Duration` string as the OpenAI API writes `x-ratelimit-reset-*`:
/// `1s`, `6m0s`, `1.5s`, `120ms`, `1h2m3s`, `0`. Negative durations are refused.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let s = value.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (number, after) = rest.split_at(number_len);
        let (unit, unit_len) = go_unit(after)?;
        total = total.checked_add(scaled_nanos(number, unit)?)?;
        rest = after.get(unit_len..)?;
    }
    nanos_to_duration(total)
}

/// The unit at the start of `s` and its length in bytes, longest match first.
fn go_unit(s: &str) -> Option<(u128, usize)> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", NANOS_PER_MILLI),
        ("s", NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("h", 3600 * NANOS_PER_SEC),
    ];
    UNITS
        .iter()
        .find(|(name, _)| s.starts_with(name))
        .map(|(name, nanos)| (*nanos, name.len()))
}

/// Finds "try again in `<delay>`" in an error message, e.g. "Please try again in 1.5s.",
/// "try again in 20ms", "try again in 6m0s", "try again in 2 seconds".
pub fn parse_try_again_in(message: &str) -> Option<Duration> {
    const PHRASE: &str = "try again in";
    // ASCII lowercasing keeps byte offsets, so slices of `lower` line up with `message`.
    let lower = message.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|tail| tail.find(PHRASE)) {
        let start = from + found + PHRASE.len();
        if let Some(delay) = lower.get(start..).and_then(delay_at_start) {
            return Some(delay);
        }
        from = start;
    }
    None
}

/// Reads the delay at the start of `s` (after "try again in").
fn delay_at_start(s: &str) -> Option<Duration> {
    let s = s.trim_start();
    let token_len = s
        .char_indices()
        .find(|(_, c)| {
            !(c.is_ascii_alphanumeric() || *c == '.' || *c == '\u{b5}' || *c == '\u{3bc}')
        })
        .map_or(s.len(), |(i, _)| i);
    let token = s.get(..token_len)?.trim_end_matches('.');
    if let Some(delay) = parse_go_duration(token) {
        return Some(delay);
    }
    // "2 seconds", "1.5 s", "3 minutes", or a bare number (seconds).
    let number_len = token
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let number = token.get(..number_len)?;
    let word = if number_len == token.len() {
        let after = s.get(token_len..)?.trim_start();
        let word_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        after.get(..word_len)?
    } else {
        token.get(number_len..)?
    };
    let unit = match word {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => NANOS_PER_MILLI,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * NANOS_PER_SEC,
        _ => return None,
    };
    nanos_to_duration(scaled_nanos(number, unit)?)
}

/// `number` (digits with at most one '.') times `unit` nanoseconds, capped at [`MAX_RESET`].
fn parse_decimal(number: &str, unit: u128) -> Option<Duration> {
    nanos_to_duration(scaled_nanos(number, unit)?)
}

/// Exact integer arithmetic, so "0.12" seconds is exactly 120 ms (no float rounding).
fn scaled_nanos(number: &str, unit: u128) -> Option<u128> {
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    let cap = MAX_RESET.as_nanos();
    let mut whole: u128 = 0;
    for digit in int_part.bytes() {
        whole = whole
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
        if whole.checked_mul(unit)? > cap {
            return None;
        }
    }
    // Digits beyond 18 are below a nanosecond for every unit used here.
    let frac_digits = frac_part.get(..frac_part.len().min(18))?;
    let mut frac: u128 = 0;
    let mut scale: u128 = 1;
    for digit in frac_digits.bytes() {
        frac = frac * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    whole.checked_mul(unit)?.checked_add(frac * unit / scale)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    if nanos > MAX_RESET.as_nanos() {
        return None;
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn retry_after_seconds_integer_and_decimal() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(parse_retry_after("120", now), ms(120_000));
        assert_eq!(parse_retry_after(" 7 ", now), ms(7_000));
        assert_eq!(parse_retry_after("1.5", now), ms(1_500));
        assert_eq!(parse_retry_after("0", now), ms(0));
        assert_eq!(parse_retry_after("0.12", now), ms(120));
    }

    #[test]
    fn retry_after_http_date() {
        // 2025-11-24T16:00:00Z is 1764000000.
        let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(
            parse_retry_after("Mon, 24 Nov 2025 16:01:30 GMT", now),
            ms(90_000)
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Mon, 24 Nov 2025 15:00:00 GMT", now),
            ms(0)
        );
    }

    #[test]
    fn retry_after_ms() {
        assert_eq!(parse_retry_after_ms("1500"), ms(1_500));
        assert_eq!(
            parse_retry_after_ms("20.5"),
            Some(Duration::from_micros(20_500))
        );
        assert_eq!(parse_retry_after_ms(""), None);
    }

    #[test]
    fn retry_after_hostile_values_teach_nothing() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        for bad in [
            "",
            " ",
            "-1",
            "+-3",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e9",
            "1.2.3",
            ".",
            "99999999999999999999999999999999999999999999999999",
            "340282366920938463463374607431768211456",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Tue, 99 Foo 2025 16:01:30 GMT",
            "\u{0}",
            "12\u{e9}",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
            assert_eq!(parse_retry_after_ms(bad), None, "{bad:?}");
        }
        // One day beyond MAX_RESET is garbage; MAX_RESET itself is kept.
        assert_eq!(parse_retry_after("31708800", now), None);
        assert_eq!(parse_retry_after("31622400", now), Some(MAX_RESET));
        assert_eq!(parse_retry_after_ms("31708800001"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), ms(1_000));
        assert_eq!(parse_go_duration("6m0s"), ms(360_000));
        assert_eq!(parse_go_duration("1.5s"), ms(1_500));
        assert_eq!(parse_go_duration("120ms"), ms(120));
        assert_eq!(parse_go_duration("1h2m3s"), ms(3_723_000));
        assert_eq!(parse_go_duration("0"), ms(0));
        assert_eq!(parse_go_duration("0s"), ms(0));
        assert_eq!(parse_go_duration("+2s"), ms(2_000));
        assert_eq!(parse_go_duration("2h45m0.5s"), ms(9_900_500));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(
            parse_go_duration("250\u{b5}s"),
            Some(Duration::from_micros(250))
        );
        assert_eq!(parse_go_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_go_duration(".5s"), ms(500));
        assert_eq!(parse_go_duration("17.000000000000000000001s"), ms(17_000));
    }

    #[test]
    fn go_durations_hostile() {
        for bad in [
            "",
            "s",
            "1",
            "-1s",
            "1x",
            "1.2.3s",
            "..s",
            "1s2",
            "ms",
            "NaNs",
            "1e3s",
            "9999999h",
            "99999999999999999999999999999999999999999h",
            "1h-2m",
            "1 s",
            "\u{3bc}",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn try_again_in_messages() {
        assert_eq!(
            parse_try_again_in(
                "Rate limit reached for gpt-5 in organization org-x on tokens per min (TPM): \
                 Limit 30000, Used 29000, Requested 1500. Please try again in 1.5s. Visit ..."
            ),
            ms(1_500)
        );
        assert_eq!(parse_try_again_in("Please try again in 20ms."), ms(20));
        assert_eq!(parse_try_again_in("please TRY AGAIN IN 6m0s"), ms(360_000));
        assert_eq!(parse_try_again_in("try again in 2 seconds"), ms(2_000));
        assert_eq!(parse_try_again_in("try again in 3 minutes."), ms(180_000));
        assert_eq!(parse_try_again_in("try again in 4"), ms(4_000));
        assert_eq!(
            parse_try_again_in("try again in a moment, or try again in 5s"),
            ms(5_000)
        );
    }

    #[test]
    fn try_again_in_hostile() {
        for bad in [
            "",
            "try again in",
            "try again in later",
            "try again in -5s",
            "try again in NaNs",
            "try again in 99999999999999999999999999h",
            "try again in \u{1F600}\u{1F600}",
            "\u{130}try again in", // a multibyte char whose lowercase is longer
            "try again in 1.5 fortnights",
        ] {
            assert_eq!(parse_try_again_in(bad), None, "{bad:?}");
        }
        // Long garbage is scanned without trouble.
        let long = "try again in x ".repeat(10_000);
        assert_eq!(parse_try_again_in(&long), None);
    }
}
