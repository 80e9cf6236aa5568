//! The reference client: the real Codex CLI (`codex exec`, pinned 0.171.0)
//! talking to the sidecar, which talks to the fake upstream over TLS.
//! `scripts/install-test-tools.sh` installs the CLI; without it these tests fail, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;

use support::codex::{codex_exec, CodexRun, LOCAL_TOKEN};

fn token_file(dir: &std::path::Path) -> String {
    let p = dir.join("client-token");
    write_secret(&p, LOCAL_TOKEN);
    format!(
        "[server]\nclient_token_file = {:?}\n",
        p.display().to_string()
    )
}

const ANSWER: [&str; 3] = ["Hello ", "from the ", "fake upstream."];

fn assert_codex_headers(s: &Seen) {
    assert_eq!(s.method, "POST");
    assert_eq!(s.header("accept"), Some("text/event-stream"));
    assert_eq!(s.header("accept-encoding"), Some("identity"));
    assert!(
        s.header("originator")
            .is_some_and(|o| o.starts_with("codex_")),
        "{:?}",
        s.headers
    );
    assert!(
        s.header("user-agent")
            .is_some_and(|u| u.contains("0.171.0")),
        "{:?}",
        s.headers
    );
    let session = s
        .header("session-id")
        .or(s.header("session_id"))
        .expect("Codex's session header passes through");
    assert!(!session.is_empty());
    for (name, value) in &s.headers {
        assert!(
            !value
                .as_bytes()
                .windows(LOCAL_TOKEN.len())
                .any(|w| w == LOCAL_TOKEN.as_bytes()),
            "local token leaked in {name}"
        );
    }
    let body = json(&s.body);
    assert_eq!(body["model"], "gpt-5.4");
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn codex_exec_gets_its_answer_billed_to_the_chatgpt_plan() {
    let up = FakeUpstream::start(|_, _| {
        Reply::sse(upstream::responses_stream(
            &ANSWER,
            "gpt-5.4",
            (2100, 1800, 12, 5),
        ))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            extra: token_file(dir.path()),
            ..Setup::default()
        },
    )
    .await;
    let run = codex_exec(&h.base, "say hi").await;
    assert!(
        run.success,
        "codex exec failed: {}\n{:#?}",
        run.stderr, run.events
    );
    assert_eq!(run.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(s.path_and_query, "/backend-api/codex/responses");
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {}", h.access)
        );
        assert_eq!(s.header("chatgpt-account-id"), Some(ACCOUNT_ID));
        assert_codex_headers(s);
    }
    let recs = h.wait_records(seen.len()).await;
    let session = seen[0]
        .header("session-id")
        .or(seen[0].header("session_id"))
        .unwrap();
    for r in &recs {
        assert_eq!(r["billing"], "chatgpt_plan");
        assert_eq!(r["ocu_billable"], false);
        assert_eq!(r["session"], session);
        assert_eq!(r["outcome"], "completed");
        assert_eq!(
            r["usage"],
            serde_json::json!({"input": 2100, "cached_input": 1800, "output": 12, "reasoning": 5, "total": 2112})
        );
    }
}

#[tokio::test]
async fn codex_exec_with_only_an_org_key_is_billed_to_the_org() {
    let up = FakeUpstream::start(|_, _| {
        Reply::sse(upstream::responses_stream(
            &ANSWER,
            "gpt-5.4",
            (900, 0, 20, 0),
        ))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            extra: token_file(dir.path()),
            ..Setup::default()
        },
    )
    .await;
    let run = codex_exec(&h.base, "say hi").await;
    assert!(
        run.success,
        "codex exec failed: {}\n{:#?}",
        run.stderr, run.events
    );
    assert_eq!(run.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    for s in &seen {
        assert_eq!(s.path_and_query, "/v1/responses");
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {ORG_KEY}")
        );
        assert_eq!(s.header("chatgpt-account-id"), None);
        assert_codex_headers(s);
    }
    for r in h.wait_records(seen.len()).await {
        assert_eq!(
            (r["billing"].as_str(), r["ocu_billable"].as_bool()),
            (Some("org"), Some(true))
        );
    }
}

fn error_texts(run: &CodexRun) -> String {
    run.events
        .iter()
        .filter(|e| e["type"] == "error" || e["type"] == "turn.failed")
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn codex_shows_the_reset_time_of_a_used_up_plan_and_the_next_run_stays_local() {
    let resets_at = codex_sidecar::time::unix_now() + 2 * 3600 + 14 * 60;
    let body = format!(
        r#"{{"error":{{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":{resets_at},"resets_in_seconds":8040}}}}"#
    );
    let up = FakeUpstream::start(move |_, _| Reply::json(429, body.clone())).await;
    let h = start(&up, Setup::default()).await;
    let run = codex_exec(&h.base, "say hi").await;
    assert!(
        !run.success,
        "codex must fail on a used-up plan: {:#?}",
        run.events
    );
    assert_eq!(up.count(), 1, "Codex must not retry a used-up plan");
    let errors = error_texts(&run);
    assert!(errors.to_lowercase().contains("usage limit"), "{errors}");
    assert!(
        errors.contains("try again at") || errors.contains("Try again at"),
        "{errors}"
    );
    // A second run is answered by the sidecar itself: nothing reaches the upstream.
    let run2 = codex_exec(&h.base, "say hi again").await;
    assert!(!run2.success);
    assert_eq!(
        up.count(),
        1,
        "no request may reach an exhausted account before its reset"
    );
    let errors2 = error_texts(&run2);
    assert!(errors2.to_lowercase().contains("usage limit"), "{errors2}");
    let recs = h.wait_records(2).await;
    assert_eq!(recs[0]["outcome"], "failed");
    assert_eq!(
        recs[0]["limit"],
        serde_json::json!({"kind": "usage_limit", "resets_at": resets_at})
    );
    assert_eq!(recs[1]["outcome"], "limited");
    assert_eq!(recs[1]["status"], 429);
}

#[tokio::test]
async fn codex_retries_a_rate_limit_known_only_from_x_ratelimit_headers() {
    let up = FakeUpstream::start(|_, n| {
        if n == 0 {
            Reply::json(429, r#"{"error":{"type":"requests","code":"rate_limit_exceeded","message":"Rate limit reached for requests"}}"#)
                .header("x-ratelimit-limit-requests", "60")
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "1s")
        } else {
            Reply::sse(upstream::responses_stream(&ANSWER, "gpt-5.4", (10, 0, 3, 0)))
        }
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
    let run = codex_exec(&h.base, "say hi").await;
    assert!(
        run.success,
        "codex exec failed: {}\n{:#?}",
        run.stderr, run.events
    );
    assert_eq!(run.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "the retry waited for the reset: {gap:?}"
    );
}

#[tokio::test]
async fn codex_recovers_from_a_rate_limit_inside_the_stream() {
    let up = FakeUpstream::start(|_, n| {
        if n == 0 {
            let mut ev = upstream::responses_stream(&["x"], "gpt-5.4", (1, 0, 1, 0));
            ev.truncate(1);
            ev.push("event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached. Please try again in 1.5s.\"}}}\n\n".into());
            Reply::sse(ev)
        } else {
            Reply::sse(upstream::responses_stream(&ANSWER, "gpt-5.4", (10, 0, 3, 0)))
        }
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let run = codex_exec(&h.base, "say hi").await;
    assert!(
        run.success,
        "codex exec failed: {}\n{:#?}",
        run.stderr, run.events
    );
    assert_eq!(run.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(1400),
        "no request before the reset"
    );
    let recs = h.wait_records(2).await;
    assert_eq!(recs[0]["outcome"], "failed");
    assert_eq!(recs[0]["limit"]["kind"], "rate_limit");
    assert_eq!(recs[1]["outcome"], "completed");
}
