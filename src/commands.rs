//! The client-side commands: `check`, `status`, `health`, `ledger`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::config::{self, Config, Overrides};
use crate::credentials::{ChatgptStatus, CredentialStore, Sources};

/// Exit codes: 0 ok, 1 problems found, 2 could not run.
pub const OK: u8 = 0;
pub const PROBLEMS: u8 = 1;

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

pub fn load_config(file: Option<&Path>) -> Result<Config, Vec<String>> {
    config::load(file, &env_var, &Overrides::default())
}

/// The URL a local command reaches the admin listener at (an unspecified
/// address such as 0.0.0.0 is reached on loopback).
pub fn admin_url_of(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// `codex-sidecar check`: prints the effective config, then every problem.
pub fn check(file: Option<&Path>) -> (String, Vec<String>) {
    let cfg = match load_config(file) {
        Ok(c) => c,
        Err(problems) => return (String::new(), problems),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# effective configuration ({}; secrets are never printed)\n",
        cfg.source
            .as_ref()
            .map_or("embedded defaults".to_owned(), |p| format!(
                "file {}",
                p.display()
            ))
    ));
    out.push_str(&cfg.effective_toml());
    let mut problems = Vec::new();
    let store = CredentialStore::new(Sources::from_config(&cfg), Box::new(env_var));
    out.push_str("\n# credentials\n");
    match store.chatgpt() {
        ChatgptStatus::Connected(c) => out.push_str(&format!(
            "chatgpt_plan: connected (account {}, plan {}, access token expires {})\n",
            c.account_hash.as_str(),
            c.tokens.plan_type.as_deref().unwrap_or("unknown"),
            c.tokens
                .expires_at
                .and_then(crate::time::rfc3339_from_unix)
                .unwrap_or_else(|| "at an unknown time".into())
        )),
        ChatgptStatus::Invalid(m) => problems.push(m),
        other => out.push_str(&format!("chatgpt_plan: {}\n", other.state_name())),
    }
    let views = store.views();
    if let Some(org) = views.iter().find(|v| v.source == "org") {
        match org.state {
            "invalid" => problems.push(org.detail.clone().unwrap_or_default()),
            state => out.push_str(&format!(
                "org: {state}{}\n",
                org.detail
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
        }
    }
    if let Some(path) = &cfg.org.api_key_file {
        if !path.exists() && problems.is_empty() {
            problems.push(format!(
                "org.api_key_file {}: does not exist; put the organization's API key there (mode 0600), or leave the key empty to use ${}",
                path.display(),
                cfg.org.api_key_env
            ));
        }
    }
    if !matches!(store.chatgpt(), ChatgptStatus::Connected(_))
        && store.org().is_none()
        && problems.is_empty()
    {
        problems.push(format!(
            "no usable credential: requests would get 503 no_credential. Looked at: {}",
            store.describe_sources()
        ));
    }
    if let Some(p) = &cfg.server.client_token_file {
        if let Err(e) = crate::credentials::files::read_secret_file("server.client_token_file", p) {
            problems.push(match e {
                crate::credentials::files::FileProblem::Missing => {
                    format!("server.client_token_file {}: does not exist", p.display())
                }
                other => other.message().to_owned(),
            });
        }
    }
    if let Some(ca) = &cfg.upstream.ca_file {
        if let Err(e) =
            crate::upstream::build_client::<Empty<Bytes>>(Some(ca), cfg.upstream.connect_timeout)
        {
            problems.push(e);
        }
    }
    (out, problems)
}

/// GETs `{admin}{path}` with a short timeout.
pub async fn admin_get(admin: &str, path: &str) -> Result<(u16, Bytes), String> {
    let uri: http::Uri = format!("{}{path}", admin.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("--admin {admin:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--admin {admin:?}: the admin endpoint speaks plain http on loopback"
        ));
    }
    let host = uri.host().ok_or("--admin has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let fut = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot reach the sidecar's admin endpoint at {admin}: {e} (is it running? is --admin right?)"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("admin endpoint {admin}: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::get(uri.clone())
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("admin endpoint {admin}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("the sidecar's admin endpoint at {admin} did not answer within 5s"))?
}

/// `codex-sidecar status`: `/status` for a person.
pub fn render_status(v: &serde_json::Value) -> String {
    crate::status_view::render(v, crate::time::unix_now())
}
