//! The proxy core end to end: a real sidecar (in-process, port 0) in front of
//! the fake TLS upstream, driven by a plain HTTP client. Routes, header rules,
//! billing sources, session pinning, errors, timeouts and CASES.md 1, 2, 3, 10, 14.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ok_stream() -> Reply {
    Reply::sse(upstream::responses_stream(
        &["Hello", " world"],
        "gpt-5.4",
        (1234, 1000, 56, 7),
    ))
}

#[tokio::test]
async fn chatgpt_session_goes_to_the_chatgpt_upstream_with_the_plan_credential() {
    let up = FakeUpstream::start(|_, _| {
        ok_stream()
            .header("set-cookie", "__cf_bm=x")
            .header("x-codex-turn-state", "ts-2")
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let req = Request::post(format!("{}/v1/responses?trace=1", h.base))
        .header("authorization", "Bearer local-agent-token")
        .header("cookie", "a=b")
        .header("chatgpt-account-id", "someone-else")
        .header("openai-organization", "org-evil")
        .header("openai-project", "proj-evil")
        .header("accept-encoding", "zstd,gzip")
        .header("session-id", "s-1")
        .header("thread-id", "t-1")
        .header("x-codex-turn-state", "ts-1")
        .header("x-codex-turn-metadata", r#"{"turn":1}"#)
        .header("originator", "codex_exec")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let (parts, body) = send(&c, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    assert_eq!(parts.headers["cache-control"], "no-cache");
    assert_eq!(parts.headers["x-accel-buffering"], "no");
    assert_eq!(parts.headers["x-codex-turn-state"], "ts-2");
    assert!(parts.headers.get("set-cookie").is_none());
    let request_id = parts.headers["x-codex-sidecar-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        body,
        Bytes::from(
            upstream::responses_stream(&["Hello", " world"], "gpt-5.4", (1234, 1000, 56, 7))
                .concat()
        )
    );

    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path_and_query, "/backend-api/codex/responses?trace=1");
    assert_eq!(
        s.header("authorization").unwrap(),
        format!("Bearer {}", h.access)
    );
    assert_eq!(s.header("chatgpt-account-id"), Some(ACCOUNT_ID));
    assert_eq!(s.header("accept-encoding"), Some("identity"));
    assert_eq!(s.header("cookie"), None);
    assert_eq!(s.header("openai-organization"), None);
    assert_eq!(s.header("openai-project"), None);
    assert_eq!(s.header("session-id"), Some("s-1"));
    assert_eq!(s.header("thread-id"), Some("t-1"));
    assert_eq!(s.header("x-codex-turn-state"), Some("ts-1"));
    assert_eq!(s.header("x-codex-turn-metadata"), Some(r#"{"turn":1}"#));
    assert_eq!(s.header("originator"), Some("codex_exec"));
    assert_eq!(s.body, Bytes::from_static(BODY.as_bytes()));
    assert_eq!(
        s.version,
        http::Version::HTTP_2,
        "HTTP/2 negotiated by ALPN"
    );

    let recs = h.wait_records(1).await;
    let r = &recs[0];
    assert_eq!(r["id"], request_id.as_str());
    assert_eq!(r["billing"], "chatgpt_plan");
    assert_eq!(r["ocu_billable"], false);
    assert_eq!(r["session"], "s-1");
    assert_eq!(r["route"], "responses");
    assert_eq!(r["model"], "gpt-5.4");
    assert_eq!(r["status"], 200);
    assert_eq!(r["outcome"], "completed");
    assert_eq!(
        r["usage"],
        serde_json::json!({"input": 1234, "cached_input": 1000, "output": 56, "reasoning": 7, "total": 1290})
    );
}

#[tokio::test]
async fn org_only_environment_goes_to_the_org_upstream_with_the_key() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            chatgpt: false,
            extra: "[org]\norganization = \"org-123\"\nproject = \"proj-9\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let (parts, _) = send(&c, post(&format!("{}/v1/responses", h.base), "s-org", BODY)).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-codex-sidecar-billing"], "org");
    let s = &up.requests()[0];
    assert_eq!(s.path_and_query, "/v1/responses");
    assert_eq!(
        s.header("authorization").unwrap(),
        format!("Bearer {ORG_KEY}")
    );
    assert_eq!(s.header("chatgpt-account-id"), None);
    assert_eq!(s.header("openai-organization"), Some("org-123"));
    assert_eq!(s.header("openai-project"), Some("proj-9"));
    let r = &h.wait_records(1).await[0];
    assert_eq!(
        (r["billing"].as_str(), r["ocu_billable"].as_bool()),
        (Some("org"), Some(true))
    );
}

#[tokio::test]
async fn every_route_maps_to_its_upstream_path() {
    let up = FakeUpstream::start(|s, _| {
        if s.path_and_query.contains("models") {
            Reply::json(200, r#"{"models":[]}"#)
        } else if s.path_and_query.contains("chat") {
            Reply::json(200, r#"{"id":"c1","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#)
        } else {
            Reply::json(200, r#"{"id":"r1","model":"gpt-5.4","output":[],"usage":{"input_tokens":10,"output_tokens":3,"total_tokens":13}}"#)
        }
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, _) = send(
        &c,
        post(&format!("{}/v1/responses/compact", h.base), "plan", BODY),
    )
    .await;
    assert_eq!(p.status, 200);
    let get = Request::get(format!("{}/v1/models?client_version=0.171.0", h.base))
        .header("session-id", "plan")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (p, b) = send(&c, get).await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, &br#"{"models":[]}"#[..]));
    // Chat Completions cannot run on the ChatGPT plan.
    let (p, b) = send(
        &c,
        post(&format!("{}/v1/chat/completions", h.base), "plan", "{}"),
    )
    .await;
    assert_eq!(p.status, 400);
    assert_eq!(json(&b)["error"]["type"], "unsupported_on_chatgpt_plan");
    let paths: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.path_and_query.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/backend-api/codex/responses/compact",
            "/backend-api/codex/models?client_version=0.171.0"
        ]
    );
    let recs = h.wait_records(3).await;
    assert_eq!(recs[0]["route"], "responses_compact");
    assert_eq!(recs[0]["usage"]["input"], 10);
    assert_eq!(recs[1]["route"], "models");
    assert_eq!(recs[2]["outcome"], "rejected");

    // On org, Chat Completions goes through and its usage is read.
    let up2 = FakeUpstream::start(|_, _| {
        Reply::json(200, r#"{"id":"c1","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#)
    })
    .await;
    let h2 = start(
        &up2,
        Setup {
            chatgpt: false,
            ..Setup::default()
        },
    )
    .await;
    let (p, _) = send(
        &c,
        post(&format!("{}/v1/chat/completions", h2.base), "o", "{}"),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(up2.requests()[0].path_and_query, "/v1/chat/completions");
    let r = &h2.wait_records(1).await[0];
    assert_eq!(
        r["usage"],
        serde_json::json!({"input": 5, "cached_input": 0, "output": 2, "reasoning": 0, "total": 7})
    );
}

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_proxy_requests_are_refused() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, b) = send(&c, post(&format!("{}/v1/embeddings", h.base), "x", "{}")).await;
    assert_eq!(p.status, 404);
    assert_eq!(json(&b)["error"]["type"], "route_not_found");
    let get = Request::get(format!("{}/v1/responses", h.base))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (p, b) = send(&c, get).await;
    assert_eq!(p.status, 405);
    assert_eq!(p.headers["allow"], "POST");
    assert_eq!(json(&b)["error"]["type"], "method_not_allowed");
    for target in [
        "http://evil.example/v1/responses",
        "http://127.0.0.1:1/v1/responses",
    ] {
        let answer = raw(h.sidecar.proxy_addr, &format!("POST {target} HTTP/1.1\r\nhost: evil.example\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("proxy_request_refused"), "{answer}");
    }
    let answer = raw(
        h.sidecar.proxy_addr,
        "CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    for path in [
        "/v1/../v1/responses",
        "/v1/responses/../models",
        "//v1/responses",
        "/v1/responses%2f..%2fmodels",
    ] {
        let answer = raw(h.sidecar.proxy_addr, &format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}")).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    // 404s never reached the route table: no records.
    assert!(h.records().is_empty());
}

#[tokio::test]
async fn a_session_stays_on_its_billing_source() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, _) = send(&c, post(&format!("{}/v1/responses", h.base), "first", BODY)).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    // Disconnect: the pinned session is told to start a new one; a new session runs on org.
    std::fs::remove_file(&h.auth_file).unwrap();
    h.sidecar.app.creds.reload();
    let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "first", BODY)).await;
    assert_eq!(p.status, 401);
    let e = json(&b);
    assert_eq!(e["error"]["type"], "chatgpt_disconnected");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("start a new session"));
    let (p, _) = send(
        &c,
        post(&format!("{}/v1/responses", h.base), "second", BODY),
    )
    .await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
    // Reconnect: the org session stays on org.
    write_chatgpt_auth(&h.auth_file, &h.access, ACCOUNT_ID);
    h.sidecar.app.creds.reload();
    let (p, _) = send(
        &c,
        post(&format!("{}/v1/responses", h.base), "second", BODY),
    )
    .await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "org");
    let (p, _) = send(&c, post(&format!("{}/v1/responses", h.base), "third", BODY)).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    // The session header spellings of older Codex versions count too.
    let req = Request::post(format!("{}/v1/responses", h.base))
        .header("session_id", "third")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let (p, _) = send(&c, req).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    let billing: Vec<(String, String)> = h
        .wait_records(6)
        .await
        .iter()
        .map(|r| {
            (
                r["session"].as_str().unwrap().to_owned(),
                r["billing"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        ("first", "chatgpt_plan"),
        ("first", "chatgpt_plan"),
        ("second", "org"),
        ("second", "org"),
        ("third", "chatgpt_plan"),
        ("third", "chatgpt_plan"),
    ];
    assert_eq!(billing, expect.map(|(a, b)| (a.to_owned(), b.to_owned())));
    // The same account is back: the first session resumes on its plan, and
    // /status no longer calls it disconnected.
    let state_of = |status: &serde_json::Value, id: &str| {
        status["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["state"].as_str().unwrap().to_owned())
    };
    let status = h.status().await;
    assert_eq!(state_of(&status, "first").as_deref(), Some("disconnected"));
    let (p, _) = send(&c, post(&format!("{}/v1/responses", h.base), "first", BODY)).await;
    assert_eq!(
        (p.status.as_u16(), &p.headers["x-codex-sidecar-billing"]),
        (200, &http::HeaderValue::from_static("chatgpt_plan"))
    );
    let status = h.status().await;
    assert_eq!(state_of(&status, "first").as_deref(), Some("active"));
}

#[tokio::test]
async fn no_credential_names_every_place_looked_at() {
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
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 503);
    let e = json(&b);
    assert_eq!(e["error"]["type"], "no_credential");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&h.auth_file.display().to_string())
            && m.contains(&h.org_file.display().to_string()),
        "{m}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn insecure_credential_files_are_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            org: false,
            ..Setup::default()
        },
    )
    .await;
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    h.sidecar.app.creds.reload();
    tokio::time::sleep(codex_sidecar::credentials::SETTLE + Duration::from_millis(100)).await;
    h.sidecar.app.creds.reload();
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "new", BODY),
    )
    .await;
    assert_eq!(p.status, 503);
    let m = json(&b)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        m.contains("mode 0644") && m.contains(&format!("chmod 600 {}", h.auth_file.display())),
        "{m}"
    );
    assert!(!m.contains(&h.access));
}

#[tokio::test]
async fn local_client_token_is_required_and_never_forwarded() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    write_secret(&token_file, "local-secret-token-123\n");
    let h = start(
        &up,
        Setup {
            extra: format!(
                "[server]\nclient_token_file = {:?}\n",
                token_file.display().to_string()
            ),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer local-secret-token-12"),
        Some("Basic local-secret-token-123"),
    ] {
        let mut b = Request::post(&url).header("session-id", "s");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let (p, body) = send(
            &c,
            b.body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap(),
        )
        .await;
        assert_eq!(p.status, 401, "{auth:?}");
        assert_eq!(json(&body)["error"]["type"], "unauthorized_client");
    }
    assert_eq!(up.count(), 0);
    let req = Request::post(&url)
        .header("session-id", "s")
        .header("authorization", "Bearer local-secret-token-123")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let (p, _) = send(&c, req).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        up.requests()[0].header("authorization").unwrap(),
        format!("Bearer {}", h.access)
    );
}

#[tokio::test]
async fn request_body_limit_is_enforced_while_streaming() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            extra: "[server]\nmax_request_body = \"1KiB\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let c = client();
    let big = format!(
        "{{\"model\":\"gpt-5.4\",\"input\":\"{}\"}}",
        "x".repeat(2000)
    );
    let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "s", &big)).await;
    assert_eq!(p.status, 413);
    assert_eq!(json(&b)["error"]["type"], "request_too_large");
    assert_eq!(up.count(), 0, "a declared oversize body never leaves");
    // Chunked, no content-length: cut off while streaming.
    let answer = raw(
        h.sidecar.proxy_addr,
        &format!("POST /v1/responses HTTP/1.1\r\nhost: x\r\nsession-id: s\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len()),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Within the limit: fine.
    let (p, _) = send(&c, post(&format!("{}/v1/responses", h.base), "s", BODY)).await;
    assert_eq!(p.status, 200);
}

#[tokio::test]
async fn first_byte_timeout_answers_504() {
    let up = FakeUpstream::start(|_, _| {
        let mut r = ok_stream();
        r.head_delay = Duration::from_secs(30);
        r
    })
    .await;
    let h = start(
        &up,
        Setup {
            extra: "[upstream]\nfirst_byte_timeout = \"300ms\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 504);
    assert_eq!(json(&b)["error"]["type"], "upstream_timeout");
    let r = &h.wait_records(1).await[0];
    assert_eq!(
        (r["outcome"].as_str(), r["status"].as_u64()),
        (Some("upstream_error"), Some(504))
    );
}

#[tokio::test]
async fn case_10_stalled_upstream_is_ended_by_the_idle_timeout() {
    let events = upstream::responses_stream(&["partial"], "gpt-5.4", (1, 0, 1, 0));
    let first_three: Vec<String> = events[..3].to_vec();
    let up =
        FakeUpstream::start(move |_, _| Reply::sse(first_three.clone()).ending(End::Stall)).await;
    let h = start(
        &up,
        Setup {
            extra: "[upstream]\nidle_timeout = \"400ms\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let (p, b) = tokio::time::timeout(
        Duration::from_secs(10),
        send(
            &client(),
            post(&format!("{}/v1/responses", h.base), "s", BODY),
        ),
    )
    .await
    .expect("the stream must end, not hang");
    assert_eq!(p.status, 200);
    let text = String::from_utf8(b.to_vec()).unwrap();
    assert!(
        text.starts_with(&events[..3].concat()),
        "the bytes before the stall pass unchanged"
    );
    let tail = &text[events[..3].concat().len()..];
    assert!(tail.starts_with("event: response.failed\ndata: "), "{tail}");
    assert!(tail.contains("\"code\":\"upstream_timeout\""), "{tail}");
    let r = &h.wait_records(1).await[0];
    assert_eq!(r["outcome"], "upstream_error");
    assert_eq!(r["usage"], serde_json::Value::Null);
    // The upstream connection was let go.
    for _ in 0..100 {
        if up.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.cancelled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn case_01_streams_are_not_buffered() {
    let events: Vec<String> = (0..5)
        .map(|i| format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"{i}\"}}\n\n"))
        .collect();
    let up = FakeUpstream::start(move |_, _| {
        Reply::sse(events.clone()).delay_each(Duration::from_millis(100))
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let (p, chunks) = send_timed(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.headers["cache-control"], "no-cache");
    assert_eq!(p.headers["x-accel-buffering"], "no");
    assert!(chunks.len() >= 5, "{} arrivals", chunks.len());
    let spread = chunks.last().unwrap().0 - chunks.first().unwrap().0;
    assert!(
        spread >= Duration::from_millis(380),
        "arrivals spread over {spread:?}"
    );
}

#[tokio::test]
async fn case_02_odd_framing_reaches_the_client_byte_for_byte() {
    let stream = upstream::responses_stream(&["héllo ", "wörld ✓"], "gpt-5.4", (11, 2, 3, 1))
        .concat()
        .replace('\n', "\r\n");
    let bytes = stream.as_bytes().to_vec();
    // Split inside "data:", inside a multibyte character, and between \r and \n.
    let mut cuts = vec![bytes.windows(5).position(|w| w == b"data:").unwrap() + 2];
    cuts.push(bytes.iter().position(|b| *b >= 0x80).unwrap() + 1);
    cuts.push(bytes.iter().position(|b| *b == b'\r').unwrap() + 1);
    cuts.push(bytes.len() - 3);
    cuts.sort();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push((
            Duration::from_millis(5),
            Bytes::copy_from_slice(&bytes[last..c]),
        ));
        last = c;
    }
    chunks.push((
        Duration::from_millis(5),
        Bytes::copy_from_slice(&bytes[last..]),
    ));
    let len = bytes.len();
    let up = FakeUpstream::start(move |_, _| Reply {
        status: 200,
        headers: vec![
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("content-length".into(), len.to_string()),
        ],
        chunks: chunks.clone(),
        end: End::Finish,
        head_delay: Duration::ZERO,
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(b.to_vec(), bytes);
    let r = &h.wait_records(1).await[0];
    assert_eq!(
        r["usage"],
        serde_json::json!({"input": 11, "cached_input": 2, "output": 3, "reasoning": 1, "total": 14})
    );
}

#[tokio::test]
async fn case_03_the_reader_never_hurts_the_stream() {
    let mut junk: Vec<u8> = b"event: response.created\ndata: {not json\n\n: a comment\n\nevent: brand.new.event\ndata: {\"x\":1}\n\ndata: [DONE]\n\n".to_vec();
    junk.extend_from_slice(&[0xff, 0xfe, 0x00, b'\n', b'\n']);
    junk.extend_from_slice(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":\"lots\"}}\n\n");
    let body = Bytes::from(junk);
    let b2 = body.clone();
    let up = FakeUpstream::start(move |_, _| Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        chunks: vec![
            (Duration::ZERO, b2.slice(..10)),
            (Duration::from_millis(5), b2.slice(10..)),
        ],
        end: End::Finish,
        head_delay: Duration::ZERO,
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let (p, got) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(got, body);
    let r = &h.wait_records(1).await[0];
    assert_eq!(r["usage"], serde_json::Value::Null, "never estimated");
}

#[tokio::test]
async fn case_14_error_pages_become_json_errors() {
    let up = FakeUpstream::start(|_, n| {
        let html = "<html><head><title>Attention Required! | Cloudflare</title></head><body>blocked</body></html>";
        let mut r = Reply::json(if n == 0 { 403 } else { 200 }, html);
        r.headers = vec![("content-type".into(), "text/html; charset=UTF-8".into())];
        r
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "s", BODY)).await;
    assert_eq!(p.status, 403);
    assert_eq!(p.headers["content-type"], "application/json");
    let e = json(&b);
    assert_eq!(e["error"]["type"], "upstream_error");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text/html"));
    let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "s", BODY)).await;
    assert_eq!(p.status, 502, "a 200 HTML page is not success");
    assert_eq!(json(&b)["error"]["code"], "upstream_invalid_response");
    let recs = h.wait_records(2).await;
    assert!(recs.iter().all(|r| r["outcome"] == "upstream_error"));
}

#[tokio::test]
async fn upstream_json_errors_pass_through_unchanged() {
    let body = r#"{"error":{"type":"invalid_request_error","code":"context_length_exceeded","message":"too long","param":"input"}}"#;
    let up = FakeUpstream::start(move |_, _| Reply::json(400, body)).await;
    let h = start(&up, Setup::default()).await;
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 400);
    assert_eq!(&b[..], body.as_bytes());
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    assert_eq!(h.wait_records(1).await[0]["outcome"], "failed");
}

#[tokio::test]
async fn unreachable_and_untrusted_upstreams_answer_502() {
    // Nothing listens on the port: connection refused.
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
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 502);
    let e = json(&b);
    assert_eq!(e["error"]["type"], "upstream_unreachable");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("connect"),
        "{e}"
    );
    // A certificate from an unknown CA: TLS failure, not a success.
    let h2 = start(
        &up,
        Setup {
            extra: "[upstream]\nca_file = \"\"\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let (p, b) = send(
        &client(),
        post(&format!("{}/v1/responses", h2.base), "s", BODY),
    )
    .await;
    assert_eq!(p.status, 502);
    assert!(
        json(&b)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TLS"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn healthz_and_readyz_answer_on_the_admin_listener() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    for path in ["/healthz", "/readyz"] {
        let (p, _) = send(
            &c,
            Request::get(format!("{}{path}", h.admin()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(p.status, 200, "{path}");
    }
}

/// HTTP/2 with prior knowledge (`curl --http2-prior-knowledge`) is served: its
/// `:scheme`/`:authority` are not an absolute-form proxy target.
#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let resp = h2
        .request(post(&format!("{}/v1/responses", h.base), "s", BODY))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-codex-sidecar-billing"], "chatgpt_plan");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("response.completed"));
    assert_eq!(up.count(), 1);
}
