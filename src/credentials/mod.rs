//! The two credential sources (the user's ChatGPT plan and the org key) behind
//! one interface: what is usable right now, and the header values to attach.
//!
//! Files are re-read by [`CredentialStore::reload`] (called at start, by the
//! watcher and on SIGHUP); a file caught half-written keeps the last good
//! credential for [`SETTLE`] before it is reported invalid. Refreshed tokens
//! that could not be written back, and tokens that failed for good, are
//! remembered so the next poll of the unchanged file does not undo them.

pub mod auth_file;
pub mod auth_http;
pub mod device;
pub mod files;
mod load;
pub mod persist;
pub mod refresh;
#[cfg(test)]
mod store_tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde::Serialize;
use sha2::Digest;

use crate::config::Config;
use crate::ledger::AccountHash;
use crate::secret::Secret;
use auth_file::ChatgptTokens;
use load::{chatgpt_cred, load_chatgpt, load_org};

/// How long a credential file may stay unparseable (being rewritten) before the
/// last good credential is dropped.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A connected ChatGPT account, ready to attach.
pub struct ChatgptCred {
    pub tokens: ChatgptTokens,
    pub account_hash: AccountHash,
    pub authorization: HeaderValue,
    pub account_header: HeaderValue,
}

/// The organization's API key, ready to attach.
pub struct OrgCred {
    pub source: String,
    pub authorization: HeaderValue,
    pub organization: Option<HeaderValue>,
    pub project: Option<HeaderValue>,
    _key: Secret,
}

/// The state of the ChatGPT source (SPEC `/status` names).
#[derive(Clone)]
pub enum ChatgptStatus {
    Connected(Arc<ChatgptCred>),
    Disconnected,
    Disabled,
    NeedsReconnect,
    Invalid(String),
}

impl ChatgptStatus {
    pub fn state_name(&self) -> &'static str {
        match self {
            ChatgptStatus::Connected(_) => "connected",
            ChatgptStatus::Disconnected => "disconnected",
            ChatgptStatus::Disabled => "disabled",
            ChatgptStatus::NeedsReconnect => "needs_reconnect",
            ChatgptStatus::Invalid(_) => "invalid",
        }
    }
}

#[derive(Clone)]
enum OrgStatus {
    Ready(Arc<OrgCred>),
    Missing,
    Invalid(String),
}

struct Slot<T> {
    current: T,
    /// When the file first failed to parse while a good credential was kept.
    bad_since: Option<Instant>,
}

/// What `/status` shows of one source: never a secret.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialView {
    pub source: &'static str,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    /// Set while token refreshes fail and are being retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_problem: Option<String>,
}

/// Where credentials are looked for.
#[derive(Clone, Debug)]
pub struct Sources {
    pub chatgpt_enabled: bool,
    pub chatgpt_auth_file: Option<PathBuf>,
    pub org_key_file: Option<PathBuf>,
    pub org_key_env: String,
    pub organization: Option<String>,
    pub project: Option<String>,
}

impl Sources {
    pub fn from_config(cfg: &Config) -> Self {
        Sources {
            chatgpt_enabled: cfg.chatgpt.enabled,
            chatgpt_auth_file: cfg.chatgpt.auth_file.clone(),
            org_key_file: cfg.org.api_key_file.clone(),
            org_key_env: cfg.org.api_key_env.clone(),
            organization: cfg.org.organization.clone(),
            project: cfg.org.project.clone(),
        }
    }
}

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A source's state changed (for logs and `events.url`).
#[derive(Clone, Debug, Serialize)]
pub struct CredentialChange {
    pub source: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: String,
}

/// Tokens of the file that the sidecar knows better than the file: the
/// refresh token they hold was spent (rotated in memory only, the file being
/// read-only) or failed for good. Keyed by a digest of that refresh token.
struct Superseded {
    file_tokens: [u8; 32],
    state: ChatgptStatus,
}

/// A digest naming a set of tokens by their refresh token (else access token).
fn token_digest(t: &ChatgptTokens) -> [u8; 32] {
    let key = t.refresh_token.as_ref().unwrap_or(&t.access_token);
    sha2::Sha256::digest(key.expose().as_bytes()).into()
}

/// The current credentials of both sources.
pub struct CredentialStore {
    sources: RwLock<Sources>,
    env: Box<EnvFn>,
    changes: tokio::sync::broadcast::Sender<CredentialChange>,
    chatgpt: RwLock<Slot<ChatgptStatus>>,
    org: RwLock<Slot<OrgStatus>>,
    /// Held while the file is read and applied, and while refreshed tokens are
    /// written and installed, so a poll never installs tokens a refresh just spent.
    superseded: Mutex<Option<Superseded>>,
    refresh_problem: RwLock<Option<String>>,
}

impl CredentialStore {
    /// Loads both sources now. Problems do not fail the start: they show as
    /// `invalid` in `/status` and in `no_credential` errors.
    pub fn new(sources: Sources, env: Box<EnvFn>) -> Self {
        let store = CredentialStore {
            sources: RwLock::new(sources),
            env,
            changes: tokio::sync::broadcast::channel(64).0,
            chatgpt: RwLock::new(Slot {
                current: ChatgptStatus::Disconnected,
                bad_since: None,
            }),
            org: RwLock::new(Slot {
                current: OrgStatus::Missing,
                bad_since: None,
            }),
            superseded: Mutex::new(None),
            refresh_problem: RwLock::new(None),
        };
        store.load_at(None);
        store
    }

    /// Replaces where credentials come from (SIGHUP) and reloads.
    pub fn set_sources(&self, sources: Sources) {
        if let Ok(mut s) = self.sources.write() {
            *s = sources;
        }
        self.reload_at(None);
    }

    pub fn sources(&self) -> Sources {
        self.sources
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Re-reads the files and the environment variable.
    pub fn reload(&self) {
        self.reload_at(Some(Instant::now()));
    }

    /// State changes, as they happen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CredentialChange> {
        self.changes.subscribe()
    }

    fn reload_at(&self, now: Option<Instant>) {
        let before = self.views();
        self.load_at(now);
        self.announce(before);
    }

    /// Logs and broadcasts every source whose state differs from `before`.
    fn announce(&self, before: Vec<CredentialView>) {
        for (b, a) in before.iter().zip(self.views()) {
            if b.state != a.state {
                tracing::info!(
                    source = a.source,
                    from = b.state,
                    to = a.state,
                    detail = a.detail.as_deref().unwrap_or(""),
                    "credential state changed"
                );
                let _ = self.changes.send(CredentialChange {
                    source: a.source,
                    from: b.state,
                    to: a.state,
                    detail: a.detail.clone(),
                    at: crate::time::rfc3339_millis(std::time::SystemTime::now()),
                });
            }
        }
    }

    fn load_at(&self, now: Option<Instant>) {
        let src = self.sources();
        let mut superseded = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
        let mut chatgpt = load_chatgpt(&src);
        match (&chatgpt, superseded.as_ref()) {
            (ChatgptStatus::Connected(c), Some(s)) if token_digest(&c.tokens) == s.file_tokens => {
                chatgpt = s.state.clone();
            }
            // A half-written file keeps what is known through the settle time.
            (ChatgptStatus::Invalid(_), _) => {}
            _ => *superseded = None,
        }
        update(
            &self.chatgpt,
            chatgpt,
            now,
            |s| matches!(s, ChatgptStatus::Connected(_)),
            |s| matches!(s, ChatgptStatus::Invalid(_)),
        );
        drop(superseded);
        let org = load_org(&src, &*self.env);
        update(
            &self.org,
            org,
            now,
            |s| matches!(s, OrgStatus::Ready(_)),
            |s| matches!(s, OrgStatus::Invalid(_)),
        );
    }

    /// The ChatGPT source as it stands.
    pub fn chatgpt(&self) -> ChatgptStatus {
        read(&self.chatgpt).current.clone()
    }

    /// The org key, if usable.
    pub fn org(&self) -> Option<Arc<OrgCred>> {
        match &read(&self.org).current {
            OrgStatus::Ready(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Marks the ChatGPT account as needing a reconnect (its refresh failed
    /// for good). It stays so until the file holds other tokens.
    pub fn mark_needs_reconnect(&self, failed: &ChatgptCred) {
        let before = self.views();
        {
            let mut sup = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
            let still_current = matches!(&read(&self.chatgpt).current,
                ChatgptStatus::Connected(c) if c.tokens.access_token == failed.tokens.access_token);
            if !still_current {
                return;
            }
            *sup = Some(Superseded {
                file_tokens: token_digest(&failed.tokens),
                state: ChatgptStatus::NeedsReconnect,
            });
            if let Ok(mut s) = self.chatgpt.write() {
                s.current = ChatgptStatus::NeedsReconnect;
                s.bad_since = None;
            }
        }
        self.set_refresh_problem(None);
        self.announce(before);
    }

    /// Installs refreshed tokens in place of `old`, which must still be the
    /// current credential (a disconnect during the refresh wins). `persist`
    /// writes them to the file first; when it says the file was left alone
    /// (read-only), the tokens are kept in memory over the unchanged file.
    pub fn install_refreshed(
        &self,
        old: &ChatgptCred,
        tokens: ChatgptTokens,
        persist: impl FnOnce(&ChatgptTokens) -> Result<Persisted, String>,
    ) -> Result<Persisted, String> {
        let mut sup = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
        let still_current = matches!(&read(&self.chatgpt).current,
            ChatgptStatus::Connected(c) if c.tokens.access_token == old.tokens.access_token);
        if !still_current {
            return Err(
                "the ChatGPT account was disconnected or replaced during the refresh".into(),
            );
        }
        let cred = Arc::new(chatgpt_cred(tokens)?);
        let persisted = persist(&cred.tokens)?;
        let state = ChatgptStatus::Connected(cred);
        *sup = match persisted {
            Persisted::Written => None,
            Persisted::InMemory => Some(Superseded {
                // The file still holds the old tokens, or what an earlier
                // in-memory refresh superseded.
                file_tokens: match sup.take() {
                    Some(s) => s.file_tokens,
                    None => token_digest(&old.tokens),
                },
                state: state.clone(),
            }),
        };
        if let Ok(mut s) = self.chatgpt.write() {
            s.current = state;
            s.bad_since = None;
        }
        Ok(persisted)
    }

    /// What `/status` says about failing refreshes (never a secret).
    pub fn set_refresh_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.refresh_problem.write() {
            *p = problem;
        }
    }

    /// For `no_credential`: every place that was looked at, and what was found.
    pub fn describe_sources(&self) -> String {
        let src = self.sources();
        let chatgpt = match (src.chatgpt_enabled, &src.chatgpt_auth_file, self.chatgpt()) {
            (false, _, _) => {
                "ChatGPT plan disabled by the organization (chatgpt.enabled = false)".to_owned()
            }
            (true, None, _) => {
                "chatgpt.auth_file is not set (no ChatGPT plan connected)".to_owned()
            }
            (true, Some(p), ChatgptStatus::Invalid(m)) => {
                format!("chatgpt.auth_file {}: {m}", p.display())
            }
            (true, Some(p), ChatgptStatus::NeedsReconnect) => {
                format!(
                    "chatgpt.auth_file {}: the account must be reconnected",
                    p.display()
                )
            }
            (true, Some(p), _) => format!(
                "chatgpt.auth_file {}: not connected (file missing)",
                p.display()
            ),
        };
        let org = match (&src.org_key_file, &read(&self.org).current) {
            (_, OrgStatus::Invalid(m)) => m.clone(),
            (Some(p), _) => format!("org.api_key_file {}: missing", p.display()),
            (None, _) if src.org_key_env.is_empty() => {
                "org.api_key_file and org.api_key_env are not set".to_owned()
            }
            (None, _) => format!(
                "org.api_key_file is not set and ${} is empty or unset",
                src.org_key_env
            ),
        };
        format!("{chatgpt}; {org}")
    }

    /// `/status` view of both sources.
    pub fn views(&self) -> Vec<CredentialView> {
        let chatgpt = self.chatgpt();
        let mut c = CredentialView {
            source: "chatgpt_plan",
            state: chatgpt.state_name(),
            detail: None,
            plan_type: None,
            account: None,
            token_expires_at: None,
            refresh_problem: None,
        };
        match &chatgpt {
            ChatgptStatus::Connected(cred) => {
                c.plan_type = cred.tokens.plan_type.clone();
                c.account = Some(cred.account_hash.as_str().to_owned());
                c.token_expires_at = cred
                    .tokens
                    .expires_at
                    .and_then(crate::time::rfc3339_from_unix);
                c.refresh_problem = read(&self.refresh_problem).clone();
            }
            ChatgptStatus::Disabled => {
                c.detail = Some("disabled by the organization (chatgpt.enabled = false)".into())
            }
            ChatgptStatus::Invalid(m) => c.detail = Some(m.clone()),
            ChatgptStatus::NeedsReconnect => {
                c.detail = Some("refresh failed for good: reconnect the ChatGPT account".into())
            }
            ChatgptStatus::Disconnected => {}
        }
        let (state, detail) = match &read(&self.org).current {
            OrgStatus::Ready(o) => ("connected", Some(o.source.clone())),
            OrgStatus::Missing => ("disconnected", None),
            OrgStatus::Invalid(m) => ("invalid", Some(m.clone())),
        };
        let o = CredentialView {
            source: "org",
            state,
            detail,
            plan_type: None,
            account: None,
            token_expires_at: None,
            refresh_problem: None,
        };
        vec![c, o]
    }
}

/// Where refreshed tokens went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// Written to `chatgpt.auth_file`.
    Written,
    /// The file is read-only: kept in memory only.
    InMemory,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Applies a fresh load, keeping a good credential through a short bad spell.
fn update<T: Clone>(
    lock: &RwLock<Slot<T>>,
    fresh: T,
    now: Option<Instant>,
    is_good: impl Fn(&T) -> bool,
    is_bad: impl Fn(&T) -> bool,
) {
    let mut slot = lock.write().unwrap_or_else(|e| e.into_inner());
    match now {
        Some(now) if is_bad(&fresh) && is_good(&slot.current) => {
            let since = *slot.bad_since.get_or_insert(now);
            if now.duration_since(since) >= SETTLE {
                slot.current = fresh;
                slot.bad_since = None;
            }
        }
        _ => {
            slot.current = fresh;
            slot.bad_since = None;
        }
    }
}

/// Sets `credential_state{source,state}`: 1 for each source's current state.
pub fn publish_metrics(store: &CredentialStore) {
    const STATES: [&str; 5] = [
        "connected",
        "disconnected",
        "disabled",
        "needs_reconnect",
        "invalid",
    ];
    for v in store.views() {
        for st in STATES {
            let on = if v.state == st { 1.0 } else { 0.0 };
            metrics::gauge!("codex_sidecar_credential_state", "source" => v.source, "state" => st)
                .set(on);
        }
    }
}
