//! An in-process fake ChatGPT auth server (PROTOCOL.md §3) on the fake
//! upstream's TLS server: `POST /oauth/token` refreshes with rotating refresh
//! tokens (a spent one answers `refresh_token_reused`, as the real one does)
//! and scripted failures, the device-code endpoints, and the code exchange.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::upstream::{FakeUpstream, Reply, Seen};

/// How the device-code sign-in ends on the server's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEnd {
    Approve,
    Deny,
    Expire,
    /// Stays pending forever (the person never finishes).
    Never,
}

pub struct AuthState {
    /// The one refresh token the server accepts now (it rotates on every refresh).
    pub valid_refresh: String,
    pub generation: u32,
    pub account: String,
    pub plan: String,
    /// Access tokens last this long (seconds).
    pub access_lifetime: i64,
    /// Every access token issued, in order.
    pub issued: Vec<String>,
    /// Answer refreshes with this (status, body) instead of tokens.
    pub refresh_failure: Option<(u16, String)>,
    /// Answer this many refreshes with 503 first.
    pub transient_failures: usize,
    /// Delay before answering a refresh (to let concurrent callers pile up).
    pub refresh_delay: Duration,
    /// Leave `id_token` out of refresh answers.
    pub omit_id_token: bool,
    pub device_interval: String,
    /// Polls answered as pending before the end.
    pub device_pending: usize,
    pub device_end: DeviceEnd,
    /// The access token the device login's code exchange issues.
    pub device_access: String,
    /// The server's own port (for the expected redirect_uri).
    pub port: u16,
}

pub const INITIAL_REFRESH: &str = "rt-test-0a1b2c3d4e5f";
pub const DEVICE_AUTH_ID: &str = "deviceauth-5e6f7a8b";
pub const USER_CODE: &str = "WXYZ-2345";
pub const AUTH_CODE: &str = "authcode-9a8b7c6d";
pub const CODE_VERIFIER: &str = "verifier-1f2e3d4c";

pub struct FakeAuth {
    pub server: FakeUpstream,
    pub state: Arc<Mutex<AuthState>>,
}

impl FakeAuth {
    pub async fn start() -> FakeAuth {
        let state = Arc::new(Mutex::new(AuthState {
            valid_refresh: INITIAL_REFRESH.into(),
            generation: 0,
            account: super::ACCOUNT_ID.into(),
            plan: "plus".into(),
            access_lifetime: 3600,
            issued: Vec::new(),
            refresh_failure: None,
            transient_failures: 0,
            refresh_delay: Duration::ZERO,
            omit_id_token: false,
            device_interval: "0".into(),
            device_pending: 0,
            device_end: DeviceEnd::Approve,
            device_access: super::jwt(
                serde_json::json!({"exp": 4_102_444_800i64, "sub": "user-device"}),
            ),
            port: 0,
        }));
        let s2 = state.clone();
        let server = FakeUpstream::start(move |seen, _| answer(&s2, seen)).await;
        state.lock().unwrap().port = server.addr.port();
        FakeAuth { server, state }
    }

    /// `https://localhost:<port>` (for `chatgpt.auth_url`).
    pub fn url(&self) -> String {
        self.server.base_url("")
    }

    /// Every refresh request (JSON posts to /oauth/token).
    pub fn refresh_posts(&self) -> Vec<Seen> {
        self.server
            .requests()
            .into_iter()
            .filter(|s| {
                s.path_and_query == "/oauth/token"
                    && s.header("content-type") == Some("application/json")
            })
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.server
            .requests()
            .into_iter()
            .filter(|s| s.path_and_query == path)
            .collect()
    }

    pub fn last_issued(&self) -> Option<String> {
        self.state.lock().unwrap().issued.last().cloned()
    }

    /// The config lines that point a sidecar (or `login`) at this server and
    /// trust both test CAs (`[chatgpt]` auth_url, `[upstream]` ca_file).
    pub fn config(&self, dir: &Path, up: &FakeUpstream) -> (String, String) {
        let bundle = ca_bundle(dir, &[&up.ca_file, &self.server.ca_file]);
        (
            format!("auth_url = {:?}\n", self.url()),
            format!("ca_file = {:?}\n", bundle.display().to_string()),
        )
    }

    /// `Setup.extra` for the in-process harness.
    pub fn extra(&self, dir: &Path, up: &FakeUpstream) -> String {
        let (chatgpt, upstream) = self.config(dir, up);
        format!("[chatgpt]\n{chatgpt}[upstream]\n{upstream}")
    }
}

/// One PEM file holding several CAs (the sidecar takes one `upstream.ca_file`).
pub fn ca_bundle(dir: &Path, files: &[&Path]) -> PathBuf {
    let mut pem = String::new();
    for f in files {
        pem.push_str(&std::fs::read_to_string(f).unwrap());
        pem.push('\n');
    }
    let p = dir.join("ca-bundle.pem");
    std::fs::write(&p, pem).unwrap();
    p
}

fn json_reply(status: u16, v: serde_json::Value) -> Reply {
    Reply::json(status, v.to_string())
}

fn answer(state: &Arc<Mutex<AuthState>>, seen: &Seen) -> Reply {
    let mut st = state.lock().unwrap();
    match seen.path_and_query.as_str() {
        "/oauth/token" if seen.header("content-type") == Some("application/json") => {
            let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            let delay = st.refresh_delay;
            let mut reply = refresh(&mut st, &body);
            reply.head_delay = delay;
            reply
        }
        "/oauth/token" => {
            // The device login's code exchange (form-encoded).
            let form = String::from_utf8_lossy(&seen.body).into_owned();
            let want = format!(
                "grant_type=authorization_code&code={AUTH_CODE}&redirect_uri={}&client_id=app_EMoamEEZ73f0CkXaXp7hrann&code_verifier={CODE_VERIFIER}",
                form_escape(&format!("https://localhost:{}/deviceauth/callback", st.port))
            );
            if form != want {
                return json_reply(
                    400,
                    serde_json::json!({"error": "invalid_request", "got": form}),
                );
            }
            json_reply(
                200,
                serde_json::json!({
                    "id_token": super::id_token(&st.account, &st.plan),
                    "access_token": st.device_access,
                    "refresh_token": "rt-device-77aa88bb",
                }),
            )
        }
        "/api/accounts/deviceauth/usercode" => json_reply(
            200,
            serde_json::json!({"device_auth_id": DEVICE_AUTH_ID, "user_code": USER_CODE, "interval": st.device_interval}),
        ),
        "/api/accounts/deviceauth/token" => {
            let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            if body != serde_json::json!({"device_auth_id": DEVICE_AUTH_ID, "user_code": USER_CODE})
            {
                return json_reply(400, serde_json::json!({"error": "bad_poll"}));
            }
            if st.device_pending > 0 {
                st.device_pending -= 1;
                // Both spellings of "still pending".
                let status = if st.device_pending % 2 == 0 { 403 } else { 404 };
                return json_reply(
                    status,
                    serde_json::json!({"error": {"code": "deviceauth_authorization_pending"}}),
                );
            }
            match st.device_end {
                DeviceEnd::Approve => json_reply(
                    200,
                    serde_json::json!({"authorization_code": AUTH_CODE, "code_verifier": CODE_VERIFIER, "code_challenge": "challenge-x"}),
                ),
                DeviceEnd::Deny => {
                    json_reply(400, serde_json::json!({"error": {"code": "access_denied"}}))
                }
                DeviceEnd::Expire => json_reply(
                    410,
                    serde_json::json!({"error": {"code": "deviceauth_expired"}}),
                ),
                DeviceEnd::Never => json_reply(
                    403,
                    serde_json::json!({"error": {"code": "deviceauth_authorization_pending"}}),
                ),
            }
        }
        _ => json_reply(404, serde_json::json!({"error": "not_found"})),
    }
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn refresh(st: &mut AuthState, body: &serde_json::Value) -> Reply {
    if body["client_id"] != "app_EMoamEEZ73f0CkXaXp7hrann" || body["grant_type"] != "refresh_token"
    {
        return json_reply(400, serde_json::json!({"error": "invalid_request"}));
    }
    if st.transient_failures > 0 {
        st.transient_failures -= 1;
        return json_reply(503, serde_json::json!({"error": "temporarily_unavailable"}));
    }
    if let Some((status, body)) = &st.refresh_failure {
        return Reply::json(*status, body.clone());
    }
    if body["refresh_token"] != st.valid_refresh.as_str() {
        return json_reply(
            401,
            serde_json::json!({"error": {"code": "refresh_token_reused", "message": "This refresh token was already used"}}),
        );
    }
    st.generation += 1;
    let exp = codex_sidecar::time::unix_now() + st.access_lifetime;
    let access = super::jwt(
        serde_json::json!({"exp": exp, "sub": format!("user-r{}", st.generation), "gen": st.generation}),
    );
    st.valid_refresh = format!("rt-rotated-{}-c0ffee", st.generation);
    st.issued.push(access.clone());
    let mut v = serde_json::json!({
        "access_token": access,
        "refresh_token": st.valid_refresh,
    });
    if !st.omit_id_token {
        v["id_token"] = serde_json::json!(super::id_token(&st.account, &st.plan));
    }
    json_reply(200, v)
}

/// Writes a Codex auth.json with the given access and refresh tokens, mode 0600.
pub fn write_auth(path: &Path, access: &str, refresh: &str) {
    let text = serde_json::json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
        "tokens": {"id_token": super::id_token(super::ACCOUNT_ID, "plus"), "access_token": access,
                   "refresh_token": refresh, "account_id": super::ACCOUNT_ID},
        "last_refresh": "2026-11-30T10:00:00Z"})
    .to_string();
    super::write_secret(path, &text);
}

/// An access token expiring `secs` from now.
pub fn expiring_token(secs: i64, tag: &str) -> String {
    super::jwt(serde_json::json!({"exp": codex_sidecar::time::unix_now() + secs, "sub": tag}))
}

/// Polls `cond` every 20 ms until it holds, at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
