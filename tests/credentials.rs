//! The credential lifecycle against the fake auth server (tests/support/auth.rs):
//! proactive refresh, refresh after a 401, single flight under 50 concurrent
//! 401s, each permanent failure, transient failures with backoff, read-only
//! files, the device-code login, a file swapped under load, permission refusal,
//! and CASES.md 12 (no secret in any output).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::auth::*;
use support::*;

fn ok_stream() -> Reply {
    Reply::sse(upstream::responses_stream(
        &["Hi"],
        "gpt-5.4",
        (10, 4, 2, 1),
    ))
}

const EXPIRED: &str = r#"{"error":{"message":"Your authentication token has expired. Please try signing in again.","type":"invalid_request_error","code":"token_expired","param":null}}"#;

/// An upstream that accepts only the org key and the newest token the auth
/// server issued (or `also`), and answers 401 to any other ChatGPT token.
fn strict_upstream(
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

fn responses(h: &Harness) -> String {
    format!("{}/v1/responses", h.base)
}

async fn status_of(h: &Harness) -> serde_json::Value {
    let (_, b) = send(
        &client(),
        Request::get(format!("{}/status", h.admin()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    json(&b)
}

fn file_tokens(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn refresh_body(refresh: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann", "grant_type": "refresh_token",
        "refresh_token": refresh, "refresh_reason": reason})
}

#[tokio::test]
async fn proactive_refresh_before_expiry_rotates_and_persists_the_tokens() {
    let auth = FakeAuth::start().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    assert!(
        auth.refresh_posts().is_empty(),
        "a far-off expiry needs no refresh"
    );
    // The token now in the file expires in 60 s: inside the refresh margin.
    let soon = expiring_token(60, "soon");
    write_auth(&h.auth_file, &soon, INITIAL_REFRESH);
    let before = std::fs::read_to_string(&h.auth_file).unwrap();
    h.sidecar.app.creds.reload();
    wait_until("the proactive refresh", Duration::from_secs(5), || {
        auth.refresh_posts().len() == 1
    })
    .await;
    let post = &auth.refresh_posts()[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        json(&post.body),
        refresh_body(INITIAL_REFRESH, "proactive_expiry")
    );
    let issued = auth.last_issued().unwrap();
    wait_until(
        "the rotated tokens in the file",
        Duration::from_secs(2),
        || file_tokens(&h.auth_file)["tokens"]["access_token"] == issued.as_str(),
    )
    .await;
    // Persisted in Codex's format, mode 0600, before use; other fields kept.
    let f = file_tokens(&h.auth_file);
    assert_eq!(f["auth_mode"], "chatgpt");
    assert_eq!(f["OPENAI_API_KEY"], serde_json::Value::Null);
    assert_eq!(f["tokens"]["refresh_token"], "rt-rotated-1-c0ffee");
    assert_eq!(f["tokens"]["account_id"], ACCOUNT_ID);
    assert_eq!(f["tokens"]["id_token"], id_token(ACCOUNT_ID, "plus"));
    assert_ne!(f["last_refresh"], "2026-11-30T10:00:00Z");
    let mode = std::fs::metadata(&h.auth_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_ne!(before, std::fs::read_to_string(&h.auth_file).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(h.auth_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Requests carry the new token; /status shows its expiry.
    let (p, _) = send(&client(), post_req(&h, "s1")).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {issued}")
    );
    let exp = codex_sidecar::credentials::auth_file::jwt_payload(&issued).unwrap()["exp"]
        .as_i64()
        .unwrap();
    let st = status_of(&h).await;
    assert_eq!(st["credentials"][0]["state"], "connected");
    assert_eq!(
        st["credentials"][0]["token_expires_at"],
        codex_sidecar::time::rfc3339_from_unix(exp).unwrap()
    );
    // The new token lasts an hour: no further refresh on the next polls.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(auth.refresh_posts().len(), 1);
}

fn post_req(h: &Harness, session: &str) -> Request<Full<Bytes>> {
    post(&responses(h), session, BODY)
}

#[tokio::test]
async fn an_upstream_401_reloads_then_refreshes_and_the_retry_succeeds() {
    let auth = FakeAuth::start().await;
    let also = Arc::new(Mutex::new(Vec::new()));
    let up = FakeUpstream::start(strict_upstream(auth.state.clone(), also.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    // The planted token is refused upstream: the 401 reaches the agent as it is ...
    let (p, b) = send(&c, post_req(&h, "s1")).await;
    assert_eq!(p.status, 401);
    assert_eq!(b, Bytes::from_static(EXPIRED.as_bytes()));
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    // ... after exactly one refresh, done before the answer was released.
    let posts = auth.refresh_posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        json(&posts[0].body),
        refresh_body(INITIAL_REFRESH, "unauthorized_recovery")
    );
    // The agent's own retry goes out with the new token and succeeds.
    let (p, _) = send(&c, post_req(&h, "s1")).await;
    assert_eq!(p.status, 200);
    let issued = auth.last_issued().unwrap();
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {issued}")
    );
    assert_eq!(
        file_tokens(&h.auth_file)["tokens"]["access_token"],
        issued.as_str()
    );
    let recs = h.wait_records(2).await;
    assert_eq!(
        recs.iter()
            .map(|r| (
                r["billing"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![
            ("chatgpt_plan", 401, "failed"),
            ("chatgpt_plan", 200, "completed")
        ]
    );

    // Another tool renews the file while a request is in flight: the 401 of the
    // old token reloads the file and uses it, without a refresh of its own.
    let other = access_token("other-tool");
    also.lock().unwrap().push(other.clone());
    auth.state
        .lock()
        .unwrap()
        .issued
        .push("revoked-upstream".into());
    let path = h.auth_file.clone();
    let valid = auth.state.lock().unwrap().valid_refresh.clone();
    write_auth(&path, &other, &valid);
    let (p, _) = send(&c, post_req(&h, "s1")).await;
    // Either the poll saw the new file first (200) or the 401 reloaded it.
    assert!(p.status == 200 || p.status == 401, "{}", p.status);
    let (p, _) = send(&c, post_req(&h, "s1")).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {other}")
    );
    assert_eq!(
        auth.refresh_posts().len(),
        1,
        "the reloaded file made a refresh unnecessary"
    );
}

#[tokio::test]
async fn single_flight_fifty_concurrent_401s_make_one_refresh() {
    let auth = FakeAuth::start().await;
    auth.state.lock().unwrap().refresh_delay = Duration::from_millis(300);
    let up = FakeUpstream::start(strict_upstream(
        auth.state.clone(),
        Arc::new(Mutex::new(Vec::new())),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let base = responses(&h);
    let round = |c: TestClient, base: String| async move {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (c, base) = (c.clone(), base.clone());
                tokio::spawn(
                    async move { send(&c, post(&base, &format!("s{i}"), BODY)).await.0.status },
                )
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap().as_u16());
        }
        statuses
    };
    let first = round(c.clone(), base.clone()).await;
    assert_eq!(first, vec![401; 50]);
    assert_eq!(
        auth.refresh_posts().len(),
        1,
        "exactly one refresh for 50 concurrent 401s"
    );
    let again = round(c.clone(), base.clone()).await;
    assert_eq!(again, vec![200; 50]);
    assert_eq!(auth.refresh_posts().len(), 1);
    let issued = auth.last_issued().unwrap();
    let seen = up.requests();
    assert_eq!(seen.len(), 100);
    assert!(seen[50..]
        .iter()
        .all(|s| s.header("authorization") == Some(&format!("Bearer {issued}"))));
}

#[tokio::test]
async fn each_permanent_refresh_failure_needs_a_reconnect() {
    let cases = [
        (
            400,
            r#"{"error":"refresh_token_expired","error_description":"expired"}"#,
        ),
        (
            401,
            r#"{"error":{"code":"refresh_token_reused","message":"already used"}}"#,
        ),
        (
            401,
            r#"{"error":{"type":"refresh_token_invalidated","message":"revoked"}}"#,
        ),
        (
            400,
            r#"{"error":"invalid_grant","code":"refresh_token_expired"}"#,
        ),
    ];
    for (status, body) in cases {
        let auth = FakeAuth::start().await;
        auth.state.lock().unwrap().refresh_failure = Some((status, body.to_owned()));
        let up = FakeUpstream::start(strict_upstream(
            auth.state.clone(),
            Arc::new(Mutex::new(Vec::new())),
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let h = start(
            &up,
            Setup {
                extra: auth.extra(dir.path(), &up),
                ..Setup::default()
            },
        )
        .await;
        let mut changes = h.sidecar.app.creds.subscribe();
        let file_before = std::fs::read(&h.auth_file).unwrap();
        let c = client();
        let (p, _) = send(&c, post_req(&h, "pinned")).await;
        assert_eq!(p.status, 401, "{body}");
        assert_eq!(auth.refresh_posts().len(), 1);
        let st = status_of(&h).await;
        assert_eq!(
            st["credentials"][0]["state"], "needs_reconnect",
            "{body}: {st}"
        );
        assert!(st["credentials"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("reconnect"));
        let change = changes.try_recv().unwrap();
        assert_eq!((change.from, change.to), ("connected", "needs_reconnect"));
        // The pinned session is told to reconnect, without touching the upstream.
        let n = up.count();
        let (p, b) = send(&c, post_req(&h, "pinned")).await;
        assert_eq!(p.status, 401);
        let e = json(&b);
        assert_eq!(e["error"]["type"], "chatgpt_reconnect_required", "{e}");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect the ChatGPT account"));
        assert_eq!(up.count(), n);
        // New sessions run on the org.
        let (p, _) = send(&c, post_req(&h, "new")).await;
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
        assert_eq!(
            up.requests()
                .last()
                .unwrap()
                .header("authorization")
                .unwrap(),
            format!("Bearer {ORG_KEY}")
        );
        // The unchanged file is not taken back on the next polls, and no
        // further refresh is tried with the dead token.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        h.sidecar.app.creds.reload();
        assert_eq!(
            status_of(&h).await["credentials"][0]["state"],
            "needs_reconnect"
        );
        assert_eq!(auth.refresh_posts().len(), 1);
        assert_eq!(
            std::fs::read(&h.auth_file).unwrap(),
            file_before,
            "the file is left as it was"
        );
        // Reconnecting (new tokens in the file) is picked up without a restart.
        auth.state
            .lock()
            .unwrap()
            .issued
            .push(access_token("reconnected"));
        write_auth(&h.auth_file, &access_token("reconnected"), "rt-new-login");
        h.sidecar.app.creds.reload();
        assert_eq!(status_of(&h).await["credentials"][0]["state"], "connected");
        let (p, _) = send(&c, post_req(&h, "after-reconnect")).await;
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    }
}

#[tokio::test]
async fn transient_refresh_failures_are_retried_with_backoff() {
    let auth = FakeAuth::start().await;
    auth.state.lock().unwrap().transient_failures = 2;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    let soon = expiring_token(120, "soon");
    write_auth(&h.auth_file, &soon, INITIAL_REFRESH);
    h.sidecar.app.creds.reload();
    wait_until("the first failed attempt", Duration::from_secs(5), || {
        auth.refresh_posts().len() == 1
    })
    .await;
    // While it retries, the old token (still valid) keeps serving and /status says why.
    let mut problem = None;
    for _ in 0..50 {
        let st = status_of(&h).await;
        if let Some(p) = st["credentials"][0]["refresh_problem"].as_str() {
            problem = Some(p.to_owned());
            assert_eq!(st["credentials"][0]["state"], "connected");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let problem = problem.expect("/status shows the failing refresh");
    assert!(
        problem.contains("HTTP 503") && problem.contains("retrying"),
        "{problem}"
    );
    let (p, _) = send(&client(), post_req(&h, "s")).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {soon}")
    );
    wait_until("the third attempt", Duration::from_secs(8), || {
        auth.refresh_posts().len() == 3
    })
    .await;
    let at: Vec<Instant> = auth.refresh_posts().iter().map(|s| s.at).collect();
    assert!(
        at[1] - at[0] >= Duration::from_millis(900),
        "{:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(1900),
        "{:?}",
        at[2] - at[1]
    );
    for post in auth.refresh_posts() {
        assert_eq!(
            json(&post.body),
            refresh_body(INITIAL_REFRESH, "proactive_expiry")
        );
    }
    let issued = auth.last_issued().unwrap();
    wait_until("the refreshed file", Duration::from_secs(2), || {
        file_tokens(&h.auth_file)["tokens"]["access_token"] == issued.as_str()
    })
    .await;
    let st = status_of(&h).await;
    assert!(
        st["credentials"][0].get("refresh_problem").is_none(),
        "{st}"
    );
}

#[tokio::test]
async fn a_read_only_file_keeps_rotated_tokens_in_memory() {
    let auth = FakeAuth::start().await;
    let up = FakeUpstream::start(strict_upstream(
        auth.state.clone(),
        Arc::new(Mutex::new(Vec::new())),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    write_auth(&h.auth_file, &expiring_token(60, "soon"), INITIAL_REFRESH);
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    let file_before = std::fs::read(&h.auth_file).unwrap();
    h.sidecar.app.creds.reload();
    wait_until("the proactive refresh", Duration::from_secs(5), || {
        auth.refresh_posts().len() == 1
    })
    .await;
    let c = client();
    let first = auth.last_issued().unwrap();
    wait_until("the refreshed tokens in use", Duration::from_secs(2), || {
        matches!(h.sidecar.app.creds.chatgpt(),
            codex_sidecar::credentials::ChatgptStatus::Connected(c) if c.tokens.access_token.expose() == first)
    })
    .await;
    // Polls of the unchanged file do not bring back the spent tokens.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.sidecar.app.creds.reload();
    let (p, _) = send(&c, post_req(&h, "s")).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {first}")
    );
    assert_eq!(std::fs::read(&h.auth_file).unwrap(), file_before);
    // The next refresh spends the rotated refresh token held in memory, not
    // the dead one in the file (which the server would answer refresh_token_reused).
    auth.state
        .lock()
        .unwrap()
        .issued
        .push("revoked-upstream".into());
    let (p, _) = send(&c, post_req(&h, "s")).await;
    assert_eq!(p.status, 401);
    let posts = auth.refresh_posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(
        json(&posts[1].body),
        refresh_body("rt-rotated-1-c0ffee", "unauthorized_recovery")
    );
    let (p, _) = send(&c, post_req(&h, "s")).await;
    assert_eq!(p.status, 200);
    assert_eq!(status_of(&h).await["credentials"][0]["state"], "connected");
    assert_eq!(std::fs::read(&h.auth_file).unwrap(), file_before);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_file_swapped_under_load_never_fails_a_request() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let tokens: Vec<String> = (0..6).map(|i| access_token(&format!("swap-{i}"))).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer: atomic replacements and in-place rewrites (truncate, half,
    // pause, rest), so polls catch empty and partial files.
    let writer = {
        let (path, tokens, stop) = (h.auth_file.clone(), tokens.clone(), stop.clone());
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = &tokens[k % tokens.len()];
                if k % 2 == 0 {
                    write_auth(&path, t, INITIAL_REFRESH);
                } else {
                    let text = serde_json::json!({"auth_mode": "chatgpt", "tokens": {"access_token": t,
                        "refresh_token": INITIAL_REFRESH, "account_id": ACCOUNT_ID, "id_token": id_token(ACCOUNT_ID, "plus")}})
                    .to_string();
                    let (a, b) = text.split_at(text.len() / 2);
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&path)
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    f.write_all(a.as_bytes()).unwrap();
                    f.flush().unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    f.write_all(b.as_bytes()).unwrap();
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            k
        })
    };
    // Reloads far more often than the 1 s poll, to hit every half-written state.
    let reloader = {
        let (app, stop) = (h.sidecar.app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.creds.reload();
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    let c = client();
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (c, base, stop) = (c.clone(), responses(&h), stop.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut s = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let session = format!("w{w}-s{s}");
                    for _ in 0..3 {
                        let (p, _) = send(&c, post(&base, &session, BODY)).await;
                        results.push((
                            session.clone(),
                            p.status.as_u16(),
                            p.headers["x-codex-sidecar-billing"]
                                .to_str()
                                .unwrap()
                                .to_owned(),
                        ));
                    }
                    s += 1;
                }
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = writer.await.unwrap();
    let reloads = reloader.await.unwrap();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    assert!(
        swaps >= 20 && reloads >= 200,
        "swaps {swaps}, reloads {reloads}"
    );
    assert!(results.len() >= 60, "only {} requests", results.len());
    let failed: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(results.iter().all(|r| r.2 == "chatgpt_plan"));
    // Never an empty or partial token: each one sent is a whole planted token.
    let mut valid: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    valid.push(format!("Bearer {}", h.access));
    for s in up.requests() {
        let a = s.header("authorization").unwrap();
        assert!(
            valid.iter().any(|v| v == a),
            "a partial or unknown token went out"
        );
        assert_eq!(s.header("chatgpt-account-id"), Some(ACCOUNT_ID));
    }
    // Every record is billed to the plan account its session started on.
    let recs = h.wait_records(results.len()).await;
    let account = codex_sidecar::ledger::AccountHash::of(ACCOUNT_ID);
    for r in &recs {
        assert_eq!(r["billing"], "chatgpt_plan");
        assert_eq!(r["status"], 200);
        assert_eq!(r["account"], account.as_str());
    }
    eprintln!(
        "{} requests over {swaps} file swaps and {reloads} reloads",
        results.len()
    );
}

#[tokio::test]
async fn loose_file_permissions_are_refused_then_fixed_without_a_restart() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, _) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&h.org_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    h.sidecar.app.creds.reload();
    // A good credential is kept through the settle time, then refused.
    let (p, _) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.status, 200);
    tokio::time::sleep(codex_sidecar::credentials::SETTLE + Duration::from_millis(100)).await;
    h.sidecar.app.creds.reload();
    let st = status_of(&h).await;
    let auth = h.auth_file.display().to_string();
    let org = h.org_file.display().to_string();
    assert_eq!(st["credentials"][0]["state"], "invalid");
    assert_eq!(st["credentials"][1]["state"], "invalid");
    let d0 = st["credentials"][0]["detail"].as_str().unwrap();
    let d1 = st["credentials"][1]["detail"].as_str().unwrap();
    assert!(
        d0.contains("mode 0644") && d0.contains(&format!("chmod 600 {auth}")),
        "{d0}"
    );
    assert!(
        d1.contains("mode 0640") && d1.contains(&format!("chmod 600 {org}")),
        "{d1}"
    );
    let (p, b) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.status, 401);
    assert_eq!(json(&b)["error"]["type"], "chatgpt_disconnected");
    let (p, b) = send(&c, post_req(&h, "new")).await;
    assert_eq!(p.status, 503);
    let m = json(&b)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        m.contains(&format!("chmod 600 {auth}")) && m.contains(&format!("chmod 600 {org}")),
        "{m}"
    );
    assert!(!m.contains(&h.access) && !m.contains(ORG_KEY));
    // Fixing the modes is picked up by the next reload.
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&h.org_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    h.sidecar.app.creds.reload();
    let st = status_of(&h).await;
    assert_eq!(st["credentials"][0]["state"], "connected");
    assert_eq!(st["credentials"][1]["state"], "connected");
    let (p, _) = send(&c, post_req(&h, "new")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
}

/// CASES.md 12: plant known secrets, run every path (success, each error,
/// refresh ok and failing, 401, limits) on the real binary with debug logs,
/// then search every output: stderr, `/status`, `/metrics`, the ledger, every
/// answer body and `check`. No secret may appear, nor the account id in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_12_no_secret_appears_in_any_output() {
    use support::process::SidecarProcess;
    let auth = FakeAuth::start().await;
    {
        let mut st = auth.state.lock().unwrap();
        st.transient_failures = 1;
    }
    let up = FakeUpstream::start(|s, _| {
        let ok = || Reply::sse(upstream::responses_stream(&["Hi"], "gpt-5.4", (10, 4, 2, 1)));
        match s.header("x-test-case").unwrap_or("ok") {
            "500" => Reply::json(500, r#"{"error":{"type":"server_error","message":"boom"}}"#),
            "html" => Reply {
                status: 502,
                headers: vec![("content-type".into(), "text/html".into())],
                chunks: vec![(Duration::ZERO, Bytes::from_static(b"<html>bad gateway</html>"))],
                end: End::Finish,
                head_delay: Duration::ZERO,
            },
            "401" => Reply::json(401, EXPIRED),
            "reset" => ok().ending(End::Reset),
            "stall" => ok().ending(End::Stall),
            "midstream" => {
                let mut ev = upstream::responses_stream(&["x"], "gpt-5.4", (1, 0, 1, 0));
                ev.truncate(1);
                ev.push("event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached. Please try again in 1s.\"}}}\n\n".into());
                Reply::sse(ev)
            }
            "quota" => Reply::json(429, r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota"}}"#),
            _ => ok(),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The planted secrets.
    const REFRESH: &str = "rt-planted-secret-3b9d7e1f5a";
    const LOCAL: &str = "local-token-planted-8e2c4a6b";
    let access = jwt(
        serde_json::json!({"exp": codex_sidecar::time::unix_now() + 60, "sub": "user-planted", "nonce": "acc3ss-pl4nted"}),
    );
    let id = id_token(ACCOUNT_ID, "plus");
    auth.state.lock().unwrap().valid_refresh = REFRESH.into();
    let auth_file = dir.path().join("auth.json");
    write_auth(&auth_file, &access, REFRESH);
    let org_file = dir.path().join("org-key");
    write_secret(&org_file, ORG_KEY);
    let token_file = dir.path().join("client-token");
    write_secret(&token_file, LOCAL);
    let ledger = dir.path().join("state").join("ledger.jsonl");
    let (auth_cfg, ca_cfg) = auth.config(dir.path(), &up);
    let cfg = dir.path().join("codex-sidecar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nclient_token_file = {:?}\nmax_request_body = \"64KiB\"\n\
             [chatgpt]\nauth_file = {:?}\nbase_url = {:?}\n{auth_cfg}\
             [org]\napi_key_file = {:?}\nbase_url = {:?}\n\
             [upstream]\n{ca_cfg}idle_timeout = \"1s\"\n\
             [ledger]\npath = {:?}\nfsync = \"always\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
            token_file.display().to_string(),
            auth_file.display().to_string(),
            up.base_url("/backend-api/codex"),
            org_file.display().to_string(),
            up.base_url("/v1"),
            ledger.display().to_string(),
        ),
    )
    .unwrap();
    let p = SidecarProcess::spawn(&cfg, &[]);
    let base = format!("http://{}", p.proxy);
    let admin = format!("http://{}", p.admin);
    let c = client();
    let mut bodies: Vec<String> = Vec::new();
    let req = |method: &str,
               path: &str,
               session: &str,
               case: &str,
               token: Option<&str>,
               body: Vec<u8>| {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("session-id", session)
            .header("x-test-case", case);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Full::new(Bytes::from(body))).unwrap()
    };
    let body = || BODY.as_bytes().to_vec();
    // The transient failure, then the proactive refresh that succeeds.
    wait_until("the proactive refresh", Duration::from_secs(8), || {
        auth.refresh_posts().len() == 2
    })
    .await;
    let rotated = auth.last_issued().unwrap();
    let run = |r: Request<Full<Bytes>>| {
        let c = c.clone();
        async move { send(&c, r).await }
    };
    // The 413 answer can come while the body is still being sent (a broken
    // pipe for this client): then its status is all there is to check.
    let run_lenient = |r: Request<Full<Bytes>>| {
        let c = c.clone();
        async move {
            use http_body_util::BodyExt;
            match c.request(r).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let b = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    (parts.status.as_u16(), b)
                }
                Err(_) => (413, Bytes::new()),
            }
        }
    };
    let mut expect = Vec::new();
    for (method, path, session, case, token, b, status) in [
        (
            "POST",
            "/v1/responses",
            "plan",
            "ok",
            Some(LOCAL),
            body(),
            200u16,
        ),
        ("POST", "/v1/responses", "plan", "ok", None, body(), 401),
        (
            "POST",
            "/v1/responses",
            "plan",
            "ok",
            Some("wrong-local-token-5d5d5d"),
            body(),
            401,
        ),
        ("GET", "/v1/nope", "plan", "ok", Some(LOCAL), vec![], 404),
        (
            "GET",
            "/v1/responses",
            "plan",
            "ok",
            Some(LOCAL),
            vec![],
            405,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "ok",
            Some(LOCAL),
            vec![b'x'; 100 * 1024],
            413,
        ),
        (
            "POST",
            "/v1/chat/completions",
            "plan",
            "ok",
            Some(LOCAL),
            body(),
            400,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "500",
            Some(LOCAL),
            body(),
            500,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "html",
            Some(LOCAL),
            body(),
            502,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "reset",
            Some(LOCAL),
            body(),
            200,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "stall",
            Some(LOCAL),
            body(),
            200,
        ),
        (
            "POST",
            "/v1/responses",
            "plan",
            "midstream",
            Some(LOCAL),
            body(),
            200,
        ),
    ] {
        let (got, b) = run_lenient(req(method, path, session, case, token, b)).await;
        expect.push((case, got, status));
        bodies.push(String::from_utf8_lossy(&b).into_owned());
    }
    // A 401 upstream: the refresh now fails for good (needs_reconnect).
    auth.state.lock().unwrap().refresh_failure = Some((
        401,
        r#"{"error":{"code":"refresh_token_reused","message":"already used"}}"#.into(),
    ));
    for (session, case, status) in [
        ("plan", "401", 401u16),
        ("plan", "ok", 401),     // chatgpt_reconnect_required
        ("org-1", "ok", 200),    // new sessions run on org
        ("org-1", "quota", 429), // the org's quota is used up ...
        ("org-1", "ok", 429),    // ... and the sidecar answers itself
    ] {
        let (parts, b) = run(req(
            "POST",
            "/v1/responses",
            session,
            case,
            Some(LOCAL),
            body(),
        ))
        .await;
        expect.push((case, parts.status.as_u16(), status));
        bodies.push(String::from_utf8_lossy(&b).into_owned());
    }
    assert!(bodies
        .iter()
        .any(|b| b.contains("chatgpt_reconnect_required")));
    // Disconnect, then no credential at all.
    std::fs::remove_file(&auth_file).unwrap();
    std::fs::remove_file(&org_file).unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for (session, status) in [("plan", 401u16), ("fresh", 503)] {
        let (parts, b) = run(req(
            "POST",
            "/v1/responses",
            session,
            "ok",
            Some(LOCAL),
            body(),
        ))
        .await;
        expect.push(("after-disconnect", parts.status.as_u16(), status));
        bodies.push(String::from_utf8_lossy(&b).into_owned());
    }
    for (case, got, want) in &expect {
        // A reset can cut the answer before or after its head.
        let ok = got == want || (*case == "reset" && *got == 502);
        assert!(ok, "{case}: {expect:?}");
    }
    let (_, status) = run(Request::get(format!("{admin}/status"))
        .body(Full::new(Bytes::new()))
        .unwrap())
    .await;
    let (_, metrics) = run(Request::get(format!("{admin}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap())
    .await;
    let status = String::from_utf8_lossy(&status).into_owned();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains(r#"codex_sidecar_credential_refresh_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"codex_sidecar_credential_refresh_total{outcome="failed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"codex_sidecar_credential_refresh_total{outcome="permanent_failure"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"codex_sidecar_credential_state{source="chatgpt_plan",state="disconnected"} 1"#
        ),
        "{metrics}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_codex-sidecar"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let ledger_text = std::fs::read_to_string(&ledger).unwrap();
    assert!(ledger_text.lines().count() >= 15, "{ledger_text}");
    let mut p = p;
    p.signal(rustix::process::Signal::TERM);
    assert!(p
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = p.logs();
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug logging is on");
    assert!(logs.contains("ChatGPT access token refreshed"), "{logs}");
    let mut secrets: Vec<(String, String)> = vec![
        ("org key".into(), ORG_KEY.into()),
        (
            "org key body".into(),
            ORG_KEY.trim_start_matches("sk-org-").into(),
        ),
        ("access token".into(), access.clone()),
        (
            "access token payload".into(),
            access.split('.').nth(1).unwrap().into(),
        ),
        ("refresh token".into(), REFRESH.into()),
        ("id token".into(), id.clone()),
        (
            "id token payload".into(),
            id.split('.').nth(1).unwrap().into(),
        ),
        (
            "rotated access token".into(),
            rotated.split('.').nth(1).unwrap().into(),
        ),
        ("rotated refresh token".into(), "rt-rotated-1-c0ffee".into()),
        ("local token".into(), LOCAL.into()),
        (
            "wrong local token".into(),
            "wrong-local-token-5d5d5d".into(),
        ),
        ("account id".into(), ACCOUNT_ID.into()),
    ];
    secrets.push((
        "account id tail".into(),
        ACCOUNT_ID.rsplit('-').next().unwrap().into(),
    ));
    let outputs = [
        ("stderr logs", logs.clone()),
        ("/status", status),
        ("/metrics", metrics),
        ("ledger", ledger_text),
        ("answers", bodies.join("\n")),
        ("check", check),
    ];
    for (what, text) in &outputs {
        for (name, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the {name} appears in {what}"
            );
        }
    }
    eprintln!(
        "searched {} bytes of logs, {} answers, for {} secrets",
        logs.len(),
        bodies.len(),
        secrets.len()
    );
}

#[tokio::test]
async fn the_org_key_file_is_watched_too() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            org: false,
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let (p, _) = send(&c, post_req(&h, "a")).await;
    assert_eq!(p.status, 503);
    // The key file appears: the 1 s poll picks it up without a restart.
    write_secret(&h.org_file, &format!("{ORG_KEY}\n"));
    let mut status = 0;
    for _ in 0..150 {
        let (p, _) = send(&c, post_req(&h, "a")).await;
        status = p.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {ORG_KEY}")
    );
    // A rotated key is used from the next poll on, by the same session.
    let rotated = "sk-org-rotated-0f0e0d0c0b0a";
    write_secret(&h.org_file, rotated);
    let mut sent = String::new();
    for _ in 0..150 {
        let (p, _) = send(&c, post_req(&h, "a")).await;
        assert_eq!(p.status, 200);
        sent = up
            .requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap()
            .to_owned();
        if sent.ends_with(rotated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent, format!("Bearer {rotated}"));
}

#[tokio::test]
async fn an_agent_that_goes_away_does_not_cancel_the_refresh_it_started() {
    let auth = FakeAuth::start().await;
    auth.state.lock().unwrap().refresh_delay = Duration::from_millis(600);
    let up = FakeUpstream::start(strict_upstream(
        auth.state.clone(),
        Arc::new(Mutex::new(Vec::new())),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: auth.extra(dir.path(), &up),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    // The agent gives up while the refresh is on the wire.
    let gone = tokio::time::timeout(Duration::from_millis(200), send(&c, post_req(&h, "s"))).await;
    assert!(gone.is_err());
    wait_until("the refresh to land", Duration::from_secs(3), || {
        auth.last_issued()
            .is_some_and(|t| file_tokens(&h.auth_file)["tokens"]["access_token"] == t.as_str())
    })
    .await;
    assert_eq!(auth.refresh_posts().len(), 1);
    let (p, _) = send(&c, post_req(&h, "s")).await;
    assert_eq!(p.status, 200);
    assert_eq!(status_of(&h).await["credentials"][0]["state"], "connected");
}
