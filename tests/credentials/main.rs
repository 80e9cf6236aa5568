//! The credential lifecycle against the fake auth server (tests/support/auth.rs).
//! One test binary, a file per theme:
//! - `refresh`: proactive refresh, refresh after a 401, single flight under 50
//!   concurrent 401s, each permanent failure, backoff, read-only files, an agent
//!   that goes away mid-refresh;
//! - `device`: the device-code login (slow user, denial, expiry, give-up, the command);
//! - `files`: a file swapped under load, permission refusal, the watched org key;
//! - `case_12`: CASES.md 12, no secret in any output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod case_12;
mod device;
mod files;
mod refresh;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::sync::{Arc, Mutex};
use support::auth::*;
use support::*;

pub fn ok_stream() -> Reply {
    Reply::sse(upstream::responses_stream(
        &["Hi"],
        "gpt-5.4",
        (10, 4, 2, 1),
    ))
}

pub const EXPIRED: &str = r#"{"error":{"message":"Your authentication token has expired. Please try signing in again.","type":"invalid_request_error","code":"token_expired","param":null}}"#;

/// An upstream that accepts only the org key and the newest token the auth
/// server issued (or `also`), and answers 401 to any other ChatGPT token.
pub fn strict_upstream(
    state: Arc<Mutex<AuthState>>,
    also: Arc<Mutex<Vec<String>>>,
) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |s, _| {
        let auth = s.header("authorization").unwrap_or("").to_owned();
        if auth == format!("Bearer {ORG_KEY}") {
            return ok_stream();
        }
        let st = state.lock().unwrap();
        let ok = st
            .issued
            .last()
            .is_some_and(|t| auth == format!("Bearer {t}"))
            || also
                .lock()
                .unwrap()
                .iter()
                .any(|t| auth == format!("Bearer {t}"));
        if ok {
            ok_stream()
        } else {
            Reply::json(401, EXPIRED)
        }
    }
}

/// A sidecar in front of `up` whose ChatGPT credential refreshes at `auth`.
pub async fn start_with_auth(up: &FakeUpstream, auth: &FakeAuth, dir: &std::path::Path) -> Harness {
    start(
        up,
        Setup {
            extra: auth.extra(dir, up),
            ..Setup::default()
        },
    )
    .await
}

pub fn responses(h: &Harness) -> String {
    format!("{}/v1/responses", h.base)
}

pub async fn status_of(h: &Harness) -> serde_json::Value {
    h.status().await
}

pub fn file_tokens(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn refresh_body(refresh: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann", "grant_type": "refresh_token",
        "refresh_token": refresh, "refresh_reason": reason})
}

pub fn post_req(h: &Harness, session: &str) -> Request<Full<Bytes>> {
    post(&responses(h), session, BODY)
}
