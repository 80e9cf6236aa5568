//! Broken upstreams, scripted in the fake upstream: refused connections,
//! resets before and after the headers, TLS failures, streams cut mid-event,
//! compressed or HTML answers, huge headers, a slow drip, keep-alive
//! connections closed by the upstream. Each: a clear error to the agent
//! (SPEC's error table, or `response.failed` once the stream started), one
//! exact ledger record, `upstream_errors_total{kind}` counting it, no panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

/// One test at a time: they read the process-wide `upstream_errors_total`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn events() -> Vec<String> {
    upstream::responses_stream(&["Hello", " world"], "gpt-5.4", (12, 0, 3, 0))
}

fn ok_stream() -> Reply {
    Reply::sse(events())
}

async fn upstream_errors(h: &Harness, kind: &str) -> u64 {
    let (_, body) = send(
        &client(),
        Request::get(format!("{}/metrics", h.admin()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let want = format!("codex_sidecar_upstream_errors_total{{kind=\"{kind}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends one streamed Responses request; returns status, body, the one new record.
async fn one(h: &Harness, session: &str) -> (u16, String, serde_json::Value) {
    let before = h.records().len();
    let (p, b) = tokio::time::timeout(
        Duration::from_secs(20),
        send(
            &client(),
            post(&format!("{}/v1/responses", h.base), session, BODY),
        ),
    )
    .await
    .expect("the sidecar must answer, not hang");
    let recs = h.wait_records(before + 1).await;
    assert_eq!(recs.len(), before + 1, "exactly one record: {recs:#?}");
    (
        p.status.as_u16(),
        String::from_utf8_lossy(&b).into_owned(),
        recs[before].clone(),
    )
}

fn outcome(r: &serde_json::Value) -> (&str, u64) {
    (
        r["outcome"].as_str().unwrap(),
        r["status"].as_u64().unwrap(),
    )
}

/// The JSON error of a sidecar answer.
fn error_of(body: &str) -> serde_json::Value {
    json(body.as_bytes())["error"].clone()
}

/// The `response.failed` event a stream ended with: its error object.
fn failed_event(body: &str) -> serde_json::Value {
    let (_, tail) = body
        .rsplit_once("event: response.failed\ndata: ")
        .unwrap_or_else(|| panic!("no response.failed at the end: {body:?}"));
    assert!(tail.ends_with("}\n\n"), "one whole event: {tail:?}");
    json(tail.trim_end().as_bytes())["response"]["error"].clone()
}

/// What the agent got before the sidecar's `response.failed` is bytes the
/// upstream sent (HTTP/2 may drop what a reset overtakes), then at most the
/// blank line that closes a broken event, so ours is read whole.
fn before_the_failure_is_a_prefix_of(body: &str, sent: &str) {
    let at = body.rfind("event: response.failed\n").unwrap();
    let before = &body[..at];
    assert!(
        before.is_empty() || before.ends_with("\n\n"),
        "ends at an event boundary: {before:?}"
    );
    let passed = if sent.starts_with(before) {
        before
    } else {
        before.trim_end_matches('\n')
    };
    assert!(sent.starts_with(passed), "only upstream bytes: {before:?}");
}

fn http1() -> Options {
    Options {
        http1_only: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn a_refused_connection_is_502_upstream_unreachable() {
    let _serial = SERIAL.lock().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            extra: format!(
                "[chatgpt]\nbase_url = \"https://127.0.0.1:{port}/backend-api/codex\"\n"
            ),
            ..Setup::default()
        },
    )
    .await;
    let before = upstream_errors(&h, "connect").await;
    let (status, body, r) = one(&h, "s").await;
    assert_eq!(status, 502);
    let e = error_of(&body);
    assert_eq!(e["type"], "upstream_unreachable");
    assert!(e["message"].as_str().unwrap().contains("connect"), "{e}");
    assert_eq!(outcome(&r), ("upstream_error", 502));
    assert_eq!(r["usage"], serde_json::Value::Null);
    assert_eq!(upstream_errors(&h, "connect").await, before + 1);
}

#[tokio::test]
async fn a_reset_before_the_answer_is_502_on_http1_and_http2() {
    let _serial = SERIAL.lock().await;
    for options in [Options::default(), http1()] {
        let up = FakeUpstream::start_with(options.clone(), |_, _| {
            ok_stream().ending(End::ResetBeforeHead)
        })
        .await;
        let h = start(&up, Setup::default()).await;
        let before = upstream_errors(&h, "reset").await;
        let (status, body, r) = one(&h, "s").await;
        assert_eq!(status, 502, "{options:?}: {body}");
        let e = error_of(&body);
        assert_eq!(e["type"], "upstream_unreachable", "{options:?}");
        assert!(
            e["message"].as_str().unwrap().contains("reset"),
            "{options:?}: {e}"
        );
        assert_eq!(outcome(&r), ("upstream_error", 502));
        assert_eq!(
            upstream_errors(&h, "reset").await,
            before + 1,
            "{options:?}"
        );
    }
}

#[tokio::test]
async fn a_reset_after_the_headers_ends_the_stream_with_response_failed() {
    let _serial = SERIAL.lock().await;
    for options in [Options::default(), http1()] {
        let first: Vec<String> = events()[..2].to_vec();
        let up = FakeUpstream::start_with(options.clone(), move |_, _| {
            Reply::sse(first.clone()).ending(End::Reset)
        })
        .await;
        let h = start(&up, Setup::default()).await;
        let before = upstream_errors(&h, "reset").await;
        let (status, body, r) = one(&h, "s").await;
        assert_eq!(status, 200, "the status was sent already");
        let e = failed_event(&body);
        before_the_failure_is_a_prefix_of(&body, &events()[..2].concat());
        assert_eq!(e["type"], "upstream_unreachable", "{options:?}");
        assert!(e["message"].as_str().unwrap().contains("broke off"), "{e}");
        assert_eq!(outcome(&r), ("upstream_error", 200));
        if body.contains("response.created") {
            assert_eq!(r["model"], "gpt-5.4", "learned from what passed");
        }
        assert_eq!(r["usage"], serde_json::Value::Null);
        assert_eq!(
            upstream_errors(&h, "reset").await,
            before + 1,
            "{options:?}"
        );
    }
}

#[tokio::test]
async fn tls_failures_are_502_and_say_what_is_wrong() {
    let _serial = SERIAL.lock().await;
    for (cert, says) in [
        (Cert::WrongHost, "not valid for name"),
        (Cert::Expired, "expired"),
        (Cert::UnknownCa, "UnknownIssuer"),
    ] {
        let up = FakeUpstream::start_with(
            Options {
                cert,
                ..Options::default()
            },
            |_, _| ok_stream(),
        )
        .await;
        let h = start(&up, Setup::default()).await;
        let before = upstream_errors(&h, "tls").await;
        let (status, body, r) = one(&h, "s").await;
        assert_eq!(status, 502, "{cert:?}");
        let e = error_of(&body);
        assert_eq!(e["type"], "upstream_unreachable");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("TLS"), "{cert:?}: {message}");
        assert!(
            message.to_lowercase().contains(&says.to_lowercase()),
            "{cert:?}: {message}"
        );
        assert_eq!(outcome(&r), ("upstream_error", 502));
        assert_eq!(upstream_errors(&h, "tls").await, before + 1, "{cert:?}");
        assert_eq!(up.count(), 0, "no request crossed a bad TLS session");
    }
}

#[tokio::test]
async fn a_stream_cut_mid_event_ends_with_a_whole_response_failed_event() {
    let _serial = SERIAL.lock().await;
    let all = events();
    let cut_at = all[..3].concat().len() + 20;
    let sent = all.concat()[..cut_at].to_owned();
    // Cut by a reset, and cut by a clean end of the body (HTTP/2 END_STREAM,
    // HTTP/1.1 last chunk) before response.completed.
    for (end, kind) in [(End::Reset, "reset"), (End::Finish, "protocol")] {
        for options in [Options::default(), http1()] {
            let sent2 = sent.clone();
            let end2 = end.clone();
            let up = FakeUpstream::start_with(options.clone(), move |_, _| {
                Reply::sse(vec![sent2.clone()]).ending(end2.clone())
            })
            .await;
            let h = start(&up, Setup::default()).await;
            let before = upstream_errors(&h, kind).await;
            let (status, body, r) = one(&h, "s").await;
            assert_eq!(status, 200);
            before_the_failure_is_a_prefix_of(&body, &sent);
            if matches!(end, End::Finish) {
                // Nothing lost: every byte, the broken event closed off, ours whole.
                assert_eq!(
                    &body[..sent.len() + 2],
                    format!("{sent}\n\n"),
                    "{options:?}"
                );
            }
            let e = failed_event(&body);
            assert_eq!(e["type"], "upstream_unreachable", "{end:?} {options:?}");
            assert_eq!(outcome(&r), ("upstream_error", 200), "{end:?} {options:?}");
            assert_eq!(r["usage"], serde_json::Value::Null);
            assert_eq!(
                upstream_errors(&h, kind).await,
                before + 1,
                "{end:?} {options:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_compressed_answer_although_identity_was_asked_is_502() {
    let _serial = SERIAL.lock().await;
    let up = FakeUpstream::start(|_, _| ok_stream().header("content-encoding", "gzip")).await;
    let h = start(&up, Setup::default()).await;
    let before = upstream_errors(&h, "protocol").await;
    let (status, body, r) = one(&h, "s").await;
    assert_eq!(up.requests()[0].header("accept-encoding"), Some("identity"));
    assert_eq!(status, 502);
    let e = error_of(&body);
    assert_eq!(e["type"], "upstream_unreachable");
    assert_eq!(e["code"], "upstream_invalid_response");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("content-encoding: gzip"),
        "{e}"
    );
    assert_eq!(outcome(&r), ("upstream_error", 502));
    assert_eq!(upstream_errors(&h, "protocol").await, before + 1);
}

#[tokio::test]
async fn a_200_html_page_is_502() {
    let _serial = SERIAL.lock().await;
    let up = FakeUpstream::start(|_, _| Reply {
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        ..Reply::json(200, "<html><body>Just a moment...</body></html>")
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let before = upstream_errors(&h, "protocol").await;
    let (status, body, r) = one(&h, "s").await;
    assert_eq!(status, 502);
    let e = error_of(&body);
    assert_eq!(e["type"], "upstream_unreachable");
    assert!(e["message"].as_str().unwrap().contains("HTML page"), "{e}");
    assert!(!body.contains("Just a moment"));
    assert_eq!(outcome(&r), ("upstream_error", 502));
    assert_eq!(upstream_errors(&h, "protocol").await, before + 1);
}

#[tokio::test]
async fn huge_response_headers_are_502_not_a_hang() {
    let _serial = SERIAL.lock().await;
    for options in [Options::default(), http1()] {
        let up = FakeUpstream::start_with(options.clone(), |_, _| {
            let mut r = ok_stream();
            for i in 0..40 {
                r = r.header(&format!("x-huge-{i}"), &"h".repeat(64 * 1024));
            }
            r
        })
        .await;
        let h = start(&up, Setup::default()).await;
        let before = upstream_errors(&h, "protocol").await;
        let (status, body, r) = one(&h, "s").await;
        assert_eq!(status, 502, "{options:?}: {}", &body[..body.len().min(300)]);
        assert_eq!(error_of(&body)["type"], "upstream_unreachable");
        assert_eq!(outcome(&r), ("upstream_error", 502));
        assert_eq!(
            upstream_errors(&h, "protocol").await,
            before + 1,
            "{options:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_drip_within_the_idle_timeout_passes() {
    let _serial = SERIAL.lock().await;
    // 3 s of drip, never silent for the 1 s idle_timeout.
    let whole = events().concat();
    let pieces: Vec<String> = whole
        .as_bytes()
        .chunks(whole.len() / 12 + 1)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(pieces.concat() == whole, "cut on char boundaries");
    let up = FakeUpstream::start(move |_, _| {
        Reply::sse(pieces.clone()).delay_each(Duration::from_millis(250))
    })
    .await;
    let h = start(
        &up,
        Setup {
            extra: "[upstream]\nidle_timeout = \"1s\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let before = upstream_errors(&h, "timeout").await;
    let t0 = std::time::Instant::now();
    let (status, body, r) = one(&h, "s").await;
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert_eq!(status, 200);
    assert_eq!(body, whole, "byte for byte");
    assert_eq!(outcome(&r), ("completed", 200));
    assert_eq!(r["usage"]["input"], 12);
    assert_eq!(upstream_errors(&h, "timeout").await, before);
}

#[tokio::test]
async fn keep_alive_connections_closed_by_the_upstream_fail_no_request() {
    let _serial = SERIAL.lock().await;
    for options in [
        Options {
            close_after_answer: true,
            ..Options::default()
        },
        Options {
            close_after_answer: true,
            http1_only: true,
            ..Options::default()
        },
    ] {
        let up = FakeUpstream::start_with(options.clone(), |_, _| ok_stream()).await;
        let h = start(&up, Setup::default()).await;
        for i in 0..20 {
            // Back to back, and with a pause that lets the close arrive first.
            if i % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (status, body, r) = one(&h, "s").await;
            assert_eq!(status, 200, "request {i} {options:?}: {body}");
            assert_eq!(outcome(&r), ("completed", 200), "request {i} {options:?}");
        }
        assert!(
            up.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 10,
            "the upstream really closed its connections"
        );
    }
}
