//! Operations, on the real binary as a child process: the metrics scrape
//! (promtool), no new series from scanner traffic (CASES.md 13), graceful drain
//! on SIGTERM (CASES.md 11), SIGHUP reload, and the `check`, `status` and
//! `health` commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rustix::process::Signal;
use support::process::{write_config, SidecarProcess};
use support::*;

fn ok_stream() -> Reply {
    let reset = (codex_sidecar::time::unix_now() + 3600).to_string();
    Reply::sse(upstream::responses_stream(
        &["Hi"],
        "gpt-5.4",
        (10, 4, 2, 1),
    ))
    .header("x-codex-primary-used-percent", "42.5")
    .header("x-codex-primary-window-minutes", "300")
    .header("x-codex-primary-reset-at", &reset)
    .header("x-codex-secondary-used-percent", "7")
    .header("x-codex-secondary-window-minutes", "10080")
    .header("x-codex-secondary-reset-at", &reset)
}

async fn get(url: String) -> (u16, String) {
    let (p, b) = send(
        &client(),
        Request::get(url).body(Full::new(Bytes::new())).unwrap(),
    )
    .await;
    (p.status.as_u16(), String::from_utf8_lossy(&b).into_owned())
}

/// Metric series (name and labels) of a scrape, values dropped.
fn series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.rsplit_once(' ')
                .map(|(s, _)| s.to_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn metrics_pass_promtool_and_carry_every_spec_metric() {
    let up = FakeUpstream::start(|_, n| {
        if n == 1 {
            Reply::json(500, r#"{"error":{"type":"server_error","message":"boom"}}"#)
        } else {
            ok_stream()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "");
    let p = SidecarProcess::spawn(&cfg, &[]);
    let c = client();
    for _ in 0..3 {
        send(
            &c,
            post(&format!("http://{}/v1/responses", p.proxy), "s", BODY),
        )
        .await;
    }
    let (status, scrape) = get(format!("http://{}/metrics", p.admin)).await;
    assert_eq!(status, 200);
    // Counters the alerts take increase() of exist at 0 before their first event.
    for zero in [
        "codex_sidecar_ledger_records_total{billing=\"org\"} 0",
        "codex_sidecar_tokens_total{billing=\"org\",kind=\"reasoning\"} 0",
        "codex_sidecar_requests_total{route=\"models\",billing=\"org\",status=\"5xx\"} 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == zero),
            "missing {zero}:\n{scrape}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; scripts/install-test-tools.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let missing: Vec<&&str> = [
        "requests_total",
        "request_duration_seconds",
        "upstream_first_byte_seconds",
        "overhead_seconds",
        "inflight_requests",
        "tokens_total",
        "limit_events_total",
        "limit_state",
        "limit_used_percent",
        "limit_resets_at_seconds",
        "held_requests",
        "sessions",
        "credential_state",
        "credential_refresh_total",
        "upstream_errors_total",
        "ledger_records_total",
        "ledger_write_errors_total",
        "build_info",
    ]
    .iter()
    .filter(|name| !scrape.contains(&format!("# TYPE codex_sidecar_{name} ")))
    .collect();
    assert!(missing.is_empty(), "missing {missing:?}:\n{scrape}");
    assert!(scrape.contains(r#"codex_sidecar_requests_total{route="responses",billing="chatgpt_plan",status="2xx"} 2"#), "{scrape}");
    assert!(scrape.contains(r#"codex_sidecar_requests_total{route="responses",billing="chatgpt_plan",status="5xx"} 1"#), "{scrape}");
    assert!(
        scrape.contains(r#"codex_sidecar_tokens_total{billing="chatgpt_plan",kind="input"} 20"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            r#"codex_sidecar_limit_used_percent{billing="chatgpt_plan",window="primary"} 42.5"#
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            r#"codex_sidecar_credential_state{source="chatgpt_plan",state="connected"} 1"#
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"codex_sidecar_ledger_records_total{billing="chatgpt_plan"} 3"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(&format!(
            "codex_sidecar_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{scrape}"
    );
}

#[tokio::test]
async fn case_13_scanner_traffic_creates_no_new_series() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "");
    let p = SidecarProcess::spawn(&cfg, &[]);
    let c = client();
    // Warm up every label a normal request creates.
    send(
        &c,
        post(&format!("http://{}/v1/responses", p.proxy), "warm", BODY),
    )
    .await;
    let before = series(&get(format!("http://{}/metrics", p.admin)).await.1);
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    for i in 0..1000u32 {
        let path = format!(
            "/{:x}/{}/v1/{}",
            i.wrapping_mul(2_654_435_761),
            i % 7,
            "x".repeat((i % 13) as usize)
        );
        let req = Request::builder()
            .method(methods[(i % 6) as usize])
            .uri(format!("http://{}{path}?q={i}", p.proxy))
            .header("session-id", format!("scan-{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, _) = send(&c, req).await;
        assert_eq!(parts.status, 404);
    }
    let after = series(&get(format!("http://{}/metrics", p.admin)).await.1);
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(
        new.is_empty(),
        "new series after 1,000 scanner requests: {new:#?}"
    );
}

#[tokio::test]
async fn case_11_sigterm_lets_streams_finish_refuses_new_connections_and_exits_0() {
    let events: Vec<String> = upstream::responses_stream(
        &["a", "b", "c", "d", "e", "f", "g", "h"],
        "gpt-5.4",
        (5, 0, 8, 0),
    );
    let all = events.concat();
    let up = FakeUpstream::start(move |_, _| {
        Reply::sse(events.clone()).delay_each(Duration::from_millis(150))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, ledger) = write_config(dir.path(), &up, true, "info", "");
    let mut p = SidecarProcess::spawn(&cfg, &[]);
    let c = client();
    let resp = c
        .request(post(
            &format!("http://{}/v1/responses", p.proxy),
            "long",
            BODY,
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    p.signal(Signal::TERM);
    // Draining: /readyz turns 503 (the admin listener stays up), new connections are refused.
    let mut drained = false;
    for _ in 0..100 {
        if get(format!("http://{}/readyz", p.admin)).await.0 == 503 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(drained, "/readyz must turn 503 while draining");
    assert!(
        tokio::net::TcpStream::connect(p.proxy).await.is_err(),
        "new connections are refused while draining"
    );
    // The in-flight stream still finishes, byte for byte.
    let mut got = first.to_vec();
    while let Some(f) = body.frame().await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    assert_eq!(String::from_utf8(got).unwrap(), all);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("the sidecar exits once the stream is done");
    assert!(status.success(), "{status:?}\n{}", p.logs());
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["outcome"], "completed");
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let up = FakeUpstream::start(|_, _| {
        Reply::sse(upstream::responses_stream(&["a"], "gpt-5.4", (1, 0, 1, 0))[..2].to_vec())
            .ending(End::Stall)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "[events]\nurl = \"\"\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"60s\"");
    std::fs::write(&cfg, text).unwrap();
    let mut p = SidecarProcess::spawn(&cfg, &[]);
    let c = client();
    let resp = c
        .request(post(
            &format!("http://{}/v1/responses", p.proxy),
            "stuck",
            BODY,
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    p.signal(Signal::TERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the first signal waits for the stream"
    );
    let t = Instant::now();
    p.signal(Signal::TERM);
    p.wait_exit(Duration::from_secs(5))
        .expect("the second signal exits at once");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn sighup_applies_the_organization_policy_without_a_restart() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "");
    let p = SidecarProcess::spawn(&cfg, &[]);
    let c = client();
    let (parts, _) = send(
        &c,
        post(&format!("http://{}/v1/responses", p.proxy), "before", BODY),
    )
    .await;
    assert_eq!(parts.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replace("[chatgpt]\n", "[chatgpt]\nenabled = false\n")
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"20s\"");
    std::fs::write(&cfg, text).unwrap();
    p.signal(Signal::HUP);
    let mut disabled = false;
    for _ in 0..100 {
        let status: serde_json::Value =
            serde_json::from_str(&get(format!("http://{}/status", p.admin)).await.1).unwrap();
        if status["credentials"][0]["state"] == "disabled" {
            disabled = true;
            assert!(status["credentials"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("organization"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(disabled, "SIGHUP must apply chatgpt.enabled = false");
    let (parts, _) = send(
        &c,
        post(&format!("http://{}/v1/responses", p.proxy), "after", BODY),
    )
    .await;
    assert_eq!(parts.headers["x-codex-sidecar-billing"], "org");
    let (parts, body) = send(
        &c,
        post(&format!("http://{}/v1/responses", p.proxy), "before", BODY),
    )
    .await;
    assert_eq!(
        parts.status,
        401,
        "the pinned session is told, not moved: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(json(&body)["error"]["type"], "chatgpt_disconnected");
    let logs = p.logs();
    assert!(
        logs.contains("need a restart") && logs.contains("server.shutdown_grace")
            || logs.contains("not applied"),
        "{logs}"
    );
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex-sidecar"));
    cmd.args(args)
        .env_remove("CODEX_SIDECAR_CONFIG")
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_and_health_commands() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "");
    let p = SidecarProcess::spawn(&cfg, &[]);
    send(
        &client(),
        post(&format!("http://{}/v1/responses", p.proxy), "sess-1", BODY),
    )
    .await;
    let admin = format!("http://{}", p.admin);
    let (code, out, err) = run_cli(&["status", "--admin", &admin], &[]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "codex-sidecar 0.1.0",
        "Credentials",
        "chatgpt_plan  connected  plan plus",
        "Limits",
        "primary",
        "42.5%",
        "Sessions",
        "sess-1",
        "Ledger",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, out, _) = run_cli(&["status", "--admin", &admin, "--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"][0]["id"], "sess-1");
    assert_eq!(run_cli(&["health", "--admin", &admin], &[]).0, 0);
    // Without --admin, the admin listener comes from the config: the file, or the
    // environment (the container's HEALTHCHECK has only `codex-sidecar health`).
    let moved = p.admin.to_string();
    let (code, _, err) = run_cli(
        &["health"],
        &[("CODEX_SIDECAR_SERVER_ADMIN_LISTEN", &moved)],
    );
    assert_eq!(code, 0, "{err}");
    let cfg_moved = dir.path().join("moved.toml");
    std::fs::write(&cfg_moved, format!("[server]\nadmin_listen = {moved:?}\n")).unwrap();
    let (code, out, err) = run_cli(
        &["status", "--json"],
        &[("CODEX_SIDECAR_CONFIG", cfg_moved.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"sess-1\""), "{out}");
    let unspecified = format!("0.0.0.0:{}", p.admin.port());
    let (code, _, err) = run_cli(
        &["health"],
        &[("CODEX_SIDECAR_SERVER_ADMIN_LISTEN", &unspecified)],
    );
    assert_eq!(code, 0, "0.0.0.0 is reached on loopback: {err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, err) = run_cli(&["health", "--admin", &format!("http://{closed}")], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unhealthy") && err.contains("is it running?"),
        "{err}"
    );
}

#[test]
fn check_names_every_problem_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"0.0.0.0:7800\"\n[upstream]\nidle_timeout = \"forever\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("server.listen") && err.contains("upstream.idle_timeout"),
        "{err}"
    );
    // An empty CODEX_SIDECAR_CONFIG is "not set": the embedded defaults.
    let (code, out, err) = run_cli(
        &["check"],
        &[("CODEX_SIDECAR_CONFIG", ""), ("OPENAI_API_KEY", "sk-env-x")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:7800\""), "{out}");
    let (code, _, err) = run_cli(&["check"], &[]);
    assert_eq!(code, 1, "nothing usable is a problem");
    assert!(
        err.contains(
            "problem: no usable credential: requests would get 503 no_credential. Looked at:"
        ),
        "{err}"
    );
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "[org]\napi_key_file = \"/nonexistent/org-key\"\n").unwrap();
    let (code, _, err) = run_cli(
        &["check", "--config", missing.to_str().unwrap()],
        &[("OPENAI_API_KEY", "sk-env-x")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("org.api_key_file /nonexistent/org-key: does not exist"),
        "{err}"
    );
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[ledger]\nrotate = \"1MiB\"\n").unwrap();
    let (code, _, err) = run_cli(&["check", "--config", unknown.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown key `rotate` in [ledger]"), "{err}");

    let key = dir.path().join("org-key");
    write_secret(&key, ORG_KEY);
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("[org]\napi_key_file = {:?}\n", key.display().to_string()),
    )
    .unwrap();
    let (code, out, err) = run_cli(
        &["check", "--config", good.to_str().unwrap()],
        &[("OPENAI_API_KEY", "sk-env-should-not-print")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[server]") && out.contains("listen = \"127.0.0.1:7800\""),
        "{out}"
    );
    assert!(out.contains("org: connected"), "{out}");
    assert!(
        !out.contains(ORG_KEY) && !err.contains(ORG_KEY) && !out.contains("sk-env"),
        "{out}{err}"
    );
    // A credential file others can read is a problem with its fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = run_cli(&["check", "--config", good.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

/// An unusable credential is said at start, with its fix, not only to the first
/// requests; an empty key file is unusable, never an empty `Bearer`.
#[tokio::test]
async fn unusable_credentials_are_reported_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, false, "info", "");
    let key = dir.path().join("org-key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = SidecarProcess::spawn(&cfg, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !p.logs().contains("no usable credential yet") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = p.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("credential unusable"))
        .unwrap_or_else(|| panic!("no warning at start:\n{logs}"));
    assert!(
        line.contains(&format!("chmod 600 {}", key.display())),
        "{line}"
    );
    assert!(logs.contains("no usable credential yet"), "{logs}");
    drop(p);

    write_secret(&key, "\n");
    let (code, _, err) = run_cli(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("org key from file {}: is empty", key.display())),
        "{err}"
    );
    let p = SidecarProcess::spawn(&cfg, &[]);
    let (s, b) = send(
        &client(),
        post(&format!("http://{}/v1/responses", p.proxy), "s", BODY),
    )
    .await;
    assert_eq!(s.status, 503);
    assert!(
        String::from_utf8_lossy(&b).contains("is empty"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(up.count(), 0, "an empty key never goes upstream");
}

/// A connection opened and never used (an HTTP client's spare) holds no request:
/// SIGTERM's drain does not wait the 30 s header timeout for it.
#[tokio::test]
async fn a_silent_connection_does_not_hold_the_drain() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), &up, true, "info", "");
    let mut p = SidecarProcess::spawn(&cfg, &[]);
    let silent = tokio::net::TcpStream::connect(p.proxy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    p.signal(rustix::process::Signal::TERM);
    let exit = p.wait_exit(Duration::from_secs(8));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", p.logs());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(silent);
}
