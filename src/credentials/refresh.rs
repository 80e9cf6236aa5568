//! Renewing the ChatGPT access token (PROTOCOL.md §3): shortly before its
//! `exp`, and after the upstream answered 401. One refresh at a time: refresh
//! tokens rotate, so a second concurrent refresh would spend a dead token.
//! Rotated tokens are written to the file before anything uses them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::sync::Mutex;

use super::auth_file::{jwt_payload, ChatgptTokens};
use super::auth_http::{AuthAnswer, AuthClient};
use super::persist;
use super::{ChatgptCred, ChatgptStatus, CredentialStore, Persisted};
use crate::secret::Secret;

/// Refresh this long before the access token expires.
pub const PROACTIVE_MARGIN: Duration = Duration::from_secs(300);
/// A proactive refresh is not repeated sooner than this after one succeeded
/// (a server handing out tokens shorter than the margin must not be hammered).
const MIN_PROACTIVE_GAP: Duration = Duration::from_secs(30);
/// After a 401, the file is reloaded and refreshed at most this often.
const MIN_UNAUTHORIZED_GAP: Duration = Duration::from_secs(10);
/// The longest an agent's 401 answer waits for the refresh it started (the
/// refresh itself goes on; the agent's retry then finds its result).
pub const MAX_WAIT_ON_401: Duration = Duration::from_secs(30);
/// Backoff after failed attempts: 1 s, 2 s, 4 s … up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The refresh failures that need the person to reconnect the account.
pub const PERMANENT_CODES: [&str; 3] = [
    "refresh_token_expired",
    "refresh_token_reused",
    "refresh_token_invalidated",
];

/// Why a refresh is made (sent as `refresh_reason`, as Codex 0.171.0 does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ProactiveExpiry,
    UnauthorizedRecovery,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProactiveExpiry => "proactive_expiry",
            Reason::UnauthorizedRecovery => "unauthorized_recovery",
        }
    }
}

/// What one refresh attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New tokens are in use (and written, unless the file is read-only).
    Refreshed(Persisted),
    /// The account must be reconnected (`needs_reconnect`).
    Permanent(String),
    /// Failed for now; retried with backoff.
    Failed(String),
    /// Nothing to do (another refresh or a file change came first, no
    /// refresh token, or a backoff is running).
    Skipped,
}

#[derive(Default)]
struct Flight {
    /// The access token (digest) this state is about: a credential that
    /// changed from outside (a reconnect, another tool) starts afresh.
    for_token: Option<[u8; 32]>,
    failures: u32,
    next_attempt: Option<Instant>,
    /// A refresh still owed after a failed 401 recovery.
    wanted: bool,
    last_ok: Option<Instant>,
    last_unauthorized: Option<Instant>,
}

fn digest(cred: &ChatgptCred) -> [u8; 32] {
    sha2::Sha256::digest(cred.tokens.access_token.expose().as_bytes()).into()
}

impl Flight {
    /// Whether a poll at `now` (wall clock `unix_now`) should refresh a token
    /// expiring at `expires_at`, and why.
    fn due(&self, now: Instant, expires_at: Option<i64>, unix_now: i64) -> Option<Reason> {
        if self.next_attempt.is_some_and(|t| now < t) {
            return None;
        }
        if self.wanted {
            return Some(Reason::UnauthorizedRecovery);
        }
        let near =
            expires_at.is_some_and(|exp| exp - unix_now <= PROACTIVE_MARGIN.as_secs() as i64);
        let rested = self
            .last_ok
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_PROACTIVE_GAP);
        (near && rested).then_some(Reason::ProactiveExpiry)
    }

    /// Forgets failures, backoff and owed refreshes of another credential.
    fn follow(&mut self, creds: &CredentialStore, cred: &ChatgptCred) {
        let d = digest(cred);
        if self.for_token != Some(d) {
            if self.for_token.is_some() {
                creds.set_refresh_problem(None);
            }
            *self = Flight {
                for_token: Some(d),
                ..Flight::default()
            };
        }
    }
}

/// The single-flight refresher.
pub struct Refresher {
    http: AuthClient,
    client_id: String,
    flight: Mutex<Flight>,
}

impl Refresher {
    pub fn new(http: AuthClient, client_id: String) -> Refresher {
        Refresher {
            http,
            client_id,
            flight: Mutex::new(Flight::default()),
        }
    }

    /// Called every poll: refreshes when the access token expires within
    /// [`PROACTIVE_MARGIN`], or when a failed 401 recovery is owed.
    pub async fn tick(&self, creds: &CredentialStore) -> Outcome {
        let ChatgptStatus::Connected(cred) = creds.chatgpt() else {
            return Outcome::Skipped;
        };
        let mut flight = self.flight.lock().await;
        flight.follow(creds, &cred);
        let Some(reason) = flight.due(
            Instant::now(),
            cred.tokens.expires_at,
            crate::time::unix_now(),
        ) else {
            return Outcome::Skipped;
        };
        self.attempt(&mut flight, creds, &cred, reason).await
    }

    /// After the upstream answered 401 to `failed`: reload the file (another
    /// tool may have renewed it), and if the token is still the one that
    /// failed, refresh. Concurrent callers wait for the one refresh and return.
    pub async fn after_unauthorized(
        &self,
        creds: &CredentialStore,
        failed: &ChatgptCred,
    ) -> Outcome {
        let mut flight = self.flight.lock().await;
        let is_current = |creds: &CredentialStore| {
            matches!(creds.chatgpt(), ChatgptStatus::Connected(c)
                if c.tokens.access_token == failed.tokens.access_token)
        };
        if !is_current(creds) {
            return Outcome::Skipped;
        }
        creds.reload();
        let ChatgptStatus::Connected(cred) = creds.chatgpt() else {
            return Outcome::Skipped;
        };
        if cred.tokens.access_token != failed.tokens.access_token {
            tracing::info!("the ChatGPT credential file changed since the 401: using it");
            return Outcome::Skipped;
        }
        flight.follow(creds, &cred);
        if flight
            .last_unauthorized
            .is_some_and(|t| t.elapsed() < MIN_UNAUTHORIZED_GAP)
        {
            return Outcome::Skipped;
        }
        flight.last_unauthorized = Some(Instant::now());
        self.attempt(&mut flight, creds, &cred, Reason::UnauthorizedRecovery)
            .await
    }

    async fn attempt(
        &self,
        flight: &mut Flight,
        creds: &CredentialStore,
        cred: &Arc<ChatgptCred>,
        reason: Reason,
    ) -> Outcome {
        let Some(refresh_token) = cred.tokens.refresh_token.as_ref() else {
            flight.wanted = false;
            // Said once a minute, not on every poll.
            flight.next_attempt = Some(Instant::now() + MAX_BACKOFF);
            tracing::warn!(
                reason = reason.as_str(),
                "the ChatGPT access token needs renewing but the credential file has no refresh_token; reconnect the account"
            );
            return Outcome::Skipped;
        };
        let body = serde_json::json!({
            "client_id": self.client_id,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
            "refresh_reason": reason.as_str(),
        });
        let body = Secret::new(body.to_string());
        tracing::debug!(
            reason = reason.as_str(),
            "refreshing the ChatGPT access token"
        );
        let answer = self
            .http
            .post_json("/oauth/token", body.expose().as_bytes().to_vec())
            .await;
        let outcome = match answer {
            Err(e) => Outcome::Failed(format!(
                "cannot reach {}: {}",
                self.http.url("/oauth/token"),
                e.0
            )),
            Ok(a) => self.judge(a, creds, cred),
        };
        match &outcome {
            Outcome::Refreshed(persisted) => {
                metrics::counter!("codex_sidecar_credential_refresh_total", "outcome" => "ok")
                    .increment(1);
                *flight = Flight {
                    for_token: match creds.chatgpt() {
                        ChatgptStatus::Connected(c) => Some(digest(&c)),
                        _ => None,
                    },
                    last_ok: Some(Instant::now()),
                    last_unauthorized: flight.last_unauthorized,
                    ..Flight::default()
                };
                creds.set_refresh_problem(None);
                tracing::info!(
                    reason = reason.as_str(),
                    persisted = matches!(persisted, Persisted::Written),
                    expires_at = creds_expiry(creds).as_deref().unwrap_or(""),
                    "ChatGPT access token refreshed"
                );
            }
            Outcome::Permanent(code) => {
                metrics::counter!("codex_sidecar_credential_refresh_total", "outcome" => "permanent_failure")
                    .increment(1);
                flight.wanted = false;
                flight.failures = 0;
                flight.next_attempt = None;
                tracing::warn!(
                    code = code.as_str(),
                    "the ChatGPT sign-in can no longer be renewed: state needs_reconnect; new sessions use the organization; reconnect the account (codex-sidecar login --device)"
                );
                creds.mark_needs_reconnect(cred);
            }
            Outcome::Failed(why) => {
                metrics::counter!("codex_sidecar_credential_refresh_total", "outcome" => "failed")
                    .increment(1);
                flight.failures = flight.failures.saturating_add(1);
                let wait = backoff(flight.failures);
                flight.next_attempt = Some(Instant::now() + wait);
                flight.wanted = flight.wanted || reason == Reason::UnauthorizedRecovery;
                let problem = format!(
                    "token refresh failed {} time(s), retrying in {}: {why}",
                    flight.failures,
                    humantime::format_duration(wait)
                );
                tracing::warn!(
                    reason = reason.as_str(),
                    failures = flight.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %why,
                    "ChatGPT token refresh failed"
                );
                creds.set_refresh_problem(Some(problem));
            }
            Outcome::Skipped => {}
        }
        outcome
    }

    /// Reads the auth server's answer and, on success, installs the tokens.
    fn judge(&self, a: AuthAnswer, creds: &CredentialStore, cred: &Arc<ChatgptCred>) -> Outcome {
        if a.status == 400 || a.status == 401 {
            if let Some(code) = a
                .error_codes()
                .into_iter()
                .find(|c| PERMANENT_CODES.contains(&c.as_str()))
            {
                return Outcome::Permanent(code);
            }
        }
        if !(200..300).contains(&a.status) {
            let code = a
                .error_code()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return Outcome::Failed(format!(
                "{} answered HTTP {}{code}",
                self.http.url("/oauth/token"),
                a.status
            ));
        }
        let Some(new) = merge(&cred.tokens, &a) else {
            return Outcome::Failed(format!(
                "{} answered {} with a body that is not a token answer",
                self.http.url("/oauth/token"),
                a.status
            ));
        };
        let path = creds.sources().chatgpt_auth_file;
        let installed = creds.install_refreshed(cred, new, |tokens| {
            let Some(path) = path.as_deref() else {
                return Ok(Persisted::InMemory);
            };
            if persist::is_read_only(path) {
                return Ok(Persisted::InMemory);
            }
            let now = crate::time::rfc3339_millis(std::time::SystemTime::now());
            match persist::write_auth_file(path, tokens, &now, persist::Others::Keep) {
                Ok(()) => Ok(Persisted::Written),
                // Keep working on the new tokens: the old refresh token is dead now.
                Err(e) => {
                    tracing::warn!(error = %e, "refreshed tokens are kept in memory only");
                    Ok(Persisted::InMemory)
                }
            }
        });
        match installed {
            Ok(p) => Outcome::Refreshed(p),
            Err(e) => Outcome::Failed(e),
        }
    }
}

fn creds_expiry(creds: &CredentialStore) -> Option<String> {
    match creds.chatgpt() {
        ChatgptStatus::Connected(c) => c.tokens.expires_at.and_then(crate::time::rfc3339_from_unix),
        _ => None,
    }
}

fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// The old tokens updated by a refresh answer: absent fields keep the old value.
pub fn merge(old: &ChatgptTokens, a: &AuthAnswer) -> Option<ChatgptTokens> {
    let v = a.json()?;
    let obj = v.as_object()?;
    let field = |k: &str| {
        obj.get(k)
            .and_then(|t| t.as_str())
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret::new(t.to_owned()))
    };
    let access = field("access_token");
    let id = field("id_token");
    let refresh = field("refresh_token");
    if access.is_none() && id.is_none() && refresh.is_none() {
        return None;
    }
    let mut new = old.clone();
    if let Some(t) = access {
        new.expires_at =
            jwt_payload(t.expose()).and_then(|c| c.get("exp").and_then(|e| e.as_i64()));
        new.access_token = t;
    }
    if let Some(t) = id {
        let claims = jwt_payload(t.expose());
        let auth = claims
            .as_ref()
            .and_then(|c| c.get("https://api.openai.com/auth"));
        if let Some(plan) = auth
            .and_then(|c| c.get("chatgpt_plan_type"))
            .and_then(|p| p.as_str())
        {
            new.plan_type = Some(plan.to_owned());
        }
        if let Some(acc) = auth
            .and_then(|c| c.get("chatgpt_account_id"))
            .and_then(|p| p.as_str())
            .filter(|a| !a.is_empty())
        {
            new.account_id = Secret::new(acc.to_owned());
        }
        new.id_token = Some(t);
    }
    if let Some(t) = refresh {
        new.refresh_token = Some(t);
    }
    Some(new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use base64::Engine;
    use bytes::Bytes;

    fn jwt(claims: serde_json::Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(b"{}"), e.encode(claims.to_string()))
    }

    fn old() -> ChatgptTokens {
        ChatgptTokens {
            access_token: Secret::new(jwt(serde_json::json!({"exp": 100}))),
            refresh_token: Some(Secret::new("rt-old".into())),
            id_token: Some(Secret::new("id-old".into())),
            account_id: Secret::new("acc-1".into()),
            expires_at: Some(100),
            plan_type: Some("plus".into()),
        }
    }

    fn answer(body: serde_json::Value) -> AuthAnswer {
        AuthAnswer {
            status: 200,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn absent_fields_keep_the_old_values() {
        let access = jwt(serde_json::json!({"exp": 200}));
        let n = merge(&old(), &answer(serde_json::json!({"access_token": access}))).unwrap();
        assert_eq!(n.access_token.expose(), access);
        assert_eq!(n.expires_at, Some(200));
        assert_eq!(n.refresh_token.unwrap().expose(), "rt-old");
        assert_eq!(n.id_token.unwrap().expose(), "id-old");
        assert_eq!(n.account_id.expose(), "acc-1");
        let id = jwt(
            serde_json::json!({"https://api.openai.com/auth": {"chatgpt_plan_type": "pro", "chatgpt_account_id": "acc-1"}}),
        );
        let n = merge(
            &old(),
            &answer(serde_json::json!({"id_token": id, "refresh_token": "rt-new"})),
        )
        .unwrap();
        assert_eq!(n.plan_type.as_deref(), Some("pro"));
        assert_eq!(n.refresh_token.unwrap().expose(), "rt-new");
        assert_eq!(n.expires_at, Some(100));
        assert!(merge(&old(), &answer(serde_json::json!({"token_type": "bearer"}))).is_none());
        assert!(merge(&old(), &answer(serde_json::json!([1]))).is_none());
    }

    #[test]
    fn a_poll_refreshes_inside_the_margin_after_backoff_and_rest() {
        let t0 = Instant::now();
        let f = Flight::default();
        let now = 1_000_000;
        assert_eq!(f.due(t0, Some(now + 3600), now), None);
        assert_eq!(f.due(t0, None, now), None, "no exp: only a 401 refreshes");
        assert_eq!(f.due(t0, Some(now + 301), now), None);
        assert_eq!(
            f.due(t0, Some(now + 300), now),
            Some(Reason::ProactiveExpiry)
        );
        assert_eq!(
            f.due(t0, Some(now - 10), now),
            Some(Reason::ProactiveExpiry)
        );
        let backing_off = Flight {
            next_attempt: Some(t0 + Duration::from_secs(4)),
            wanted: true,
            ..Flight::default()
        };
        assert_eq!(
            backing_off.due(t0 + Duration::from_secs(3), Some(now), now),
            None
        );
        assert_eq!(
            backing_off.due(t0 + Duration::from_secs(4), Some(now + 3600), now),
            Some(Reason::UnauthorizedRecovery),
            "a failed 401 recovery is owed whatever the expiry"
        );
        let just_refreshed = Flight {
            last_ok: Some(t0),
            ..Flight::default()
        };
        assert_eq!(
            just_refreshed.due(t0 + Duration::from_secs(29), Some(now + 60), now),
            None
        );
        assert_eq!(
            just_refreshed.due(t0 + MIN_PROACTIVE_GAP, Some(now + 60), now),
            Some(Reason::ProactiveExpiry)
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let s: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
