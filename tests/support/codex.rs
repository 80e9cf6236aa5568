//! The reference client: the pinned Codex CLI run as `codex exec` (PROTOCOL.md §1).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

pub const LOCAL_TOKEN: &str = "local-agent-token-9c8b7a";

pub fn codex_bin() -> PathBuf {
    let p = std::env::var_os("CODEX_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex")
    });
    assert!(
        p.exists(),
        "the pinned Codex CLI is not installed at {}: run scripts/install-test-tools.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

pub struct CodexRun {
    pub success: bool,
    pub events: Vec<serde_json::Value>,
    pub stderr: String,
}

impl CodexRun {
    pub fn agent_messages(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
            .map(|e| e["item"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// `codex exec` against the sidecar at `base` (PROTOCOL.md §1).
pub async fn codex_exec(base: &str, prompt: &str) -> CodexRun {
    let home = tempfile::tempdir().unwrap();
    let provider = format!(
        "model_providers.sidecar={{name=\"Sidecar\",base_url=\"{base}/v1\",env_key=\"CODEX_SIDECAR_TOKEN\",wire_api=\"responses\"}}"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(codex_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CODEX_HOME", home.path())
            .env("CODEX_SIDECAR_TOKEN", LOCAL_TOKEN)
            .args([
                "exec",
                "--skip-git-repo-check",
                "--ephemeral",
                "--sandbox",
                "read-only",
                "--json",
            ])
            .args([
                "-c",
                "model_provider=sidecar",
                "-c",
                &provider,
                "-m",
                "gpt-5.4",
                prompt,
            ])
            .current_dir(home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("codex exec did not finish within 120s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    CodexRun {
        success: out.status.success(),
        events: stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
