//! Hostile and broken clients, over raw TCP against the real sidecar
//! (in-process, port 0) in front of the fake TLS upstream: header limits
//! (431), the header read timeout, malformed HTTP, pipelining, abrupt
//! disconnects at every phase, and the connection cap (503).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tests run one at a time: some read process-wide gauges.
static GLOBAL_METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ok_stream() -> Reply {
    Reply::sse(upstream::responses_stream(
        &["Hello", " world"],
        "gpt-5.4",
        (12, 0, 3, 0),
    ))
}

/// Writes `request` and reads until the sidecar closes (or 5 s pass).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The JSON body of a raw HTTP/1.1 answer with a content-length.
fn body_json(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    json(body.as_bytes())
}

fn responses_request(session: &str, body: &str, extra_headers: &str) -> String {
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nsession-id: {session}\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn a_good_request_still_works(h: &Harness) {
    let answer = exchange(
        h.sidecar.proxy_addr,
        responses_request("good", BODY, "").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("response.completed"), "{answer}");
}

/// Sum of a gauge's series in a scrape of the admin listener.
async fn gauge_sum(h: &Harness, name: &str) -> f64 {
    let scrape = exchange(
        h.sidecar.admin_addr,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn oversized_request_heads_get_431_with_a_json_error() {
    let _serial = GLOBAL_METRICS.lock().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    // 101 headers: over the sidecar's limit of 100.
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(
        h.sidecar.proxy_addr,
        responses_request("s", BODY, &many).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    let e = body_json(&answer);
    assert_eq!(e["error"]["type"], "request_header_fields_too_large");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 100 headers"));
    // One 70 KiB header: over the 64 KiB of header bytes.
    let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let answer = exchange(
        h.sidecar.proxy_addr,
        responses_request("s", BODY, &big).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(
        body_json(&answer)["error"]["type"],
        "request_header_fields_too_large"
    );
    // Past the parser's hard caps (1024 headers, 256 KiB of head): hyper's own
    // bare 431, and the connection is closed.
    let flood: String = (0..2000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(
        h.sidecar.proxy_addr,
        responses_request("s", BODY, &flood).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let huge = format!("x-big: {}\r\n", "a".repeat(300 * 1024));
    let answer = exchange(
        h.sidecar.proxy_addr,
        responses_request("s", BODY, &huge).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(up.count(), 0, "nothing was forwarded");
    assert!(h.records().is_empty(), "refused before the route table");
    a_good_request_still_works(&h).await;
}

#[tokio::test(start_paused = true)]
async fn slow_clients_are_cut_by_the_header_read_timeout() {
    let _serial = GLOBAL_METRICS.lock().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    // Silent after connecting.
    let t0 = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(h.sidecar.proxy_addr).await.unwrap();
    let mut buf = Vec::new();
    silent.read_to_end(&mut buf).await.unwrap();
    let waited = t0.elapsed();
    assert!(buf.is_empty());
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "cut after {waited:?}"
    );
    // The same on the admin listener.
    let t0 = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(h.sidecar.admin_addr).await.unwrap();
    silent.read_to_end(&mut buf).await.unwrap();
    let waited = t0.elapsed();
    assert!(buf.is_empty());
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "admin cut after {waited:?}"
    );
    // Slowloris: one header line every 5 s is still cut 30 s after it began.
    let t0 = tokio::time::Instant::now();
    let mut slow = TcpStream::connect(h.sidecar.proxy_addr).await.unwrap();
    slow.write_all(b"POST /v1/responses HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if slow
            .write_all(format!("x-slow-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut one = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut one)).await
        {
            cut = true;
            break;
        }
    }
    let waited = t0.elapsed();
    assert!(cut, "the slow client was never cut");
    assert!(
        waited >= Duration::from_secs(30) && waited <= Duration::from_secs(36),
        "cut after {waited:?}"
    );
    eventually("connection slots freed", || {
        h.sidecar.app.open_connections() == 0
    })
    .await;
    assert!(h.records().is_empty());
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn malformed_http_is_answered_400_and_nothing_breaks() {
    let _serial = GLOBAL_METRICS.lock().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let bad: [(&[u8], &str); 7] = [
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400"),
        (
            b"POST /v1/responses HTTP/1.1\r\nhost x\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            "HTTP/1.1 400",
        ),
        (
            b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST /v1/respo\x00nses HTTP/1.1\r\nhost: x\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400"),
        (b"POST /v1/responses HTTP/7.0\r\nhost: x\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (request, want) in bad {
        let answer = exchange(h.sidecar.proxy_addr, request).await;
        assert!(
            answer.starts_with(want),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    // A URI longer than the parser takes.
    let long = format!(
        "GET /v1/models?{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "q".repeat(70_000)
    );
    let answer = exchange(h.sidecar.proxy_addr, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        h.records().is_empty(),
        "none of these reached the route table"
    );
    // Broken chunked framing inside a routed request's body: 400 if the
    // client still listens, one record, and no upstream error counted.
    let answer = exchange(
        h.sidecar.proxy_addr,
        b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nsession-id: chunky\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n",
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let r = &h.wait_records(1).await[0];
    assert_eq!(r["outcome"], "client_cancelled", "{r}");
    assert_eq!(r["session"], "chunky");
    a_good_request_still_works(&h).await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let _serial = GLOBAL_METRICS.lock().await;
    let up = FakeUpstream::start(|s, _| {
        let session = s.header("session-id").unwrap_or("-").to_owned();
        Reply::json(
            200,
            format!("{{\"object\":\"list\",\"data\":[],\"session\":\"{session}\"}}"),
        )
    })
    .await;
    let h = start(&up, Setup::default()).await;
    let mut pipeline = String::new();
    for i in 0..5 {
        let close = if i == 4 { "connection: close\r\n" } else { "" };
        if i % 2 == 0 {
            pipeline.push_str(&format!(
                "GET /v1/models HTTP/1.1\r\nhost: x\r\nsession-id: p{i}\r\n{close}\r\n"
            ));
        } else {
            pipeline.push_str(&format!(
                "POST /v1/responses HTTP/1.1\r\nhost: x\r\nsession-id: p{i}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{close}\r\n{BODY}",
                BODY.len()
            ));
        }
    }
    // All five in one write.
    let answer = exchange(h.sidecar.proxy_addr, pipeline.as_bytes()).await;
    let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 5, "{answer}");
    for (i, a) in answers.iter().enumerate() {
        assert!(a.starts_with("200"), "{a}");
        assert!(
            a.contains(&format!("\"session\":\"p{i}\"")),
            "answer {i}: {a}"
        );
    }
    let recs = h.wait_records(5).await;
    let sessions: Vec<&str> = recs
        .iter()
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, ["p0", "p1", "p2", "p3", "p4"]);
}

#[tokio::test]
async fn abrupt_disconnects_at_every_phase_leak_nothing_and_record_once() {
    let _serial = GLOBAL_METRICS.lock().await;
    // "slow-head": headers after 60 s; "stall": three events, then silence.
    let mut events = upstream::responses_stream(&["one"], "gpt-5.4", (50, 0, 1, 0));
    events.truncate(3);
    let up = FakeUpstream::start(move |s, _| match s.header("session-id") {
        Some("slow-head") => Reply {
            head_delay: Duration::from_secs(60),
            ..ok_stream()
        },
        Some("stall") => Reply::sse(events.clone()).ending(End::Stall),
        _ => ok_stream(),
    })
    .await;
    let h = start(&up, Setup::default()).await;
    a_good_request_still_works(&h).await;
    let baseline_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let addr = h.sidecar.proxy_addr;

    // 1. Before any byte, and 2. inside the request head: no record.
    drop(TcpStream::connect(addr).await.unwrap());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nsess")
        .await
        .unwrap();
    drop(s);
    // 3. Mid-body upload: 100 of the 1000 bytes announced.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nsession-id: upload\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'{'; 100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    // 4. Waiting for the upstream's headers.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(responses_request("slow-head", BODY, "").as_bytes())
        .await
        .unwrap();
    eventually("the upstream saw the slow request", || {
        up.requests()
            .iter()
            .any(|r| r.header("session-id") == Some("slow-head"))
    })
    .await;
    drop(s);
    // 5. Mid-stream, after the first events.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(responses_request("stall", BODY, "").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("response.output_item.added") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);

    let recs = h.wait_records(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recs_after = h.records();
    assert_eq!(
        recs_after.len(),
        4,
        "exactly one record each: {recs_after:#?}"
    );
    let mut got: Vec<(String, String)> = recs
        .iter()
        .skip(1)
        .map(|r| {
            (
                r["session"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("slow-head".to_owned(), "client_cancelled".to_owned()),
            ("stall".to_owned(), "client_cancelled".to_owned()),
            ("upload".to_owned(), "client_cancelled".to_owned()),
        ]
    );
    let stall = recs.iter().find(|r| r["session"] == "stall").unwrap();
    assert_eq!(stall["usage"], serde_json::Value::Null);
    eventually("the stalled upstream body was cancelled", || {
        up.cancelled.load(Ordering::SeqCst) >= 1
    })
    .await;
    eventually("connection slots freed", || {
        h.sidecar.app.open_connections() == 0
    })
    .await;
    assert_eq!(gauge_sum(&h, "codex_sidecar_inflight_requests").await, 0.0);
    for _ in 0..300 {
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive <= baseline_tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        alive <= baseline_tasks,
        "tasks alive {alive}, before the disconnects {baseline_tasks}"
    );
    a_good_request_still_works(&h).await;
}

#[tokio::test]
async fn connections_beyond_max_connections_get_a_clear_503() {
    let _serial = GLOBAL_METRICS.lock().await;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(
        &up,
        Setup {
            extra: "[server]\nmax_connections = 4\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let addr = h.sidecar.proxy_addr;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    eventually("four connections served", || {
        h.sidecar.app.open_connections() == 4
    })
    .await;
    let answer = exchange(addr, responses_request("s", BODY, "").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    let e = body_json(&answer);
    assert_eq!(e["error"]["type"], "too_many_connections");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_connections (4)"));
    assert_eq!(up.count(), 0);
    assert!(
        h.records().is_empty(),
        "refused before any request was read"
    );
    // A freed slot serves again.
    drop(idle.pop());
    eventually("a slot freed", || h.sidecar.app.open_connections() == 3).await;
    a_good_request_still_works(&h).await;
    assert_eq!(h.wait_records(1).await.len(), 1);
}

#[tokio::test]
async fn host_header_tricks_cannot_pick_the_upstream() {
    let _serial = GLOBAL_METRICS.lock().await;
    // HTTP/1.1 upstream: its `host` header shows where the sidecar connected.
    let up = FakeUpstream::start_with(
        Options {
            http1_only: true,
            ..Options::default()
        },
        |_, _| ok_stream(),
    )
    .await;
    let h = start(&up, Setup::default()).await;
    for tricks in [
        "host: evil.example\r\n",
        "host: evil.example:443\r\nx-forwarded-host: evil.example\r\nforwarded: host=evil.example\r\n",
        "host: 169.254.169.254\r\nx-original-url: http://169.254.169.254/latest/meta-data\r\n",
    ] {
        let request = format!(
            "POST /v1/responses HTTP/1.1\r\n{tricks}content-type: application/json\r\nsession-id: s\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let answer = exchange(h.sidecar.proxy_addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{tricks}: {answer}");
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 3, "all went to the configured upstream");
    for s in &seen {
        assert_eq!(
            s.header("host"),
            Some(format!("localhost:{}", up.addr.port()).as_str()),
            "the client's host is never forwarded"
        );
        assert_eq!(s.path_and_query, "/backend-api/codex/responses");
    }
}

#[tokio::test]
async fn http2_clients_get_the_same_limits_and_cancels_are_recorded_once() {
    let _serial = GLOBAL_METRICS.lock().await;
    let mut events = upstream::responses_stream(&["one"], "gpt-5.4", (50, 0, 1, 0));
    events.truncate(3);
    let up = FakeUpstream::start(move |s, _| match s.header("session-id") {
        Some("h2-stall") => Reply::sse(events.clone()).ending(End::Stall),
        _ => ok_stream(),
    })
    .await;
    let h = start(&up, Setup::default()).await;
    // h2c with prior knowledge, as an HTTP/2 client on loopback would speak.
    let c: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let url = format!("{}/v1/responses", h.base);
    let mut req = post(&url, "h2-big", BODY);
    for i in 0..101 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            http::HeaderValue::from_static("v"),
        );
    }
    let (p, b) = send(&c, req).await;
    assert_eq!(p.version, http::Version::HTTP_2);
    assert_eq!(p.status, 431);
    assert_eq!(json(&b)["error"]["type"], "request_header_fields_too_large");
    // Three streams on one connection: one completes, two are reset mid-stream.
    let (p, b) = send(&c, post(&url, "h2-ok", BODY)).await;
    assert_eq!(p.status, 200);
    assert!(String::from_utf8_lossy(&b).contains("response.completed"));
    for _ in 0..2 {
        let resp = c.request(post(&url, "h2-stall", BODY)).await.unwrap();
        let mut body = resp.into_body();
        use http_body_util::BodyExt;
        assert!(body.frame().await.unwrap().unwrap().is_data());
        drop(body);
    }
    let recs = h.wait_records(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.records().len(), 3, "one record each");
    let outcomes: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["session"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("h2-ok", "completed"),
            ("h2-stall", "client_cancelled"),
            ("h2-stall", "client_cancelled")
        ]
    );
    eventually("both stalled upstream bodies cancelled", || {
        up.cancelled.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(c);
    eventually("connection slots freed", || {
        h.sidecar.app.open_connections() == 0
    })
    .await;
    assert_eq!(gauge_sum(&h, "codex_sidecar_inflight_requests").await, 0.0);
}
