//! Starting and stopping a whole sidecar: listeners, state, background tasks.
//! The binary and the integration tests both start it through [`start`].

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;
use crate::server::Listeners;

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// How often credential files are re-read.
pub const CREDENTIAL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// A running sidecar.
pub struct Sidecar {
    pub proxy_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    force: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// Binds, builds the state and serves in the background.
pub async fn start(config: Config, env: Box<EnvFn>) -> Result<Sidecar, Vec<String>> {
    crate::telemetry::metrics_handle();
    let listeners = Listeners::bind(config.server.listen, config.server.admin_listen)
        .await
        .map_err(|e| vec![e])?;
    let app = Arc::new(App::build(config, env)?);
    let proxy_addr = listeners
        .proxy_addr()
        .ok_or_else(|| vec!["cannot read the bound address".to_owned()])?;
    let admin_addr = listeners
        .admin_addr()
        .ok_or_else(|| vec!["cannot read the bound address".to_owned()])?;
    let mut background = Vec::new();
    background.push(tokio::spawn(crate::telemetry::metrics_upkeep()));
    background.push(tokio::spawn(watch_credentials(app.clone())));
    background.push(tokio::spawn(refresh_tokens(app.clone())));
    let limits = app.limits.clone();
    background.push(tokio::spawn(async move { limits.run_expiry().await }));
    if let Some(ledger) = &app.ledger {
        if let Some(h) = ledger.spawn_syncer() {
            background.push(h);
        }
    }
    if let Some(url) = app.config.events.url.clone() {
        background.push(tokio::spawn(crate::events::post_transitions(
            app.clone(),
            url,
        )));
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (force_tx, force_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::run(
        app.clone(),
        listeners,
        async move {
            let _ = stop_rx.await;
        },
        async move {
            let _ = force_rx.await;
        },
    ));
    tracing::info!(listen = %proxy_addr, admin = %admin_addr, version = env!("CARGO_PKG_VERSION"), "codex-sidecar ready");
    warn_about_credentials(&app);
    Ok(Sidecar {
        proxy_addr,
        admin_addr,
        app,
        stop: Some(stop_tx),
        force: Some(force_tx),
        task,
        background,
    })
}

impl Sidecar {
    /// Starts the graceful drain.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// The trigger that ends a drain at once (for a second signal).
    pub fn take_force(&mut self) -> Option<oneshot::Sender<()>> {
        self.force.take()
    }

    /// Ends the drain at once.
    pub fn force(&mut self) {
        self.shutdown();
        if let Some(f) = self.force.take() {
            let _ = f.send(());
        }
    }

    /// Waits until the server has stopped, then stops the background tasks.
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
        for t in self.background.drain(..) {
            t.abort();
        }
    }

    /// Applies a reloaded config: credential sources and policy, limits, log
    /// level. Returns what could not be applied without a restart.
    pub fn reload(&self, new: &Config, log: Option<&crate::telemetry::LogReload>) -> Vec<String> {
        let old = &self.app.config;
        let before = Fingerprints::of(&self.app);
        self.app
            .creds
            .set_sources(crate::credentials::Sources::from_config(new));
        before.reset_changed_limits(&self.app);
        if let Some(log) = log {
            if let Err(e) = log.set_level(&new.log.level) {
                tracing::warn!(error = %e, "log.level not applied");
            }
        }
        let mut not_applied = Vec::new();
        let checks: [(&str, bool); 15] = [
            (
                "server.shutdown_grace",
                old.server.shutdown_grace != new.server.shutdown_grace,
            ),
            (
                "server.max_connections",
                old.server.max_connections != new.server.max_connections,
            ),
            (
                "limits",
                crate::app::limits_settings(new) != *self.app.limits.settings(),
            ),
            ("server.listen", old.server.listen != new.server.listen),
            (
                "server.admin_listen",
                old.server.admin_listen != new.server.admin_listen,
            ),
            (
                "server.client_token_file",
                old.server.client_token_file != new.server.client_token_file,
            ),
            (
                "server.max_request_body",
                old.server.max_request_body != new.server.max_request_body,
            ),
            (
                "chatgpt.base_url",
                old.chatgpt.base_url != new.chatgpt.base_url,
            ),
            (
                "chatgpt.auth_url",
                old.chatgpt.auth_url != new.chatgpt.auth_url,
            ),
            (
                "chatgpt.client_id",
                old.chatgpt.client_id != new.chatgpt.client_id,
            ),
            ("org.base_url", old.org.base_url != new.org.base_url),
            (
                "upstream",
                old.upstream.ca_file != new.upstream.ca_file
                    || old.upstream.idle_timeout != new.upstream.idle_timeout
                    || old.upstream.first_byte_timeout != new.upstream.first_byte_timeout
                    || old.upstream.connect_timeout != new.upstream.connect_timeout,
            ),
            (
                "ledger",
                old.ledger.path != new.ledger.path
                    || old.ledger.fsync != new.ledger.fsync
                    || old.ledger.rotate_bytes != new.ledger.rotate_bytes
                    || old.ledger.keep != new.ledger.keep
                    || old.ledger.required != new.ledger.required,
            ),
            ("events.url", old.events.url != new.events.url),
            ("log.format", old.log.format != new.log.format),
        ];
        for (key, changed) in checks {
            if changed {
                not_applied.push(key.to_owned());
            }
        }
        not_applied
    }
}

async fn watch_credentials(app: Arc<App>) {
    let mut tick = tokio::time::interval(CREDENTIAL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = Fingerprints::of(&app);
        app.creds.reload();
        before.reset_changed_limits(&app);
    }
}

/// Which credential each source holds (digests, never the secrets), so a
/// credential changed from outside (a reconnect, a new key) is told apart from
/// the sidecar's own token refresh, which happens between polls.
struct Fingerprints {
    chatgpt: Option<(String, [u8; 32])>,
    org: Option<[u8; 32]>,
}

impl Fingerprints {
    fn of(app: &App) -> Fingerprints {
        use sha2::Digest;
        let digest = |b: &[u8]| -> [u8; 32] { sha2::Sha256::digest(b).into() };
        Fingerprints {
            chatgpt: match app.creds.chatgpt() {
                crate::credentials::ChatgptStatus::Connected(c) => Some((
                    c.account_hash.as_str().to_owned(),
                    digest(c.authorization.as_bytes()),
                )),
                _ => None,
            },
            org: app.creds.org().map(|o| digest(o.authorization.as_bytes())),
        }
    }

    /// SPEC: an exhausted account clears on a credential change. The account
    /// that now holds a new credential starts over at `ok`.
    fn reset_changed_limits(&self, app: &App) {
        let now = Fingerprints::of(app);
        if let Some((account, token)) = &now.chatgpt {
            if self.chatgpt.as_ref().is_none_or(|(_, t)| t != token) {
                app.limits.reset_account(&crate::limits::LimitKey::new(
                    crate::billing::Billing::ChatgptPlan,
                    account.as_str(),
                ));
            }
        }
        if now.org.is_some() && now.org != self.org {
            app.limits.reset_account(&crate::limits::LimitKey::org());
        }
    }
}

/// Renews the ChatGPT access token shortly before it expires, and retries
/// failed refreshes with backoff (its own task, so a slow auth server never
/// delays the file poll).
async fn refresh_tokens(app: Arc<App>) {
    let mut tick = tokio::time::interval(CREDENTIAL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        app.refresher.tick(&app.creds).await;
    }
}

/// Says at start what requests would otherwise learn only one by one: an
/// unusable credential file (with its fix), or no credential at all.
fn warn_about_credentials(app: &App) {
    let views = app.creds.views();
    for v in views.iter().filter(|v| v.state == "invalid") {
        tracing::warn!(
            source = v.source,
            problem = v.detail.as_deref().unwrap_or("unusable"),
            "credential unusable"
        );
    }
    if views.iter().all(|v| v.state != "connected") {
        tracing::warn!(
            looked_at = %app.creds.describe_sources(),
            "no usable credential yet: requests get 503 no_credential until one is connected"
        );
    }
}
