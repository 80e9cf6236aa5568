//! The billing ledger end to end: exact records for a Codex turn with a tool
//! call (two model requests), on both billing sources; usage exactness for
//! each kind of answer (CASES.md 5); a client that goes away (CASES.md 6).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;

fn tool_call_then_answer(s: &Seen, _n: usize) -> Reply {
    let body = json(&s.body);
    let has_output = body["input"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"));
    if !has_output {
        let call = serde_json::json!({"type": "response.output_item.done", "output_index": 0, "item": {
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command",
            "arguments": "{\"cmd\":\"echo tool-ran\"}"}});
        Reply::sse(vec![
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_a\",\"model\":\"gpt-5.4\"}}\n\n".into(),
            format!("event: response.output_item.done\ndata: {call}\n\n"),
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_a\",\"model\":\"gpt-5.4\",\"usage\":{\"input_tokens\":5000,\"input_tokens_details\":{\"cached_tokens\":4096},\"output_tokens\":40,\"output_tokens_details\":{\"reasoning_tokens\":16},\"total_tokens\":5040}}}\n\n".into(),
        ])
    } else {
        Reply::sse(upstream::responses_stream(
            &["The tool said ", "tool-ran."],
            "gpt-5.4",
            (5100, 5000, 9, 0),
        ))
    }
}

async fn tool_turn(setup: Setup, billing: &str, ocu: bool) {
    let up = FakeUpstream::start(tool_call_then_answer).await;
    let h = start(&up, setup).await;
    let run =
        support::codex::codex_exec(&h.base, "run echo tool-ran and tell me what it printed").await;
    assert!(
        run.success,
        "codex exec failed: {}\n{:#?}",
        run.stderr, run.events
    );
    assert_eq!(
        up.count(),
        2,
        "a tool call makes a second model request in the same turn"
    );
    let recs = h.wait_records(2).await;
    assert_eq!(recs.len(), 2);
    let session = up.requests()[0].header("session-id").unwrap().to_owned();
    let usages = [
        serde_json::json!({"input": 5000, "cached_input": 4096, "output": 40, "reasoning": 16, "total": 5040}),
        serde_json::json!({"input": 5100, "cached_input": 5000, "output": 9, "reasoning": 0, "total": 5109}),
    ];
    for (r, usage) in recs.iter().zip(usages) {
        assert_eq!(r["session"], session.as_str());
        assert_eq!(r["billing"], billing);
        assert_eq!(r["ocu_billable"], ocu);
        assert_eq!(r["outcome"], "completed");
        assert_eq!(r["model"], "gpt-5.4");
        assert_eq!(r["usage"], usage);
    }
    assert_ne!(recs[0]["id"], recs[1]["id"]);
    assert!(
        recs[0]["id"].as_str() < recs[1]["id"].as_str(),
        "ids sort by time"
    );
}

#[tokio::test]
async fn a_codex_tool_turn_is_two_exact_records_on_the_chatgpt_plan() {
    tool_turn(Setup::default(), "chatgpt_plan", false).await;
}

#[tokio::test]
async fn a_codex_tool_turn_is_two_exact_records_on_the_org() {
    tool_turn(
        Setup {
            chatgpt: false,
            ..Setup::default()
        },
        "org",
        true,
    )
    .await;
}

#[tokio::test]
async fn case_05_usage_equals_the_upstream_figures_for_every_kind_of_answer() {
    let answers: Vec<(&str, Reply, serde_json::Value)> = vec![
        (
            "/v1/responses",
            Reply::sse(upstream::responses_stream(&["a"], "gpt-5.4", (700, 512, 33, 21))),
            serde_json::json!({"input": 700, "cached_input": 512, "output": 33, "reasoning": 21, "total": 733}),
        ),
        (
            "/v1/responses",
            Reply::json(200, r#"{"id":"resp_j","object":"response","model":"gpt-5.4","output":[],"usage":{"input_tokens":81,"input_tokens_details":{"cached_tokens":64},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":88}}"#),
            serde_json::json!({"input": 81, "cached_input": 64, "output": 7, "reasoning": 3, "total": 88}),
        ),
        (
            "/v1/responses",
            Reply::sse(vec![
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"gpt-5.4\"}}\n\n".into(),
                "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"id\":\"r\",\"model\":\"gpt-5.4\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"usage\":{\"input_tokens\":9,\"output_tokens\":100,\"total_tokens\":109}}}\n\n".into(),
            ]),
            serde_json::json!({"input": 9, "cached_input": 0, "output": 100, "reasoning": 0, "total": 109}),
        ),
        (
            "/v1/chat/completions",
            Reply::sse(vec![
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n".into(),
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16,\"prompt_tokens_details\":{\"cached_tokens\":8},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n".into(),
                "data: [DONE]\n\n".into(),
            ]),
            serde_json::json!({"input": 12, "cached_input": 8, "output": 4, "reasoning": 1, "total": 16}),
        ),
    ];
    let replies: Vec<Reply> = answers.iter().map(|a| a.1.clone()).collect();
    let up = FakeUpstream::start(move |_, n| replies[n].clone()).await;
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    for (path, _, _) in &answers {
        let (p, _) = send(&c, post(&format!("{}{path}", h.base), "s", BODY)).await;
        assert_eq!(p.status, 200);
    }
    let recs = h.wait_records(answers.len()).await;
    for (r, (_, _, want)) in recs.iter().zip(&answers) {
        assert_eq!(&r["usage"], want, "{r}");
    }
    assert_eq!(recs[2]["outcome"], "incomplete");
    assert_eq!(recs[3]["model"], "gpt-4.1");
}

#[tokio::test]
async fn case_06_a_client_that_goes_away_cancels_the_upstream_and_is_recorded() {
    let mut events = upstream::responses_stream(&["one"], "gpt-5.4", (50, 0, 1, 0));
    events.truncate(3);
    let up = FakeUpstream::start(move |_, _| Reply::sse(events.clone()).ending(End::Stall)).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let resp = c
        .request(post(&format!("{}/v1/responses", h.base), "s", BODY))
        .await
        .unwrap();
    let mut body = resp.into_body();
    // Read the first bytes, then hang up.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    drop(c);
    for _ in 0..200 {
        if up.cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        up.cancelled.load(Ordering::SeqCst),
        1,
        "the upstream request was cancelled"
    );
    let r = &h.wait_records(1).await[0];
    assert_eq!(r["outcome"], "client_cancelled");
    assert_eq!(r["usage"], serde_json::Value::Null, "never estimated");
    assert_eq!(r["model"], "gpt-5.4");
}

/// A Chat Completions JSON answer with `content-length` (tests/content_length.rs has
/// the Responses ones): recorded on its last byte, with its usage.
#[tokio::test]
async fn a_json_chat_answer_of_known_length_on_the_org_is_completed() {
    let body = r#"{"id":"c","object":"chat.completion","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}"#;
    let up = FakeUpstream::start(move |_, _| {
        Reply::json(200, body).header("content-length", &body.len().to_string())
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
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/chat/completions", h.base), "s", BODY),
    )
    .await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, body.as_bytes()));
    let r = &h.wait_records(1).await[0];
    assert_eq!(r["outcome"], "completed", "{r}");
    assert_eq!(
        r["usage"],
        serde_json::json!({"input": 12, "cached_input": 0, "output": 4, "reasoning": 0, "total": 16})
    );
}

/// An event stream that ends cleanly but without `response.completed` (or
/// another final event) is broken: the agent gets a closing `response.failed`
/// and the ledger says `upstream_error`, never `completed`.
#[tokio::test]
async fn an_event_stream_without_its_final_event_is_an_upstream_error() {
    let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"gpt-5.4\"}}\n\n";
    let up = FakeUpstream::start(move |_, n| {
        let r = Reply::sse(vec![created.to_owned()]);
        if n == 0 {
            r
        } else {
            r.header("content-length", &created.len().to_string())
        }
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    for _ in 0..2 {
        let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "s", BODY)).await;
        assert_eq!(p.status, 200);
        let text = String::from_utf8(b.to_vec()).unwrap();
        let (head, tail) = text.split_at(created.len());
        assert_eq!(head, created, "what the upstream sent passes unchanged");
        assert!(
            tail.starts_with("event: response.failed\ndata: ") && tail.ends_with("\n\n"),
            "{tail}"
        );
        assert!(tail.contains("without a final event"), "{tail}");
    }
    for r in h.wait_records(2).await {
        assert_eq!(r["outcome"], "upstream_error", "{r}");
        assert_eq!(r["usage"], serde_json::Value::Null);
    }
}

/// A client that leaves while its request is held has seen no status: its
/// record says 499 (never 0, which no reader of the ledger accepts).
#[tokio::test]
async fn a_client_gone_while_held_is_recorded_499_and_the_ledger_verifies() {
    let up = FakeUpstream::start(|_, n| {
        if n == 0 {
            Reply::json(
                429,
                r#"{"error":{"type":"rate_limit_exceeded","message":"slow down"}}"#,
            )
            .header("retry-after", "5")
        } else {
            Reply::sse(upstream::responses_stream(&["a"], "gpt-5.4", (1, 0, 1, 0)))
        }
    })
    .await;
    let h = start(
        &up,
        Setup {
            extra: "[limits]\nmax_hold = \"30s\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    let (p, _) = send(&c, post(&url, "s", BODY)).await;
    assert_eq!(p.status, 429);
    let held = tokio::time::timeout(Duration::from_millis(300), send(&c, post(&url, "s", BODY)));
    assert!(held.await.is_err(), "the request is held by the pause");
    let recs = h.wait_records(2).await;
    assert_eq!(
        (
            recs[1]["status"].as_u64(),
            recs[1]["outcome"].as_str(),
            recs[1]["billing"].as_str()
        ),
        (Some(499), Some("client_cancelled"), Some("chatgpt_plan"))
    );
    assert_eq!(up.count(), 1, "the held request never reached the upstream");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codex-sidecar"))
        .args(["ledger", "verify", "--file"])
        .arg(&h.ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request refused before its session is pinned is recorded with the source
/// the session would have had: a plan session's 413 is not OCU-billable.
#[tokio::test]
async fn refusals_before_the_pin_carry_the_billing_the_session_would_have() {
    let up = FakeUpstream::start(|_, _| {
        Reply::sse(upstream::responses_stream(&["a"], "gpt-5.4", (1, 0, 1, 0)))
    })
    .await;
    let h = start(
        &up,
        Setup {
            extra: "[server]\nmax_request_body = \"1KiB\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    let big = "x".repeat(4096);
    let (p, _) = send(&c, post(&url, "new", &big)).await;
    assert_eq!(p.status, 413);
    let r = &h.wait_records(1).await[0];
    assert_eq!(
        (
            r["billing"].as_str(),
            r["ocu_billable"].as_bool(),
            r["outcome"].as_str()
        ),
        (Some("chatgpt_plan"), Some(false), Some("rejected"))
    );
}
