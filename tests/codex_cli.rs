//! The reference client: the real Codex CLI (`codex exec`, pinned 0.171.0)
//! talking to the sidecar, which talks to the fake upstream over TLS.
//! `scripts/install-test-tools.sh` installs the CLI; without it these tests fail, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
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

async fn wait_chatgpt_state(h: &Harness, want: &str) {
    for _ in 0..150 {
        if h.status().await["credentials"][0]["state"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the ChatGPT credential never became {want}");
}

#[tokio::test]
async fn codex_sessions_follow_a_connect_without_restarting_the_sidecar() {
    let up = FakeUpstream::start(|_, _| {
        Reply::sse(upstream::responses_stream(
            &ANSWER,
            "gpt-5.4",
            (30, 0, 5, 0),
        ))
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
    let before = codex_exec(&h.base, "say hi").await;
    assert!(before.success, "{}\n{:#?}", before.stderr, before.events);
    let n_before = up.count();
    // The person connects the account: the credential file appears, and the
    // 1 s file poll (not a test hook) picks it up.
    write_chatgpt_auth(&h.auth_file, &h.access, ACCOUNT_ID);
    wait_chatgpt_state(&h, "connected").await;
    let after = codex_exec(&h.base, "say hi again").await;
    assert!(after.success, "{}\n{:#?}", after.stderr, after.events);
    assert_eq!(after.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    for s in &seen[..n_before] {
        assert_eq!(s.path_and_query, "/v1/responses");
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {ORG_KEY}")
        );
    }
    for s in &seen[n_before..] {
        assert_eq!(s.path_and_query, "/backend-api/codex/responses");
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {}", h.access)
        );
        assert_eq!(s.header("chatgpt-account-id"), Some(ACCOUNT_ID));
    }
    let recs = h.wait_records(seen.len()).await;
    let billing: Vec<&str> = recs
        .iter()
        .map(|r| r["billing"].as_str().unwrap())
        .collect();
    assert_eq!(billing[..n_before], vec!["org"; n_before]);
    assert_eq!(
        billing[n_before..],
        vec!["chatgpt_plan"; seen.len() - n_before]
    );
    assert_ne!(recs[0]["session"], recs[n_before]["session"]);
}

#[tokio::test]
async fn a_disconnect_mid_session_stops_the_pinned_codex_session_and_the_next_runs_on_org() {
    let auth_file: Arc<Mutex<Option<std::path::PathBuf>>> = Arc::new(Mutex::new(None));
    let af = auth_file.clone();
    // The first answer is a tool call; while Codex runs the tool, the person
    // disconnects the account (the file disappears) and the poll notices.
    let up = FakeUpstream::start(move |s, _| {
        let body = json(&s.body);
        let has_output = body["input"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"));
        if s.path_and_query.starts_with("/v1/") {
            return Reply::sse(upstream::responses_stream(&ANSWER, "gpt-5.4", (30, 0, 5, 0)));
        }
        assert!(!has_output, "a disconnected session must not reach the plan upstream");
        if let Some(p) = af.lock().unwrap().take() {
            std::fs::remove_file(p).unwrap();
        }
        let call = serde_json::json!({"type": "response.output_item.done", "output_index": 0, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command",
            "arguments": "{\"cmd\":\"echo tool-ran\"}"}});
        let mut r = Reply::sse(vec![
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_a\",\"model\":\"gpt-5.4\"}}\n\n".into(),
            format!("event: response.output_item.done\ndata: {call}\n\n"),
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_a\",\"model\":\"gpt-5.4\",\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":54}}}\n\n".into(),
        ]);
        // Well over the 1 s file poll, so the disconnect is seen before the next request.
        r.head_delay = Duration::from_millis(2500);
        r
    })
    .await;
    let h = start(&up, Setup::default()).await;
    *auth_file.lock().unwrap() = Some(h.auth_file.clone());
    let run = codex_exec(&h.base, "run echo tool-ran and tell me what it printed").await;
    assert!(
        !run.success,
        "the pinned session must not silently move to org: {:#?}",
        run.events
    );
    let errors = error_texts(&run);
    assert!(errors.contains("start a new session"), "{errors}");
    let plan_requests = up.count();
    assert_eq!(plan_requests, 1);
    let recs = h.wait_records(2).await;
    assert_eq!(recs[0]["billing"], "chatgpt_plan");
    assert_eq!(recs[0]["outcome"], "completed");
    for r in &recs[1..] {
        assert_eq!(r["billing"], "chatgpt_plan", "{r}");
        assert_eq!(r["status"], 401);
        assert_eq!(r["outcome"], "rejected");
        assert_eq!(r["session"], recs[0]["session"]);
    }
    // A new Codex session runs on the organization.
    let next = codex_exec(&h.base, "say hi").await;
    assert!(next.success, "{}\n{:#?}", next.stderr, next.events);
    assert_eq!(next.agent_messages(), vec![ANSWER.concat()]);
    let seen = up.requests();
    assert!(seen.len() > plan_requests);
    for s in &seen[plan_requests..] {
        assert_eq!(s.path_and_query, "/v1/responses");
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {ORG_KEY}")
        );
    }
    let all = h
        .wait_records(recs.len() + seen.len() - plan_requests)
        .await;
    let last = all.last().unwrap();
    assert_eq!(last["billing"], "org");
    assert_ne!(last["session"], recs[0]["session"]);
}

#[tokio::test]
async fn codex_retries_a_401_and_succeeds_on_the_refreshed_token() {
    let auth = support::auth::FakeAuth::start().await;
    let state = auth.state.clone();
    // The plan upstream accepts only tokens the auth server issued: the planted
    // one has expired there.
    let up = FakeUpstream::start(move |s, _| {
        let issued = state.lock().unwrap().issued.clone();
        let given = s.header("authorization").unwrap_or("");
        if issued.iter().any(|t| given == format!("Bearer {t}")) {
            Reply::sse(upstream::responses_stream(&ANSWER, "gpt-5.4", (30, 0, 5, 0)))
        } else {
            Reply::json(401, r#"{"error":{"message":"Your authentication token has expired.","type":"invalid_request_error","code":"token_expired"}}"#)
        }
    })
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
    let run = codex_exec(&h.base, "say hi").await;
    assert!(run.success, "{}\n{:#?}", run.stderr, run.events);
    assert_eq!(run.agent_messages(), vec![ANSWER.concat()]);
    assert_eq!(auth.refresh_posts().len(), 1);
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "one 401, then Codex's own retry");
    let issued = auth.last_issued().unwrap();
    assert_eq!(
        seen[0].header("authorization").unwrap(),
        format!("Bearer {}", h.access)
    );
    assert_eq!(
        seen[1].header("authorization").unwrap(),
        format!("Bearer {issued}")
    );
    assert_eq!(seen[0].header("session-id"), seen[1].header("session-id"));
    let recs = h.wait_records(2).await;
    assert_eq!(
        (recs[0]["status"].as_u64(), recs[1]["status"].as_u64()),
        (Some(401), Some(200))
    );
    assert!(recs.iter().all(|r| r["billing"] == "chatgpt_plan"));
}
