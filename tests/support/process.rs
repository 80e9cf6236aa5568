//! The sidecar as a child process (the real binary), for what only a process
//! shows: signals, exit codes, logs on stderr, crash safety.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SidecarProcess {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Every stderr line so far (JSON logs).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl SidecarProcess {
    /// Starts `codex-sidecar serve --config <config>` and waits for its ready line.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> SidecarProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex-sidecar"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .env_remove("CODEX_SIDECAR_CONFIG")
            .env_remove("OPENAI_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "codex-sidecar ready" {
                        let _ = tx.send((
                            v["listen"].as_str().unwrap_or("").to_owned(),
                            v["admin"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                }
                l2.lock().unwrap().push(line);
            }
        });
        let (proxy, admin) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "sidecar did not become ready; stderr:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        SidecarProcess {
            child,
            proxy: proxy.parse().unwrap(),
            admin: admin.parse().unwrap(),
            logs,
        }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for the exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config for a child sidecar in front of `up` into `dir`; returns its path
/// and the ledger path. `extra` is appended (use sections not generated here, or
/// `[limits]`/`[events]`).
pub fn write_config(
    dir: &Path,
    up: &super::FakeUpstream,
    chatgpt: bool,
    log_level: &str,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let auth = dir.join("auth.json");
    let org = dir.join("org-key");
    if chatgpt {
        super::write_chatgpt_auth(&auth, &super::access_token("a"), super::ACCOUNT_ID);
    }
    super::write_secret(&org, super::ORG_KEY);
    let ledger = dir.join("state").join("ledger.jsonl");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n\
         [chatgpt]\nauth_file = {auth:?}\nbase_url = {cb:?}\n\
         [org]\napi_key_file = {org:?}\nbase_url = {ob:?}\n\
         [upstream]\nca_file = {ca:?}\n\
         [ledger]\npath = {ledger:?}\nfsync = \"always\"\n[log]\nformat = \"json\"\nlevel = {log_level:?}\n{extra}",
        auth = auth.display().to_string(),
        cb = up.base_url("/backend-api/codex"),
        org = org.display().to_string(),
        ob = up.base_url("/v1"),
        ca = up.ca_file.display().to_string(),
        ledger = ledger.display().to_string(),
    );
    let path = dir.join("codex-sidecar.toml");
    std::fs::write(&path, text).unwrap();
    (path, ledger)
}
