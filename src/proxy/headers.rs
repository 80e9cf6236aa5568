//! Header rules (SPEC "Headers"): what goes to the upstream and what comes back.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::error::ApiError;

/// Most request headers accepted (Codex sends about fifteen).
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Most bytes of request header names and values together.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;

/// Refuses a request head over the limits with `431` (before the route table:
/// no record), so a client cannot make the sidecar forward or hold huge heads.
pub fn check_request_head(h: &HeaderMap) -> Result<(), ApiError> {
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if h.len() <= MAX_REQUEST_HEADERS && bytes <= MAX_REQUEST_HEADER_BYTES {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_header_fields_too_large",
        format!(
            "the request has {} headers of {bytes} bytes; codex-sidecar accepts at most {MAX_REQUEST_HEADERS} headers of {MAX_REQUEST_HEADER_BYTES} bytes in all: drop the extra headers",
            h.len()
        ),
    ))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies use.
/// `HeaderName`s, not strings: a lookup by `&str` parses and checks the name every time,
/// and these run twice on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Client headers never forwarded: the local token, cookies, the host, and any
/// attempt to choose the account or organization.
static CLIENT_ONLY: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    HeaderName::from_static("chatgpt-account-id"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Rewrites the agent's headers for the upstream, in place. The credential is added by the caller.
pub fn to_upstream(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    for n in &CLIENT_ONLY {
        h.remove(n);
    }
    // The sidecar reads the stream, so it must come uncompressed.
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Rewrites the upstream's headers for the agent, in place.
pub fn to_agent(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::SET_COOKIE);
}

/// Marks an event stream so no proxy or client buffers it.
pub fn mark_event_stream(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
    // Sent chunked: bytes stay exact, and an error event can still be appended.
    h.remove(header::CONTENT_LENGTH);
}

pub fn is_event_stream(h: &HeaderMap) -> bool {
    content_type(h).is_some_and(|ct| ct.eq_ignore_ascii_case("text/event-stream"))
}

pub fn is_json(h: &HeaderMap) -> bool {
    content_type(h).is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct == "application/json" || ct.ends_with("+json")
    })
}

/// The media type without parameters.
pub fn content_type(h: &HeaderMap) -> Option<&str> {
    h.get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .split(';')
        .next()
        .map(str::trim)
}

/// True when the body is compressed (the reader cannot see into it).
pub fn is_encoded(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn upstream_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer local"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "a=b"),
            ("host", "127.0.0.1:7800"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("chatgpt-account-id", "evil"),
            ("openai-organization", "evil"),
            ("openai-project", "evil"),
            ("accept-encoding", "zstd,gzip"),
            ("session-id", "s1"),
            ("x-codex-turn-state", "ts"),
            ("x-codex-turn-metadata", "{\"a\":1}"),
            ("originator", "codex_exec"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        to_upstream(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "originator",
                "session-id",
                "x-codex-turn-metadata",
                "x-codex-turn-state"
            ]
        );
        assert_eq!(h["accept-encoding"], "identity");
    }

    #[test]
    fn request_heads_over_the_limits_are_431() {
        let mut h = HeaderMap::new();
        for i in 0..MAX_REQUEST_HEADERS {
            h.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(check_request_head(&h).is_ok());
        h.insert("x-one-more", HeaderValue::from_static("v"));
        let e = check_request_head(&h).unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(e.message.contains("101 headers"), "{}", e.message);
        let mut h = HeaderMap::new();
        let big = "a".repeat(MAX_REQUEST_HEADER_BYTES);
        h.insert("x-big", HeaderValue::from_str(&big).unwrap());
        assert!(check_request_head(&h).is_err());
    }

    #[test]
    fn agent_headers() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("__cf_bm=1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-codex-turn-state", HeaderValue::from_static("ts"));
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert("content-length", HeaderValue::from_static("10"));
        to_agent(&mut h);
        assert!(is_event_stream(&h));
        mark_event_stream(&mut h);
        assert!(h.get("set-cookie").is_none() && h.get("transfer-encoding").is_none());
        assert!(h.get("content-length").is_none());
        assert_eq!(h["x-codex-turn-state"], "ts");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-accel-buffering"], "no");
    }
}
