//! The limit-signal parsers (src/limits/signals) on arbitrary error bodies,
//! headers, stream failures and durations: they never panic.
#![no_main]

use std::time::{Duration, SystemTime};

use codex_sidecar::limits::signals;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let status = match data.first() {
        Some(b) if b % 2 == 0 => 429,
        Some(b) => 400 + u16::from(*b),
        None => 429,
    };
    // The body as it came.
    let _ = signals::parse_error_body(data, now);
    // The same bytes as header lines `name: value`.
    let text = String::from_utf8_lossy(data);
    let mut headers = http::HeaderMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let parsed = signals::parse_headers(&headers, now);
    let _ = signals::signal_from_response(status, &parsed, now);
    let _ = signals::signal_from_error(status, &parsed, data, now);
    let (code, message) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = signals::signal_from_stream_failure(code, message);
    for line in text.lines() {
        let _ = signals::parse_retry_after(line, now);
        let _ = signals::parse_retry_after_ms(line);
        let _ = signals::parse_seconds(line);
        let _ = signals::parse_go_duration(line);
        let _ = signals::parse_try_again_in(line);
        let _ = signals::parse_unix_seconds(line, now);
    }
});
