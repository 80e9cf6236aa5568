//! Sessions: which header names a session, and the billing source each one is
//! pinned to at its first request, for its lifetime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use serde::Serialize;
use sha2::Digest;

use crate::billing::Billing;
use crate::ledger::AccountHash;

/// Header names tried in order (hyphenated since Codex 0.171.0, underscores before).
const SESSION_HEADERS: [&str; 4] = ["session-id", "session_id", "thread-id", "conversation_id"];

/// Longest session id kept as is; longer ones are hashed so the table stays small.
const MAX_ID_LEN: usize = 128;

/// Sessions idle this long are forgotten when the table is large.
const IDLE_EVICT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const EVICT_ABOVE: usize = 4096;

/// The session a request belongs to.
pub fn session_id(h: &HeaderMap) -> String {
    for name in SESSION_HEADERS {
        // Raw bytes: a value that is not visible ASCII is still this session's
        // id (hashed), never a silent fall into the shared `default`.
        if let Some(v) = h
            .get(name)
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty())
        {
            if v.len() <= MAX_ID_LEN && v.iter().all(|b| b.is_ascii_graphic()) {
                return String::from_utf8_lossy(v).into_owned();
            }
            let d = sha2::Sha256::digest(v);
            return format!(
                "sha256:{}",
                d.iter()
                    .take(16)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
    }
    "default".to_owned()
}

/// What a session is pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub billing: Billing,
    /// The ChatGPT account (hash) for `chatgpt_plan` sessions.
    pub account: Option<AccountHash>,
    /// Set when the plan was used up and `fallback_to_org` moved the session.
    pub fell_back: bool,
}

struct Entry {
    pin: Pin,
    requests: u64,
    last_seen: Instant,
    last_seen_wall: SystemTime,
    state: &'static str,
}

/// `/status` view of one session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub billing: Billing,
    pub state: &'static str,
    pub requests: u64,
    pub last_seen: String,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// The session's pin, or pins it with `choose` on its first request. A
    /// failed choice pins nothing, so a later request can still succeed.
    pub fn pin<E>(&self, id: &str, choose: impl FnOnce() -> Result<Pin, E>) -> Result<Pin, E> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(e) = map.get_mut(id) {
            e.requests += 1;
            e.last_seen = now;
            e.last_seen_wall = SystemTime::now();
            return Ok(e.pin.clone());
        }
        let pin = choose()?;
        if map.len() >= EVICT_ABOVE {
            map.retain(|_, e| now.duration_since(e.last_seen) < IDLE_EVICT);
        }
        map.insert(
            id.to_owned(),
            Entry {
                pin: pin.clone(),
                requests: 1,
                last_seen: now,
                last_seen_wall: SystemTime::now(),
                state: "active",
            },
        );
        self.publish(&map);
        Ok(pin)
    }

    /// The session's pin, if it has one, without counting a request.
    pub fn peek(&self, id: &str) -> Option<Pin> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|e| e.pin.clone())
    }

    /// Moves a `chatgpt_plan` session to `org` (the plan is used up and the org opted in).
    pub fn fall_back_to_org(&self, id: &str) -> Option<Pin> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get_mut(id)?;
        e.pin = Pin {
            billing: Billing::Org,
            account: None,
            fell_back: true,
        };
        let pin = e.pin.clone();
        self.publish(&map);
        Some(pin)
    }

    /// Records a state a person should see (`active`, `limited`, `disconnected`, `needs_reconnect`).
    pub fn set_state(&self, id: &str, state: &'static str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(id) {
            if e.state != state {
                e.state = state;
                self.publish(&map);
            }
        }
    }

    pub fn views(&self) -> Vec<SessionView> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<SessionView> = map
            .iter()
            .map(|(id, e)| SessionView {
                id: id.clone(),
                billing: e.pin.billing,
                state: e.state,
                requests: e.requests,
                last_seen: crate::time::rfc3339_millis(e.last_seen_wall),
            })
            .collect();
        v.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
        v
    }

    /// The `sessions{billing,state}` gauge.
    fn publish(&self, map: &HashMap<String, Entry>) {
        const STATES: [&str; 4] = ["active", "limited", "disconnected", "needs_reconnect"];
        for billing in Billing::ALL {
            for state in STATES {
                let n = map
                    .values()
                    .filter(|e| e.pin.billing == billing && e.state == state)
                    .count();
                metrics::gauge!("codex_sidecar_sessions", "billing" => billing.as_str(), "state" => state).set(n as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use http::HeaderValue;

    #[test]
    fn session_header_order() {
        let mut h = HeaderMap::new();
        assert_eq!(session_id(&h), "default");
        h.insert("conversation_id", HeaderValue::from_static("c"));
        assert_eq!(session_id(&h), "c");
        h.insert("thread-id", HeaderValue::from_static("t"));
        assert_eq!(session_id(&h), "t");
        h.insert("session_id", HeaderValue::from_static("s_"));
        assert_eq!(session_id(&h), "s_");
        h.insert("session-id", HeaderValue::from_static("s-"));
        assert_eq!(session_id(&h), "s-");
        h.insert(
            "session-id",
            HeaderValue::from_str(&"x".repeat(500)).unwrap(),
        );
        assert!(session_id(&h).starts_with("sha256:") && session_id(&h).len() == 39);
        let mut h = HeaderMap::new();
        h.insert(
            "session-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        let id = session_id(&h);
        assert!(
            id.starts_with("sha256:"),
            "a non-ASCII id is hashed, not `default`: {id}"
        );
    }

    #[test]
    fn pinned_for_life_and_failures_pin_nothing() {
        let s = Sessions::default();
        let org = Pin {
            billing: Billing::Org,
            account: None,
            fell_back: false,
        };
        assert!(s.pin::<()>("a", || Err(())).is_err());
        assert_eq!(s.pin::<()>("a", || Ok(org.clone())).unwrap(), org);
        let chat = Pin {
            billing: Billing::ChatgptPlan,
            account: Some(AccountHash::of("h")),
            fell_back: false,
        };
        assert_eq!(s.pin::<()>("a", || Ok(chat.clone())).unwrap(), org);
        assert_eq!(s.views()[0].requests, 2);
    }
}
