//! `login --device`: the device-code sign-in against the fake auth server.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::*;
use crate::support::auth::*;
use crate::support::*;

/// A config for `login --device` against the fake auth server.
fn login_config(
    dir: &std::path::Path,
    auth: &FakeAuth,
    auth_file: &std::path::Path,
) -> std::path::PathBuf {
    let bundle = ca_bundle(dir, &[&auth.server.ca_file]);
    let path = dir.join("login.toml");
    std::fs::write(
        &path,
        format!(
            "[chatgpt]\nauth_url = {:?}\nauth_file = {:?}\n[upstream]\nca_file = {:?}\n",
            auth.url(),
            auth_file.display().to_string(),
            bundle.display().to_string()
        ),
    )
    .unwrap();
    path
}

async fn device_login(
    auth: &FakeAuth,
    dir: &std::path::Path,
    give_up_after: Duration,
) -> (
    Result<codex_sidecar::credentials::device::LoggedIn, String>,
    String,
    std::path::PathBuf,
) {
    let auth_file = dir.join("codex").join("auth.json");
    let cfg_path = login_config(dir, auth, &auth_file);
    let cfg = codex_sidecar::config::load(Some(&cfg_path), &|_| None, &Default::default()).unwrap();
    let http = codex_sidecar::credentials::auth_http::AuthClient::new(&cfg).unwrap();
    let mut out = Vec::new();
    let r = codex_sidecar::credentials::device::DeviceLogin {
        http: &http,
        client_id: &cfg.chatgpt.client_id,
        auth_file: &auth_file,
        give_up_after,
    }
    .run(&mut out)
    .await;
    (r, String::from_utf8(out).unwrap(), auth_file)
}

#[tokio::test]
async fn device_login_for_a_slow_user_writes_the_auth_file() {
    let auth = FakeAuth::start().await;
    {
        let mut st = auth.state.lock().unwrap();
        st.device_pending = 4;
        st.device_interval = "0".into();
    }
    let dir = tempfile::tempdir().unwrap();
    let (r, out, file) = device_login(&auth, dir.path(), Duration::from_secs(60)).await;
    let done = r.unwrap();
    assert_eq!(done.plan_type.as_deref(), Some("plus"));
    assert!(
        out.contains(&format!("{}/codex/device", auth.url())),
        "{out}"
    );
    assert!(out.contains(USER_CODE), "{out}");
    assert_eq!(
        json(&auth.requests_to("/api/accounts/deviceauth/usercode")[0].body),
        serde_json::json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann"})
    );
    // Four pending polls (403 and 404), then the grant; one code exchange.
    assert_eq!(auth.requests_to("/api/accounts/deviceauth/token").len(), 5);
    let exchange = auth.requests_to("/oauth/token");
    assert_eq!(exchange.len(), 1);
    assert_eq!(
        exchange[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let f = file_tokens(&file);
    let device_access = auth.state.lock().unwrap().device_access.clone();
    assert_eq!(
        f,
        serde_json::json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
            "tokens": {"id_token": id_token(ACCOUNT_ID, "plus"), "access_token": device_access,
                "refresh_token": "rt-device-77aa88bb", "account_id": ACCOUNT_ID},
            "last_refresh": f["last_refresh"].clone()})
    );
    assert!(f["last_refresh"].as_str().unwrap().starts_with("20"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The file is one the sidecar accepts.
    let text =
        codex_sidecar::credentials::files::read_secret_file("chatgpt.auth_file", &file).unwrap();
    assert!(codex_sidecar::credentials::auth_file::parse(text.expose()).is_ok());
    assert!(
        !out.contains(&device_access) && !out.contains(ACCOUNT_ID),
        "{out}"
    );
}

#[tokio::test]
async fn device_login_denied_expired_or_never_finished_says_so_and_writes_nothing() {
    for (end, give_up, want) in [
        (DeviceEnd::Deny, 60, "denied in the browser"),
        (DeviceEnd::Expire, 60, "code expired"),
        (DeviceEnd::Never, 2, "not finished within"),
    ] {
        let auth = FakeAuth::start().await;
        {
            let mut st = auth.state.lock().unwrap();
            st.device_pending = 2;
            st.device_interval = "1".into();
            st.device_end = end.clone();
        }
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let (r, _, file) = device_login(&auth, dir.path(), Duration::from_secs(give_up)).await;
        let e = r.unwrap_err();
        assert!(
            e.contains(want) && e.contains("login --device again"),
            "{end:?}: {e}"
        );
        assert!(!file.exists(), "{end:?}");
        assert!(auth.requests_to("/oauth/token").is_empty());
        // Polls follow the server's interval ("1" second).
        assert!(
            t.elapsed() >= Duration::from_millis(1900),
            "{end:?} {:?}",
            t.elapsed()
        );
        if end == DeviceEnd::Never {
            assert!(t.elapsed() < Duration::from_secs(4), "gives up on time");
        }
    }
}

#[tokio::test]
async fn login_device_command_connects_a_running_sidecar_without_a_restart() {
    let auth = FakeAuth::start().await;
    auth.state.lock().unwrap().device_pending = 1;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let (p, _) = send(&c, post_req(&h, "before")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
    // --auth-file defaults to chatgpt.auth_file of the config.
    let cfg = login_config(dir.path(), &auth, &h.auth_file);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex-sidecar"))
        .args(["login", "--device", "--config"])
        .arg(&cfg)
        .env_remove("CODEX_SIDECAR_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(USER_CODE) && stdout.contains("/codex/device"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&h.auth_file.display().to_string()),
        "{stdout}"
    );
    // The file poll connects the account: a new session goes to the plan.
    let device_access = auth.state.lock().unwrap().device_access.clone();
    let mut billing = String::new();
    for i in 0..40 {
        let (p, _) = send(&c, post_req(&h, &format!("after-{i}"))).await;
        billing = p.headers["x-codex-sidecar-billing"]
            .to_str()
            .unwrap()
            .to_owned();
        if billing == "chatgpt_plan" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(billing, "chatgpt_plan");
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {device_access}")
    );
    // The earlier session stays on the org.
    let (p, _) = send(&c, post_req(&h, "before")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
    // Without --device the command says how to call it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codex-sidecar"))
        .args(["login"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device"));
}
