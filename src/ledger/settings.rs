//! What the ledger writer needs from `[ledger]`: where, how durable, when to rotate.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// File name of the live ledger inside the state directory.
pub const LEDGER_FILE_NAME: &str = "ledger.jsonl";

/// When written records are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fsync` (data only) after every record, before `append` returns.
    Always,
    /// Group commit: a background task syncs at most this often, when something was written.
    Every(Duration),
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// `"always"`, or a humantime duration (`"1s"`, `"250ms"`); a zero duration means `always`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("always") {
            return Ok(FsyncPolicy::Always);
        }
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => Ok(FsyncPolicy::Always),
            Ok(d) => Ok(FsyncPolicy::Every(d)),
            Err(e) => Err(format!(
                "ledger.fsync = {s:?}: expected \"always\" or a duration like \"1s\" ({e})"
            )),
        }
    }
}

/// The ledger writer's settings (validated `[ledger]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSettings {
    /// The live JSONL file; rotated files sit beside it as `<name>.1`, `<name>.2`, ….
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    /// Rotate before a record would make the live file larger than this (0: never rotate).
    pub rotate_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
    /// Refuse requests (503 `ledger_unavailable`) while the ledger cannot be written.
    pub required: bool,
}

impl Default for LedgerSettings {
    /// SPEC's defaults: `fsync = "1s"`, `rotate_bytes = "64MiB"`, `keep = 20`, `required = false`.
    fn default() -> Self {
        LedgerSettings {
            path: default_ledger_path(),
            fsync: FsyncPolicy::Every(Duration::from_secs(1)),
            rotate_bytes: 64 * 1024 * 1024,
            keep: 20,
            required: false,
        }
    }
}

/// The ledger file used when `ledger.path` is empty.
///
/// `$STATE_DIRECTORY/ledger.jsonl` (systemd's `StateDirectory=`; the first entry when it
/// lists several), else `$XDG_STATE_HOME/codex-sidecar/ledger.jsonl`, else
/// `./codex-sidecar-state/ledger.jsonl`. Empty variables count as unset.
pub fn default_ledger_path() -> PathBuf {
    default_ledger_path_from(
        std::env::var_os("STATE_DIRECTORY"),
        std::env::var_os("XDG_STATE_HOME"),
    )
}

fn default_ledger_path_from(state_dir: Option<OsString>, xdg_state: Option<OsString>) -> PathBuf {
    let state_dir = state_dir.and_then(|v| {
        // systemd joins several StateDirectory= entries with ':'.
        let first = v
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        (!first.is_empty()).then(|| PathBuf::from(first))
    });
    let dir = match (state_dir, xdg_state.filter(|v| !v.is_empty())) {
        (Some(d), _) => d,
        (None, Some(x)) => PathBuf::from(x).join("codex-sidecar"),
        (None, None) => PathBuf::from("codex-sidecar-state"),
    };
    dir.join(LEDGER_FILE_NAME)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_fsync_policies() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!(
            "1s".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Every(Duration::from_secs(1))
        );
        assert_eq!(
            "250ms".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Every(Duration::from_millis(250))
        );
        assert_eq!("0s".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert!(
            err.starts_with("ledger.fsync = \"sometimes\": expected \"always\""),
            "{err}"
        );
    }

    #[test]
    fn default_path_prefers_state_directory_then_xdg_then_cwd() {
        assert_eq!(
            default_ledger_path_from(Some("/var/lib/cs:/var/lib/other".into()), Some("/x".into())),
            PathBuf::from("/var/lib/cs/ledger.jsonl")
        );
        assert_eq!(
            default_ledger_path_from(Some("".into()), Some("/home/u/.local/state".into())),
            PathBuf::from("/home/u/.local/state/codex-sidecar/ledger.jsonl")
        );
        assert_eq!(
            default_ledger_path_from(None, Some("".into())),
            PathBuf::from("codex-sidecar-state/ledger.jsonl")
        );
    }
}
