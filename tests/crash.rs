//! Ledger durability on the real binary: SIGKILL at a random moment during many
//! concurrent streams loses no record of a request whose client saw the end and
//! duplicates none; a ledger on a full disk keeps serving (or refuses with 503
//! when `ledger.required`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::process::{write_config, SidecarProcess};
use support::*;

/// A stream of six events, 15 ms apart: long enough that a kill lands inside many.
fn slow_stream() -> Reply {
    Reply::sse(upstream::responses_stream(
        &["one ", "two ", "three"],
        "gpt-5.4",
        (40, 8, 5, 2),
    ))
    .delay_each(Duration::from_millis(15))
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

/// Runs `clients` loops of requests (each its own session id) against `proxy`
/// until the sidecar dies; returns the sessions whose client saw the whole answer.
async fn load_until_killed(
    proxy: std::net::SocketAddr,
    round: usize,
    clients: usize,
    finished: Arc<Mutex<BTreeSet<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let finished = finished.clone();
            tokio::spawn(async move {
                let http = client();
                for n in 0.. {
                    let session = format!("r{round}-c{c}-n{n}");
                    let Ok(resp) = http
                        .request(post(
                            &format!("http://{proxy}/v1/responses"),
                            &session,
                            BODY,
                        ))
                        .await
                    else {
                        return; // the sidecar is gone
                    };
                    let Ok(body) = resp.into_body().collect().await else {
                        return; // cut mid-stream: the client did not see the end
                    };
                    let body = body.to_bytes();
                    if body.windows(18).any(|w| w == b"response.completed") {
                        finished.lock().unwrap().insert(session);
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_streams_loses_and_duplicates_no_record() {
    let up = FakeUpstream::start(|_, _| slow_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, ledger) = write_config(dir.path(), &up, true, "info", "");
    // The default group commit, not fsync per record: a process crash must lose
    // nothing even so, because every record is write(2)n before the answer ends.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("fsync = \"always\"", "fsync = \"1s\"");
    std::fs::write(&config, text).unwrap();

    let finished = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..3 {
        let sidecar = SidecarProcess::spawn(&config, &[]);
        let tasks = load_until_killed(sidecar.proxy, round, 24, finished.clone()).await;
        tokio::time::sleep(Duration::from_millis(400 + random_below(800))).await;
        sidecar.signal(rustix::process::Signal::KILL);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("a client hung after the sidecar was killed")
                .unwrap();
        }
        drop(sidecar);
    }
    // A restart repairs a torn last line, if the kill left one.
    let sidecar = SidecarProcess::spawn(&config, &[]);
    drop(sidecar);

    let text = std::fs::read_to_string(&ledger).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a torn line was left"
    );
    let mut per_session: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let r: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("ledger line {} does not parse ({e}): {line}", i + 1));
        assert!(
            ids.insert(r["id"].as_str().unwrap().to_owned()),
            "duplicate id on line {}",
            i + 1
        );
        *per_session
            .entry(r["session"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if r["outcome"] == "completed" {
            assert_eq!(
                r["usage"],
                serde_json::json!({"input": 40, "cached_input": 8, "output": 5, "reasoning": 2, "total": 45})
            );
        }
    }
    let finished = finished.lock().unwrap();
    eprintln!(
        "crash test: {} records, {} requests seen finished by their clients",
        per_session.len(),
        finished.len()
    );
    assert!(
        finished.len() >= 30,
        "too few finished requests to test anything: {}",
        finished.len()
    );
    for s in finished.iter() {
        assert_eq!(
            per_session.get(s),
            Some(&1),
            "session {s}: its client saw the end, so it has exactly one record"
        );
    }
    assert!(
        per_session.values().all(|&n| n == 1),
        "every request has at most one record"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codex-sidecar"))
        .args(["ledger", "verify", "--file"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledger verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scrape(h: &Harness) -> String {
    let req = Request::get(format!("{}/metrics", h.admin()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    String::from_utf8(send(&client(), req).await.1.to_vec()).unwrap()
}

fn on_dev_full(required: bool) -> Setup {
    Setup {
        chatgpt: false,
        extra: format!("[ledger]\npath = \"/dev/full\"\nrequired = {required}\n"),
        ..Setup::default()
    }
}

#[tokio::test]
async fn a_full_disk_counts_write_errors_and_keeps_serving() {
    let up = FakeUpstream::start(|_, _| slow_stream().delay_each(Duration::ZERO)).await;
    let h = start(&up, on_dev_full(false)).await;
    let c = client();
    for n in 0..3 {
        let (p, b) = send(&c, post(&format!("{}/v1/responses", h.base), "s", BODY)).await;
        assert_eq!(p.status, 200, "request {n} is served without a ledger");
        assert!(String::from_utf8_lossy(&b).contains("response.completed"));
    }
    // The metrics registry is shared by every sidecar in this test process, so
    // the counter is at least ours; /status below is this sidecar's own count.
    let metrics = scrape(&h).await;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("codex_sidecar_ledger_write_errors_total "))
        .unwrap_or_else(|| panic!("no write error counter: {metrics}"))
        .parse()
        .unwrap();
    assert!(errors >= 3.0, "{metrics}");
    let status = h.status().await;
    assert_eq!(status["ledger"]["errors"], 3, "{status:#}");
    assert_eq!(status["ledger"]["records"], 0, "{status:#}");
}

#[tokio::test]
async fn a_full_disk_with_ledger_required_refuses_with_503() {
    let up = FakeUpstream::start(|_, _| slow_stream().delay_each(Duration::ZERO)).await;
    let h = start(&up, on_dev_full(true)).await;
    let c = client();
    let url = format!("{}/v1/responses", h.base);
    // The first request learns that the ledger cannot be written...
    send(&c, post(&url, "s", BODY)).await;
    assert_eq!(up.count(), 1);
    // ...and from then on nothing goes upstream unrecorded.
    for _ in 0..3 {
        let (p, b) = send(&c, post(&url, "s", BODY)).await;
        assert_eq!(p.status, 503);
        let e = json(&b);
        assert_eq!(e["error"]["type"], "ledger_unavailable");
        assert_eq!(
            e["error"]["message"],
            "the billing ledger /dev/full cannot be written and ledger.required = true; free disk space or fix its permissions"
        );
    }
    assert_eq!(up.count(), 1, "refused requests never reach the upstream");
}
