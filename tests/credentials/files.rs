//! Credential files under change: swapped under load, loose permissions, the org key.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::support::auth::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_file_swapped_under_load_never_fails_a_request() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let tokens: Vec<String> = (0..6).map(|i| access_token(&format!("swap-{i}"))).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer: atomic replacements and in-place rewrites (truncate, half,
    // pause, rest), so polls catch empty and partial files.
    let writer = {
        let (path, tokens, stop) = (h.auth_file.clone(), tokens.clone(), stop.clone());
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = &tokens[k % tokens.len()];
                if k % 2 == 0 {
                    write_auth(&path, t, INITIAL_REFRESH);
                } else {
                    let text = serde_json::json!({"auth_mode": "chatgpt", "tokens": {"access_token": t,
                        "refresh_token": INITIAL_REFRESH, "account_id": ACCOUNT_ID, "id_token": id_token(ACCOUNT_ID, "plus")}})
                    .to_string();
                    let (a, b) = text.split_at(text.len() / 2);
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&path)
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    f.write_all(a.as_bytes()).unwrap();
                    f.flush().unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    f.write_all(b.as_bytes()).unwrap();
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            k
        })
    };
    // Reloads far more often than the 1 s poll, to hit every half-written state.
    let reloader = {
        let (app, stop) = (h.sidecar.app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.creds.reload();
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    let c = client();
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (c, base, stop) = (c.clone(), responses(&h), stop.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut s = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let session = format!("w{w}-s{s}");
                    for _ in 0..3 {
                        let (p, _) = send(&c, post(&base, &session, BODY)).await;
                        results.push((
                            session.clone(),
                            p.status.as_u16(),
                            p.headers["x-codex-sidecar-billing"]
                                .to_str()
                                .unwrap()
                                .to_owned(),
                        ));
                    }
                    s += 1;
                }
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = writer.await.unwrap();
    let reloads = reloader.await.unwrap();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    assert!(
        swaps >= 10 && reloads >= 50,
        "swaps {swaps}, reloads {reloads}"
    );
    assert!(results.len() >= 30, "only {} requests", results.len());
    let failed: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(results.iter().all(|r| r.2 == "chatgpt_plan"));
    // Never an empty or partial token: each one sent is a whole planted token.
    let mut valid: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    valid.push(format!("Bearer {}", h.access));
    for s in up.requests() {
        let a = s.header("authorization").unwrap();
        assert!(
            valid.iter().any(|v| v == a),
            "a partial or unknown token went out"
        );
        assert_eq!(s.header("chatgpt-account-id"), Some(ACCOUNT_ID));
    }
    // Every record is billed to the plan account its session started on.
    let recs = h.wait_records(results.len()).await;
    let account = codex_sidecar::ledger::AccountHash::of(ACCOUNT_ID);
    for r in &recs {
        assert_eq!(r["billing"], "chatgpt_plan");
        assert_eq!(r["status"], 200);
        assert_eq!(r["account"], account.as_str());
    }
    eprintln!(
        "{} requests over {swaps} file swaps and {reloads} reloads",
        results.len()
    );
}

#[tokio::test]
async fn loose_file_permissions_are_refused_then_fixed_without_a_restart() {
    let up = FakeUpstream::start(|_, _| ok_stream()).await;
    let h = start(&up, Setup::default()).await;
    let c = client();
    let (p, _) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&h.org_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    h.sidecar.app.creds.reload();
    // A good credential is kept through the settle time, then refused.
    let (p, _) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.status, 200);
    tokio::time::sleep(codex_sidecar::credentials::SETTLE + Duration::from_millis(100)).await;
    h.sidecar.app.creds.reload();
    let st = status_of(&h).await;
    let auth = h.auth_file.display().to_string();
    let org = h.org_file.display().to_string();
    assert_eq!(st["credentials"][0]["state"], "invalid");
    assert_eq!(st["credentials"][1]["state"], "invalid");
    let d0 = st["credentials"][0]["detail"].as_str().unwrap();
    let d1 = st["credentials"][1]["detail"].as_str().unwrap();
    assert!(
        d0.contains("mode 0644") && d0.contains(&format!("chmod 600 {auth}")),
        "{d0}"
    );
    assert!(
        d1.contains("mode 0640") && d1.contains(&format!("chmod 600 {org}")),
        "{d1}"
    );
    let (p, b) = send(&c, post_req(&h, "pinned")).await;
    assert_eq!(p.status, 401);
    assert_eq!(json(&b)["error"]["type"], "chatgpt_disconnected");
    let (p, b) = send(&c, post_req(&h, "new")).await;
    assert_eq!(p.status, 503);
    let m = json(&b)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        m.contains(&format!("chmod 600 {auth}")) && m.contains(&format!("chmod 600 {org}")),
        "{m}"
    );
    assert!(!m.contains(&h.access) && !m.contains(ORG_KEY));
    // Fixing the modes is picked up by the next reload.
    std::fs::set_permissions(&h.auth_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&h.org_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    h.sidecar.app.creds.reload();
    let st = status_of(&h).await;
    assert_eq!(st["credentials"][0]["state"], "connected");
    assert_eq!(st["credentials"][1]["state"], "connected");
    let (p, _) = send(&c, post_req(&h, "new")).await;
    assert_eq!(p.headers["x-codex-sidecar-billing"], "chatgpt_plan");
}

#[tokio::test]
async fn the_org_key_file_is_watched_too() {
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
    let c = client();
    let (p, _) = send(&c, post_req(&h, "a")).await;
    assert_eq!(p.status, 503);
    // The key file appears: the 1 s poll picks it up without a restart.
    write_secret(&h.org_file, &format!("{ORG_KEY}\n"));
    let mut status = 0;
    for _ in 0..150 {
        let (p, _) = send(&c, post_req(&h, "a")).await;
        status = p.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(
        up.requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap(),
        format!("Bearer {ORG_KEY}")
    );
    // A rotated key is used from the next poll on, by the same session.
    let rotated = "sk-org-rotated-0f0e0d0c0b0a";
    write_secret(&h.org_file, rotated);
    let mut sent = String::new();
    for _ in 0..150 {
        let (p, _) = send(&c, post_req(&h, "a")).await;
        assert_eq!(p.status, 200);
        sent = up
            .requests()
            .last()
            .unwrap()
            .header("authorization")
            .unwrap()
            .to_owned();
        if sent.ends_with(rotated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent, format!("Bearer {rotated}"));
}
