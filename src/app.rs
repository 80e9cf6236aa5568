//! The shared state every request sees, built once from the config.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sha2::Digest;

use crate::config::{Config, Fsync, OnUsageLimit};
use crate::credentials::auth_http::AuthClient;
use crate::credentials::refresh::Refresher;
use crate::credentials::{files, CredentialStore, Sources};
use crate::ledger::{FsyncPolicy, Ledger, LedgerSettings};
use crate::limits::{Limits, LimitsSettings};
use crate::proxy::session::Sessions;
use crate::upstream::{build_client, UpstreamClient};

pub struct App {
    pub config: Arc<Config>,
    pub creds: CredentialStore,
    /// Renews the ChatGPT access token (one refresh at a time).
    pub refresher: Refresher,
    pub sessions: Sessions,
    pub client: UpstreamClient,
    pub limits: Limits,
    pub ledger: Option<Arc<Ledger>>,
    /// SHA-256 of the local client token, when one is configured.
    pub client_token: Option<[u8; 32]>,
    pub started: Instant,
    pub started_wall: SystemTime,
    /// Set on SIGTERM: `/readyz` turns 503 and new requests are refused.
    pub draining: AtomicBool,
    /// One permit per agent connection being served (`server.max_connections`).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
}

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl App {
    /// Builds the state. Errors are start-up problems the operator must fix
    /// (unreadable client token or CA file); credential problems are not:
    /// they show in `/status` and in `no_credential` answers.
    pub fn build(config: Config, env: Box<EnvFn>) -> Result<App, Vec<String>> {
        let mut problems = Vec::new();
        let client_token = match &config.server.client_token_file {
            None => None,
            Some(path) => match files::read_secret_file("server.client_token_file", path) {
                Ok(t) if !t.is_empty() => Some(sha2::Sha256::digest(t.expose().as_bytes()).into()),
                Ok(_) => {
                    problems.push(format!(
                        "server.client_token_file {}: is empty",
                        path.display()
                    ));
                    None
                }
                Err(files::FileProblem::Missing) => {
                    problems.push(format!(
                        "server.client_token_file {}: does not exist; create it (mode 0600) or unset the key",
                        path.display()
                    ));
                    None
                }
                Err(p) => {
                    problems.push(p.message().to_owned());
                    None
                }
            },
        };
        let client = match build_client(
            config.upstream.ca_file.as_deref(),
            config.upstream.connect_timeout,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let auth = match AuthClient::new(&config) {
            Ok(c) => Some(c),
            Err(e) => {
                if client.is_some() {
                    problems.push(e);
                }
                None
            }
        };
        let (Some(client), Some(auth), true) = (client, auth, problems.is_empty()) else {
            return Err(problems);
        };
        // A ledger that cannot be opened now is retried on every append; with
        // ledger.required the proxy refuses requests until it can be written.
        let (ledger, err) = Ledger::open_lenient(ledger_settings(&config));
        if let Some(e) = err {
            tracing::error!(path = %config.ledger.path.display(), error = %e,
                "the ledger cannot be opened; it is retried on every request");
        }
        let ledger = Some(Arc::new(ledger));
        Ok(App {
            creds: CredentialStore::new(Sources::from_config(&config), env),
            refresher: Refresher::new(auth, config.chatgpt.client_id.clone()),
            sessions: Sessions::default(),
            client,
            limits: Limits::new(limits_settings(&config)),
            ledger,
            client_token,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            draining: AtomicBool::new(false),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
            config: Arc::new(config),
        })
    }
}

impl App {
    /// Agent connections being served now.
    pub fn open_connections(&self) -> usize {
        self.config
            .server
            .max_connections
            .saturating_sub(self.connection_slots.available_permits())
    }
}

pub fn limits_settings(c: &Config) -> LimitsSettings {
    LimitsSettings {
        max_hold: c.limits.max_hold,
        on_usage_limit: match c.limits.on_usage_limit {
            OnUsageLimit::Fail => crate::limits::OnUsageLimit::Fail,
            OnUsageLimit::FallbackToOrg => crate::limits::OnUsageLimit::FallbackToOrg,
        },
        exhausted_probe: c.limits.exhausted_probe,
        requests_per_minute: c.limits.requests_per_minute,
        burst: c.limits.burst,
    }
}

pub fn ledger_settings(c: &Config) -> LedgerSettings {
    LedgerSettings {
        path: c.ledger.path.clone(),
        fsync: match c.ledger.fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Every(d) => FsyncPolicy::Every(d),
        },
        rotate_bytes: c.ledger.rotate_bytes,
        keep: c.ledger.keep,
        required: c.ledger.required,
    }
}
