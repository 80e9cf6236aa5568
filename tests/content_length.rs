//! Answers the upstream sends with a `Content-Length` (non-streamed JSON, as the OpenAI API
//! and most gateways send it): the agent gets the exact bytes, and the ledger records the
//! answer as completed with its usage, on both billing sources. hyper stops reading a body
//! once it has written `Content-Length` bytes, without asking for its end; the macro
//! benchmark (benches/macro) found these recorded as `client_cancelled` without usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

const ANSWER: &str = r#"{"id":"resp_cl","object":"response","status":"completed","model":"gpt-5.4","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Done: 日本語 🚀"}]}],"usage":{"input_tokens":48213,"input_tokens_details":{"cached_tokens":40960},"output_tokens":3517,"output_tokens_details":{"reasoning_tokens":1216},"total_tokens":51730}}"#;

fn with_length() -> Reply {
    Reply::json(200, ANSWER).header("content-length", &ANSWER.len().to_string())
}

async fn json_answer_is_completed_with_usage(setup: Setup, billing: &str) {
    let up = FakeUpstream::start(|_, _| with_length()).await;
    let h = start(&up, setup).await;
    let c = client();
    for session in ["s1", "s2"] {
        let body = r#"{"model":"gpt-5.4","stream":false,"input":"hi"}"#;
        let (p, bytes) = send(&c, post(&format!("{}/v1/responses", h.base), session, body)).await;
        assert_eq!(p.status, 200);
        assert_eq!(
            p.headers["content-length"],
            ANSWER.len().to_string().as_str()
        );
        assert_eq!(bytes, ANSWER.as_bytes());
    }
    let recs = h.wait_records(2).await;
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        assert_eq!(r["outcome"], "completed", "{r}");
        assert_eq!(r["billing"], billing);
        assert_eq!(r["model"], "gpt-5.4");
        assert_eq!(
            r["usage"],
            serde_json::json!({"input": 48213, "cached_input": 40960, "output": 3517, "reasoning": 1216, "total": 51730})
        );
        assert_eq!(r["status"], 200);
    }
}

#[tokio::test]
async fn a_json_answer_with_content_length_is_completed_with_its_usage_on_the_org() {
    let setup = Setup {
        chatgpt: false,
        ..Setup::default()
    };
    json_answer_is_completed_with_usage(setup, "org").await;
}

#[tokio::test]
async fn a_json_answer_with_content_length_is_completed_with_its_usage_on_the_plan() {
    json_answer_is_completed_with_usage(Setup::default(), "chatgpt_plan").await;
}
