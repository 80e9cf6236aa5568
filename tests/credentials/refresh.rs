//! Token refresh: proactive, after a 401, single flight, permanent and
//! transient failures, read-only files, an agent that goes away.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::support::auth::*;
use crate::support::*;

#[tokio::test]
async fn proactive_refresh_before_expiry_rotates_and_persists_the_tokens() {
    let auth = FakeAuth::start().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with_auth(&up, &auth, dir.path()).await;
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

#[tokio::test]
async fn an_upstream_401_reloads_then_refreshes_and_the_retry_succeeds() {
    let auth = FakeAuth::start().await;
    let also = Arc::new(Mutex::new(Vec::new()));
    let up = FakeUpstream::start(strict_upstream(auth.state.clone(), also.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with_auth(&up, &auth, dir.path()).await;
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
    // The upstream's 401s take 500 ms, so all 50 requests are on their way
    // with the old token before the first 401 can start the refresh.
    let strict = strict_upstream(auth.state.clone(), Arc::new(Mutex::new(Vec::new())));
    let up = FakeUpstream::start(move |s, n| {
        let mut r = strict(s, n);
        if r.status == 401 {
            r.head_delay = Duration::from_millis(500);
        }
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with_auth(&up, &auth, dir.path()).await;
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
        let h = start_with_auth(&up, &auth, dir.path()).await;
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
    let h = start_with_auth(&up, &auth, dir.path()).await;
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
    let h = start_with_auth(&up, &auth, dir.path()).await;
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
    let h = start_with_auth(&up, &auth, dir.path()).await;
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
