//! A bounded soak: 200 concurrent agents keep mixed requests going (streams,
//! JSON, API errors, HTML pages, resets, cut and stalled streams, refused
//! answers, cancels) for `SOAK_SECONDS` (default 100) against the real
//! sidecar in front of the fake upstream. Then: one exact ledger record per
//! request, `/metrics` agreeing with the ledger, nothing in flight, no
//! connection or task left once the sidecar stops, memory flat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

const AGENTS: usize = 200;

/// (kind, weight, outcome, status) of every request kind in the mix.
const MIX: [(&str, usize, &str, u64); 9] = [
    ("sse", 30, "completed", 200),
    ("json", 15, "completed", 200),
    ("cancel", 15, "client_cancelled", 200),
    ("apierr", 10, "failed", 400),
    ("reset", 10, "upstream_error", 200),
    ("html", 5, "upstream_error", 502),
    ("cut", 5, "upstream_error", 200),
    ("refuse", 5, "upstream_error", 502),
    ("stall", 5, "upstream_error", 200),
];

fn kind_of(n: usize) -> &'static str {
    let total: usize = MIX.iter().map(|m| m.1).sum();
    let mut at = n % total;
    for (kind, weight, _, _) in MIX {
        if at < weight {
            return kind;
        }
        at -= weight;
    }
    unreachable!()
}

fn script(s: &Seen, _n: usize) -> Reply {
    let kind = s.header("x-soak-kind").unwrap_or("sse").to_owned();
    let events = upstream::responses_stream(&["soak", " ", "test"], "gpt-5.4", (40, 8, 5, 1));
    let slow = |r: Reply| r.delay_each(Duration::from_millis(15));
    match kind.as_str() {
        "json" => Reply::json(
            200,
            r#"{"id":"resp_j","object":"response","model":"gpt-5.4","status":"completed","usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9}}"#,
        ),
        "cancel" => {
            let mut many = events[..2].to_vec();
            many.extend(std::iter::repeat_n(events[2].clone(), 60));
            Reply::sse(many).delay_each(Duration::from_millis(30))
        }
        "apierr" => Reply::json(
            400,
            r#"{"error":{"type":"invalid_request_error","code":"bad","message":"no","param":null}}"#,
        ),
        "reset" => slow(Reply::sse(events[..3].to_vec())).ending(End::Reset),
        "html" => Reply {
            headers: vec![("content-type".into(), "text/html".into())],
            ..Reply::json(502, "<html>bad gateway</html>")
        },
        "cut" => slow(Reply::sse(vec![
            events[..3].concat(),
            events[3][..30].to_owned(),
        ])),
        "refuse" => Reply::sse(vec![]).ending(End::ResetBeforeHead),
        "stall" => Reply::sse(events[..2].to_vec()).ending(End::Stall),
        _ => slow(Reply::sse(events)),
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The sum of every series of `name` in a scrape.
fn metric_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One agent (one Codex session): requests through the whole mix until
/// `stop`; returns (ledger id, kind) of every request it sent.
async fn agent(id: usize, base: String, stop: Arc<AtomicBool>) -> Vec<(String, &'static str)> {
    let c = client();
    let mut sent = Vec::new();
    let mut n = id;
    let session = format!("agent-{id}");
    while !stop.load(Ordering::Relaxed) {
        let kind = kind_of(n);
        n += 1;
        let mut req = post(&format!("{base}/v1/responses"), &session, BODY);
        req.headers_mut()
            .insert("x-soak-kind", http::HeaderValue::from_static(kind));
        let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
            .await
            .unwrap_or_else(|_| panic!("{session} {kind}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("{session} {kind}: {e}"));
        let request_id = resp.headers()["x-codex-sidecar-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let session = format!("{session} {kind} {request_id}");
        let mut body = resp.into_body();
        if kind == "cancel" {
            let first = body.frame().await;
            assert!(first.is_some(), "{session}: no first chunk");
            drop(body);
        } else {
            let got = tokio::time::timeout(Duration::from_secs(30), body.collect())
                .await
                .unwrap_or_else(|_| panic!("{session}: body did not end"));
            assert!(got.is_ok(), "{session}: the body broke: {got:?}");
        }
        sent.push((request_id, kind));
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_200_concurrent_mixed_streams_with_faults() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let up = FakeUpstream::start_with(
        Options {
            http1_only: true,
            ..Options::default()
        },
        script,
    )
    .await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut h = start(
        &up,
        Setup {
            extra: "[upstream]\nidle_timeout = \"2s\"\n[ledger]\nfsync = \"1s\"\n[server]\nmax_connections = 512\n".into(),
            ..Setup::default()
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = (0..AGENTS)
        .map(|id| tokio::spawn(agent(id, h.base.clone(), stop.clone())))
        .collect();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The fake upstream's log of requests is the test's, not the sidecar's, memory.
        up.seen.lock().unwrap().clear();
        samples.lock().unwrap().push(rss_bytes());
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for a in agents {
        sent.extend(a.await.unwrap());
    }
    let total = sent.len();
    eprintln!(
        "soak: {total} requests in {:?} from {AGENTS} agents",
        t0.elapsed()
    );
    assert!(total > AGENTS * 5, "too little load: {total}");

    // Exactly one record per request, with the outcome its kind must have.
    for _ in 0..1000 {
        if h.records().len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = h.records();
    assert_eq!(records.len(), total, "one record per request");
    let by_id: BTreeMap<&str, &serde_json::Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_id.len(), total, "ids are unique");
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (session, kind) in &sent {
        let r = by_id
            .get(session.as_str())
            .unwrap_or_else(|| panic!("{session}: no record"));
        let (_, _, outcome, status) = MIX.iter().find(|m| m.0 == *kind).unwrap();
        assert_eq!(r["outcome"], *outcome, "{session}: {r}");
        if *kind != "cancel" {
            assert_eq!(r["status"], *status, "{session}: {r}");
        }
        if *kind == "sse" {
            assert_eq!(r["usage"]["input"], 40, "{session}: exact usage");
        }
        *per_kind.entry(kind).or_default() += 1;
    }
    eprintln!("soak: per kind {per_kind:?}");

    // /metrics agrees with the ledger; nothing is in flight.
    let (_, scrape) = send(
        &client(),
        Request::get(format!("{}/metrics", h.admin()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let scrape = String::from_utf8_lossy(&scrape).into_owned();
    assert_eq!(
        metric_sum(&scrape, "codex_sidecar_requests_total"),
        total as f64
    );
    assert_eq!(
        metric_sum(&scrape, "codex_sidecar_ledger_records_total"),
        total as f64
    );
    assert_eq!(metric_sum(&scrape, "codex_sidecar_inflight_requests"), 0.0);
    for _ in 0..500 {
        if h.sidecar.app.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.sidecar.app.open_connections(),
        0,
        "agent connections left"
    );
    let pooled = up.open_connections.load(Ordering::SeqCst);
    assert!(
        pooled <= 64,
        "idle upstream connections beyond the pool: {pooled}"
    );

    // Memory: flat over the second half (allocator noise allowed).
    let samples = samples.lock().unwrap().clone();
    let second = &samples[samples.len() / 2..];
    let (lo, hi) = (*second.iter().min().unwrap(), *second.iter().max().unwrap());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak: RSS first {:.1} MiB, second half {:.1}..{:.1} MiB, last {:.1} MiB; samples {:?}",
        mib(samples[0]),
        mib(lo),
        mib(hi),
        mib(*samples.last().unwrap()),
        samples.iter().map(|b| mib(*b).round()).collect::<Vec<_>>()
    );
    assert!(
        second.last().unwrap().saturating_sub(second[0]) < 16 << 20 && hi - lo < 24 << 20,
        "RSS grew in the second half: {:?}",
        second.iter().map(|b| mib(*b)).collect::<Vec<_>>()
    );

    // Stopped, the sidecar leaves no task and no upstream connection behind.
    h.sidecar.shutdown();
    h.sidecar.wait().await;
    drop(h);
    for _ in 0..500 {
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if tasks <= tasks_before && up.open_connections.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        up.open_connections.load(Ordering::SeqCst),
        0,
        "upstream connections left open"
    );
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        tasks <= tasks_before,
        "tasks alive {tasks}, before the sidecar {tasks_before}"
    );
}
