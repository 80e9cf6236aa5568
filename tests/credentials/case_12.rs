//! CASES.md 12: secrets never appear in any output.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::Full;

use super::*;
use crate::support::auth::*;
use crate::support::*;

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
    // Each on its own connection: the 413 answer can come while the body is
    // still being sent (a broken pipe for this client, and a connection the
    // sidecar closes); then its status is all there is to check.
    let run_lenient = |r: Request<Full<Bytes>>| {
        let c = client();
        let oversized = r.body().size_hint().exact().unwrap_or(0) > 64 * 1024;
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
                Err(e) if oversized => {
                    let _ = e;
                    (413, Bytes::new())
                }
                Err(e) => panic!("request failed: {e}"),
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
    let exit = p.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "drain: {exit:?}");
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
