//! Limits end to end through the sidecar (the state machine itself is unit
//! tested in src/limits/tests): fallback to org, state changes posted to
//! `events.url`, `/status`, and CASES.md 7 and 9 at the HTTP level.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

fn usage_limit(resets_at: i64) -> Reply {
    Reply::json(
        429,
        format!(
            r#"{{"error":{{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"pro","resets_at":{resets_at}}}}}"#
        ),
    )
}

fn ok_stream() -> Reply {
    Reply::sse(upstream::responses_stream(&["ok"], "gpt-5.4", (3, 0, 1, 0)))
}

#[tokio::test]
async fn fallback_to_org_moves_affected_sessions_and_bills_them_to_org() {
    let resets_at = codex_sidecar::time::unix_now() + 3600;
    let up = FakeUpstream::start(move |s, _| {
        if s.path_and_query.starts_with("/backend-api/") {
            usage_limit(resets_at)
        } else {
            ok_stream()
        }
    })
    .await;
    let h = start(
        &up,
        Setup {
            extra: "[limits]\non_usage_limit = \"fallback_to_org\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    let (p, b) = send(&c, post(&url, "s1", BODY)).await;
    assert_eq!(
        p.status, 429,
        "the answer that revealed the limit reaches the agent as is"
    );
    assert_eq!(json(&b)["error"]["type"], "usage_limit_reached");
    assert!(
        p.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 3500
    );
    let (p, _) = send(&c, post(&url, "s1", BODY)).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
    let paths: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.path_and_query.clone())
        .collect();
    assert_eq!(paths, ["/backend-api/codex/responses", "/v1/responses"]);
    assert_eq!(
        up.requests()[1].header("authorization").unwrap(),
        format!("Bearer {ORG_KEY}")
    );
    let recs = h.wait_records(2).await;
    assert_eq!(
        (recs[0]["billing"].as_str(), recs[0]["outcome"].as_str()),
        (Some("chatgpt_plan"), Some("failed"))
    );
    assert_eq!(
        (
            recs[1]["billing"].as_str(),
            recs[1]["ocu_billable"].as_bool()
        ),
        (Some("org"), Some(true))
    );
}

#[tokio::test]
async fn the_default_never_moves_billing_and_answers_with_the_reset() {
    let resets_at = codex_sidecar::time::unix_now() + 7200;
    let up = FakeUpstream::start(move |_, _| usage_limit(resets_at)).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    send(&c, post(&url, "s1", BODY)).await;
    for session in ["s1", "s2"] {
        let (p, b) = send(&c, post(&url, session, BODY)).await;
        assert_eq!(p.status, 429);
        assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
        let retry: i64 = p.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((7100..=7200).contains(&retry), "{retry}");
        let e = json(&b);
        assert_eq!(e["error"]["type"], "usage_limit_reached");
        assert_eq!(e["error"]["plan_type"], "pro");
        assert_eq!(e["error"]["resets_at"], resets_at);
    }
    assert_eq!(
        up.count(),
        1,
        "case 7: no request reaches a used-up account before its reset"
    );
    let status = h.status().await;
    let l = &status["limits"][0];
    assert_eq!(
        (l["billing"].as_str(), l["state"].as_str()),
        (Some("chatgpt_plan"), Some("exhausted"))
    );
    assert_eq!(l["until_unix"], resets_at);
    assert_eq!(l["plan_type"], "pro");
}

#[tokio::test]
async fn case_09_every_429_carries_retry_after_when_a_reset_is_known() {
    // The upstream's reset is only in the body or only in x-ratelimit headers.
    let up = FakeUpstream::start(|_, n| match n {
        0 => Reply::json(429, r#"{"error":{"type":"rate_limit_exceeded","code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 2s."}}"#)
            .header("x-ratelimit-reset-tokens", "2s")
            .header("x-ratelimit-remaining-tokens", "0"),
        _ => ok_stream(),
    })
    .await;
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            extra: "[limits]\nmax_hold = \"0s\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    let (p, _) = send(&c, post(&url, "s", BODY)).await;
    assert_eq!(p.status, 429);
    assert_eq!(p.headers["retry-after"], "2");
    // While paused beyond max_hold the sidecar answers itself, with Retry-After.
    let (p, b) = send(&c, post(&url, "s", BODY)).await;
    assert_eq!(p.status, 429);
    assert!(p.headers.contains_key("retry-after"));
    assert_eq!(json(&b)["error"]["type"], "rate_limit_exceeded");
    assert_eq!(up.count(), 1);
}

/// A receiver for `events.url` that records each POSTed JSON.
async fn events_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn limit_and_credential_changes_are_posted_to_events_url() {
    let resets_at = codex_sidecar::time::unix_now() + 600;
    let up = FakeUpstream::start(move |_, _| usage_limit(resets_at)).await;
    let (url, seen) = events_receiver().await;
    let h = start(
        &up,
        Setup {
            extra: format!("[events]\nurl = {url:?}\n"),
            ..Setup::default()
        },
    )
    .await;
    send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    std::fs::remove_file(&h.auth_file).unwrap();
    h.sidecar.app.creds.reload();
    let mut events = Vec::new();
    for _ in 0..200 {
        events = seen.lock().unwrap().clone();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let limit = events
        .iter()
        .find(|e| e["kind"] == "limit")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(limit["transition"]["billing"], "chatgpt_plan");
    assert_eq!(limit["transition"]["from"], "ok");
    assert_eq!(limit["transition"]["to"], "exhausted");
    let cred = events
        .iter()
        .find(|e| e["kind"] == "credential")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(cred["change"]["source"], "chatgpt_plan");
    assert_eq!(
        (
            cred["change"]["from"].as_str(),
            cred["change"]["to"].as_str()
        ),
        (Some("connected"), Some("disconnected"))
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains(&h.access) && !all.contains(ACCOUNT_ID),
        "no secret or account id in events"
    );
}

/// SPEC: an exhausted account clears on a credential change (a reconnect, a new
/// org key), found by the file poll; until then nothing reaches the upstream.
#[tokio::test]
async fn a_credential_change_clears_an_exhausted_account() {
    let resets_at = codex_sidecar::time::unix_now() + 3600;
    let up = FakeUpstream::start(move |s, n| {
        if n >= 2 {
            ok_stream()
        } else if s.path_and_query.starts_with("/backend-api/") {
            usage_limit(resets_at)
        } else {
            Reply::json(
                429,
                r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota"}}"#,
            )
        }
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    // The plan session, then (after a disconnect) an org session, both used up.
    assert_eq!(send(&c, post(&url, "plan", BODY)).await.0.status, 429);
    std::fs::remove_file(&h.auth_file).unwrap();
    h.sidecar.app.creds.reload();
    assert_eq!(send(&c, post(&url, "org", BODY)).await.0.status, 429);
    assert_eq!(send(&c, post(&url, "org", BODY)).await.0.status, 429);
    assert_eq!(up.count(), 2, "the second org request stays local");
    // Reconnect the same account with new tokens, and put a new org key in place.
    write_chatgpt_auth(&h.auth_file, &access_token("renewed"), ACCOUNT_ID);
    write_secret(&h.org_file, "sk-org-new-key-0000000000000000");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = h.status().await;
        let states: Vec<String> = status["limits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["state"].as_str().unwrap().to_owned())
            .collect();
        if states.iter().all(|s| s == "ok") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(&c, post(&url, "plan", BODY)).await.0.status, 200);
    assert_eq!(send(&c, post(&url, "org", BODY)).await.0.status, 200);
    assert_eq!(up.count(), 4);
    assert_eq!(
        up.requests()[3].header("authorization"),
        Some("Bearer sk-org-new-key-0000000000000000")
    );
}

/// CASES.md 9, the other way round: an upstream Retry-After the agent cannot
/// use (garbled, negative, years away) is replaced by the reset the sidecar knows.
#[tokio::test]
async fn case_09_an_unusable_upstream_retry_after_becomes_the_known_reset() {
    for bad in ["abc", "-5", "99999999"] {
        let up = FakeUpstream::start(move |_, _| {
            Reply::json(429, r#"{"error":{"type":"rate_limit_exceeded","code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 1.5s."}}"#)
                .header("retry-after", bad)
        })
        .await;
        let h = start(
            &up,
            Setup {
                chatgpt: false,
                ..Setup::default()
            },
        )
        .await;
        let (p, _) = send(
            &client(),
            post(&format!("{}/v1/responses", h.base), "s", BODY),
        )
        .await;
        assert_eq!(p.status, 429);
        let all: Vec<_> = p.headers.get_all("retry-after").iter().collect();
        assert_eq!(all, ["2"], "retry-after {bad:?} is replaced, once");
    }
}
