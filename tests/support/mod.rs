//! Test support: the fake upstream, a sidecar started in-process on port 0
//! with its own config and state dir, and a small HTTP client.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod auth;
pub mod codex;
pub mod process;
pub mod upstream;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use codex_sidecar::run::Sidecar;
pub use upstream::{Cert, End, FakeUpstream, Options, Reply, Seen};

pub const ORG_KEY: &str = "sk-org-test-5f1e2d3c4b5a69788796a5b4";
pub const ACCOUNT_ID: &str = "acct-7d2f9a41-aaaa-bbbb-cccc-0123456789ab";

/// A JWT-shaped token with the given claims (unsigned: the sidecar never verifies).
pub fn jwt(claims: serde_json::Value) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        e.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

/// The ChatGPT access token the tests plant (a JWT expiring far in the future).
pub fn access_token(tag: &str) -> String {
    jwt(
        serde_json::json!({"exp": 4_102_444_800i64, "sub": format!("user-{tag}"), "scp": ["openid"]}),
    )
}

pub fn id_token(account: &str, plan: &str) -> String {
    jwt(
        serde_json::json!({"exp": 4_102_444_800i64, "https://api.openai.com/auth":
        {"chatgpt_plan_type": plan, "chatgpt_account_id": account, "chatgpt_user_id": "user-1"}}),
    )
}

/// Writes a Codex auth.json with ChatGPT tokens, mode 0600.
pub fn write_chatgpt_auth(path: &Path, access: &str, account: &str) {
    let text = serde_json::json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
        "tokens": {"id_token": id_token(account, "plus"), "access_token": access,
                   "refresh_token": "rt-test-0a1b2c3d4e5f", "account_id": account},
        "last_refresh": "2026-11-30T10:00:00Z"})
    .to_string();
    write_secret(path, &text);
}

pub fn write_secret(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a test sidecar starts with.
pub struct Setup {
    pub chatgpt: bool,
    pub org: bool,
    /// Extra TOML appended to the generated config (sections must not repeat).
    pub extra: String,
    pub env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            chatgpt: true,
            org: true,
            extra: String::new(),
            env: Vec::new(),
        }
    }
}

pub struct Harness {
    pub sidecar: Sidecar,
    pub dir: tempfile::TempDir,
    pub auth_file: PathBuf,
    pub org_file: PathBuf,
    pub ledger: PathBuf,
    pub base: String,
    pub access: String,
}

/// Starts a sidecar in front of `up`. Sections in `setup.extra` override the
/// generated `[server]`/`[upstream]`/... sections key by key.
pub async fn start(up: &FakeUpstream, setup: Setup) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    let org_file = dir.path().join("org-key");
    let ledger = dir.path().join("state").join("ledger.jsonl");
    let access = access_token("a");
    if setup.chatgpt {
        write_chatgpt_auth(&auth_file, &access, ACCOUNT_ID);
    }
    if setup.org {
        write_secret(&org_file, &format!("{ORG_KEY}\n"));
    }
    let mut sections: Vec<(String, Vec<(String, String)>)> = vec![
        (
            "server".into(),
            vec![
                ("listen".into(), "\"127.0.0.1:0\"".into()),
                ("admin_listen".into(), "\"127.0.0.1:0\"".into()),
            ],
        ),
        (
            "chatgpt".into(),
            vec![
                (
                    "auth_file".into(),
                    format!("{:?}", auth_file.display().to_string()),
                ),
                (
                    "base_url".into(),
                    format!("{:?}", up.base_url("/backend-api/codex")),
                ),
            ],
        ),
        (
            "org".into(),
            vec![
                (
                    "api_key_file".into(),
                    format!("{:?}", org_file.display().to_string()),
                ),
                ("base_url".into(), format!("{:?}", up.base_url("/v1"))),
            ],
        ),
        (
            "upstream".into(),
            vec![(
                "ca_file".into(),
                format!("{:?}", up.ca_file.display().to_string()),
            )],
        ),
        (
            "ledger".into(),
            vec![
                ("path".into(), format!("{:?}", ledger.display().to_string())),
                ("fsync".into(), "\"always\"".into()),
            ],
        ),
        ("log".into(), vec![]),
    ];
    // Merge the extra TOML key by key.
    let extra: toml::Table = setup.extra.parse().unwrap();
    for (sec, table) in extra {
        let toml::Value::Table(table) = table else {
            panic!("extra must be tables")
        };
        let entry = match sections.iter_mut().find(|(s, _)| *s == sec) {
            Some(e) => e,
            None => {
                sections.push((sec.clone(), vec![]));
                sections.last_mut().unwrap()
            }
        };
        for (k, v) in table {
            entry.1.retain(|(kk, _)| *kk != k);
            entry.1.push((k, v.to_string()));
        }
    }
    let mut text = String::new();
    for (sec, kvs) in sections {
        text.push_str(&format!("[{sec}]\n"));
        for (k, v) in kvs {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    let cfg_path = dir.path().join("codex-sidecar.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let env: HashMap<String, String> = setup.env.into_iter().collect();
    let env_for_config = env.clone();
    let cfg = codex_sidecar::config::load(
        Some(&cfg_path),
        &move |k| env_for_config.get(k).cloned(),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("test config invalid: {e:?}\n{text}"));
    let sidecar = codex_sidecar::run::start(cfg, Box::new(move |k: &str| env.get(k).cloned()))
        .await
        .unwrap_or_else(|e| panic!("sidecar did not start: {e:?}"));
    let base = format!("http://{}", sidecar.proxy_addr);
    Harness {
        sidecar,
        dir,
        auth_file,
        org_file,
        ledger,
        base,
        access,
    }
}

impl Harness {
    pub fn admin(&self) -> String {
        format!("http://{}", self.sidecar.admin_addr)
    }

    /// The sidecar's `/status` JSON.
    pub async fn status(&self) -> serde_json::Value {
        let req = Request::get(format!("{}/status", self.admin()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        json(&send(&client(), req).await.1)
    }

    /// Every ledger record so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.ledger).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the ledger has `n` records (the end hook may run just after the client saw the end).
    pub async fn wait_records(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let r = self.records();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = self.records();
        assert_eq!(r.len(), n, "ledger records: {r:#?}");
        r
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn post(url: &str, session: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("session-id", session)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub const BODY: &str = r#"{"model":"gpt-5.4","stream":true,"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"store":false}"#;

/// Sends and reads the whole answer.
pub async fn send(c: &TestClient, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let resp: Response<_> = c.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

/// Sends and records each body chunk with its arrival time.
pub async fn send_timed(
    c: &TestClient,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Vec<(Instant, Bytes)>) {
    let resp = c.request(req).await.unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    chunks.push((Instant::now(), d));
                }
            }
            Err(_) => break,
        }
    }
    (parts, chunks)
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}
