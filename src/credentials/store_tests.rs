//! The store's memory of tokens it knows better than the file: refreshed
//! tokens kept in memory over a read-only file, and tokens that failed for good.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn write(path: &Path, access: &str, refresh: &str) {
    let text = serde_json::json!({"auth_mode": "chatgpt",
        "tokens": {"access_token": access, "refresh_token": refresh, "account_id": "acc-1"}})
    .to_string();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn store(path: &Path) -> CredentialStore {
    CredentialStore::new(
        Sources {
            chatgpt_enabled: true,
            chatgpt_auth_file: Some(path.to_path_buf()),
            org_key_file: None,
            org_key_env: String::new(),
            organization: None,
            project: None,
        },
        Box::new(|_| None),
    )
}

fn current(s: &CredentialStore) -> Arc<ChatgptCred> {
    match s.chatgpt() {
        ChatgptStatus::Connected(c) => c,
        other => panic!("{}", other.state_name()),
    }
}

fn access(s: &CredentialStore) -> String {
    current(s).tokens.access_token.expose().to_owned()
}

fn refreshed(old: &ChatgptCred, access: &str, refresh: &str) -> ChatgptTokens {
    let mut t = old.tokens.clone();
    t.access_token = Secret::new(access.into());
    t.refresh_token = Some(Secret::new(refresh.into()));
    t
}

#[test]
fn in_memory_tokens_outlive_polls_of_the_unchanged_file_but_not_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.json");
    write(&p, "at-1", "rt-1");
    let s = store(&p);
    let old = current(&s);
    let r = s.install_refreshed(&old, refreshed(&old, "at-2", "rt-2"), |_| {
        Ok(Persisted::InMemory)
    });
    assert_eq!(r, Ok(Persisted::InMemory));
    s.reload();
    assert_eq!(access(&s), "at-2");
    // A second in-memory refresh still stands over the same old file.
    let mid = current(&s);
    s.install_refreshed(&mid, refreshed(&mid, "at-3", "rt-3"), |_| {
        Ok(Persisted::InMemory)
    })
    .unwrap();
    s.reload();
    assert_eq!(access(&s), "at-3");
    // A reconnect (other tokens in the file) wins.
    write(&p, "at-new", "rt-new");
    s.reload();
    assert_eq!(access(&s), "at-new");
}

#[test]
fn tokens_that_failed_for_good_stay_dead_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.json");
    write(&p, "at-1", "rt-1");
    let s = store(&p);
    let mut changes = s.subscribe();
    let old = current(&s);
    s.mark_needs_reconnect(&old);
    assert_eq!(s.chatgpt().state_name(), "needs_reconnect");
    assert_eq!(changes.try_recv().unwrap().to, "needs_reconnect");
    s.reload();
    assert_eq!(s.chatgpt().state_name(), "needs_reconnect");
    assert!(s.describe_sources().contains("must be reconnected"));
    write(&p, "at-2", "rt-2");
    s.reload();
    assert_eq!(access(&s), "at-2");
    // A stale failure (for tokens no longer current) changes nothing.
    s.mark_needs_reconnect(&old);
    assert_eq!(s.chatgpt().state_name(), "connected");
}

#[test]
fn a_disconnect_during_a_refresh_wins() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.json");
    write(&p, "at-1", "rt-1");
    let s = store(&p);
    let old = current(&s);
    std::fs::remove_file(&p).unwrap();
    s.reload();
    let mut persisted = false;
    let r = s.install_refreshed(&old, refreshed(&old, "at-2", "rt-2"), |_| {
        persisted = true;
        Ok(Persisted::Written)
    });
    assert!(r.is_err());
    assert!(!persisted, "nothing is written for a disconnected account");
    assert_eq!(s.chatgpt().state_name(), "disconnected");
    assert!(!p.exists());
}

#[test]
fn a_half_written_file_keeps_the_last_good_token_through_the_settle_time() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.json");
    write(&p, "at-1", "rt-1");
    let s = store(&p);
    let text = std::fs::read_to_string(&p).unwrap();
    for partial in ["", &text[..text.len() / 2]] {
        std::fs::write(&p, partial).unwrap();
        let t0 = std::time::Instant::now();
        s.reload_at(Some(t0));
        assert_eq!(access(&s), "at-1");
        s.reload_at(Some(t0 + SETTLE / 2));
        assert_eq!(access(&s), "at-1");
        s.reload_at(Some(t0 + SETTLE));
        let ChatgptStatus::Invalid(m) = s.chatgpt() else {
            panic!("{}", s.chatgpt().state_name())
        };
        assert!(m.contains("auth.json") && !m.contains("at-1"), "{m}");
        // Written out in full, it is connected again at once.
        write(&p, "at-1", "rt-1");
        s.reload_at(Some(t0 + SETTLE));
        assert_eq!(access(&s), "at-1");
    }
}
