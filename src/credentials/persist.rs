//! Writing Codex's `auth.json` (refreshed tokens, device login): a temporary
//! file in the same directory, mode 0600, fsynced, then renamed over the old
//! one, so a reader (the sidecar's own poll, Codex) never sees a partial file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use zeroize::Zeroize;

use super::auth_file::ChatgptTokens;

/// Whether the sidecar may write the file: an owner-read-only file (0400) is
/// the operator's way of saying "do not touch it", so it is left alone.
pub fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o200 == 0)
}

/// What becomes of the fields of an existing file that are not the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Others {
    /// Kept (a refresh rewrites only what changed).
    Keep,
    /// Dropped (a new login replaces the whole file).
    Drop,
}

/// Writes the tokens as a Codex auth.json. `last_refresh` is set to `now` (RFC 3339).
pub fn write_auth_file(
    path: &Path,
    tokens: &ChatgptTokens,
    now: &str,
    others: Others,
) -> Result<(), String> {
    let existing = match others {
        Others::Keep => std::fs::read(path).ok(),
        Others::Drop => None,
    };
    let mut doc = match existing {
        Some(mut bytes) => {
            let parsed = serde_json::from_slice::<Value>(&bytes).ok();
            bytes.zeroize();
            match parsed {
                Some(Value::Object(m)) => m,
                Some(mut other) => {
                    wipe(&mut other);
                    Map::new()
                }
                None => Map::new(),
            }
        }
        None => Map::new(),
    };
    let mut t = match doc.remove("tokens") {
        Some(Value::Object(m)) => m,
        Some(mut other) => {
            wipe(&mut other);
            Map::new()
        }
        None => Map::new(),
    };
    let mut set = |k: &str, v: Value| {
        if let Some(mut old) = t.insert(k.to_owned(), v) {
            wipe(&mut old);
        }
    };
    set(
        "id_token",
        tokens
            .id_token
            .as_ref()
            .map_or(Value::Null, |s| json!(s.expose())),
    );
    set("access_token", json!(tokens.access_token.expose()));
    set(
        "refresh_token",
        tokens
            .refresh_token
            .as_ref()
            .map_or(Value::Null, |s| json!(s.expose())),
    );
    set("account_id", json!(tokens.account_id.expose()));
    doc.insert("auth_mode".into(), json!("chatgpt"));
    doc.entry("OPENAI_API_KEY").or_insert(Value::Null);
    doc.insert("tokens".into(), Value::Object(t));
    doc.insert("last_refresh".into(), json!(now));
    let mut doc = Value::Object(doc);
    let text = serde_json::to_vec_pretty(&doc);
    wipe(&mut doc);
    let mut text = text.map_err(|e| format!("cannot render the credential file: {e}"))?;
    let result = write_atomically(path, &text);
    text.zeroize();
    result
}

/// Overwrites every string in a JSON value before it is dropped (they may be tokens).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the directory {} ({e})", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".into());
    let mut rand = [0u8; 6];
    let _ = getrandom::fill(&mut rand);
    let suffix: String = rand.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "cannot write {} ({e}); check that its directory is writable by the sidecar's user",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::secret::Secret;
    use std::os::unix::fs::PermissionsExt;

    fn tokens(access: &str) -> ChatgptTokens {
        ChatgptTokens {
            access_token: Secret::new(access.into()),
            refresh_token: Some(Secret::new("rt-2".into())),
            id_token: None,
            account_id: Secret::new("acc-1".into()),
            expires_at: None,
            plan_type: None,
        }
    }

    #[test]
    fn writes_codex_format_mode_0600_keeping_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        std::fs::write(
            &p,
            r#"{"auth_mode":"chatgpt","OPENAI_API_KEY":null,"extra":7,"tokens":{"access_token":"old","refresh_token":"rt-1","account_id":"acc-1","id_token":"x"}}"#,
        )
        .unwrap();
        write_auth_file(&p, &tokens("new"), "2026-12-04T00:00:00Z", Others::Keep).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["extra"], 7);
        assert_eq!(v["auth_mode"], "chatgpt");
        assert_eq!(v["OPENAI_API_KEY"], Value::Null);
        assert_eq!(v["tokens"]["access_token"], "new");
        assert_eq!(v["tokens"]["refresh_token"], "rt-2");
        assert_eq!(v["tokens"]["account_id"], "acc-1");
        assert_eq!(v["tokens"]["id_token"], Value::Null);
        assert_eq!(v["last_refresh"], "2026-12-04T00:00:00Z");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            crate::credentials::auth_file::parse(&std::fs::read_to_string(&p).unwrap()).is_ok()
        );
    }

    #[test]
    fn creates_a_missing_file_and_directory_and_reports_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("codex").join("auth.json");
        write_auth_file(&p, &tokens("a"), "t", Others::Keep).unwrap();
        assert!(!is_read_only(&p));
        // A new login replaces the whole file.
        std::fs::write(&p, r#"{"OPENAI_API_KEY":"sk-old","extra":1}"#).unwrap();
        write_auth_file(&p, &tokens("b"), "t", Others::Drop).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["OPENAI_API_KEY"], Value::Null);
        assert!(v.get("extra").is_none());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(is_read_only(&p));
    }
}
