//! The five things measured: the upstream itself, a byte relay (the floor for one more hop),
//! nginx, the sidecar, and Codex's own `responses-api-proxy`; each proxy run as a child process on loopback, started from
//! scratch in its own temporary directory, with the time from spawn to ready measured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::client::{Dest, LOCAL_TOKEN};
use crate::procfs::Tree;

/// The org API key the proxies attach and the upstream checks.
pub const API_KEY: &str = "sk-bench-0123456789abcdefghijklmnopqrstuvwxyz";
/// `authorization` of a direct connection (what the proxies put there).
const DIRECT_AUTH: &str = "Bearer sk-bench-0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Direct,
    Relay,
    Nginx,
    Sidecar,
    Codex,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Relay,
        Kind::Nginx,
        Kind::Sidecar,
        Kind::Codex,
    ];
    pub const PROXIES: [Kind; 4] = [Kind::Relay, Kind::Nginx, Kind::Sidecar, Kind::Codex];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Relay => "tcp-relay",
            Kind::Nginx => "nginx",
            Kind::Sidecar => "sidecar",
            Kind::Codex => "codex-proxy",
        }
    }
}

/// Where the programs are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub sidecar: PathBuf,
    pub nginx: PathBuf,
    pub nginx_conf: PathBuf,
    pub codex: PathBuf,
    /// A command the sidecar runs under (a profiler: `valgrind --tool=callgrind ...`).
    pub wrap_sidecar: Vec<String>,
    /// Extra environment for the sidecar (`TOKIO_WORKER_THREADS=1`, to compare runtimes).
    pub sidecar_env: Vec<(String, String)>,
}

pub struct Running {
    pub kind: Kind,
    /// Where the load goes.
    pub addr: SocketAddr,
    pub ready: Duration,
    child: Option<Child>,
    pub tree: Option<Tree>,
    // Kept for the child's lifetime (ledger, logs, nginx prefix).
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child with nothing from the harness's environment but PATH (no proxy variables, no
/// CODEX_SIDECAR_* settings) and a HOME of its own.
fn command(program: &Path, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    c
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio, String> {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .map_err(|e| format!("{name}: {e}"))
}

impl Running {
    /// Where the load goes: the org key straight to the upstream, else the local token.
    pub fn dest(&self) -> Dest {
        // The relay passes bytes through: the client holds the key, as with no proxy at all.
        let auth = if matches!(self.kind, Kind::Direct | Kind::Relay) {
            DIRECT_AUTH
        } else {
            LOCAL_TOKEN
        };
        Dest {
            addr: self.addr,
            auth,
        }
    }

    pub fn direct(upstream: SocketAddr) -> Running {
        Running {
            kind: Kind::Direct,
            addr: upstream,
            ready: Duration::ZERO,
            child: None,
            tree: None,
            _dir: None,
        }
    }

    /// Spawns the target in front of `upstream` and waits until it answers its readiness check.
    pub async fn spawn(kind: Kind, tools: &Tools, upstream: SocketAddr) -> Result<Running, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port()?;
        let addr = loopback(port);
        let (mut cmd, ready_at, ready_any_status) = match kind {
            Kind::Direct => return Ok(Running::direct(upstream)),
            Kind::Relay => {
                let exe = std::env::current_exe().map_err(|e| format!("tcp-relay: {e}"))?;
                let mut c = command(&exe, dir.path());
                c.arg("--relay")
                    .arg(addr.to_string())
                    .arg(upstream.to_string())
                    .stderr(log_file(dir.path(), "stderr.log")?);
                // No route of its own: any HTTP answer (the upstream's 404) means relaying.
                (c, addr, true)
            }
            Kind::Sidecar => {
                let admin = loopback(free_port()?);
                let mut c = match tools.wrap_sidecar.split_first() {
                    Some((program, args)) => {
                        let mut c = command(Path::new(program), dir.path());
                        c.args(args).arg(&tools.sidecar);
                        c
                    }
                    None => command(&tools.sidecar, dir.path()),
                };
                c.arg("serve")
                    .env("CODEX_SIDECAR_SERVER_LISTEN", addr.to_string())
                    .env("CODEX_SIDECAR_SERVER_ADMIN_LISTEN", admin.to_string())
                    .env("CODEX_SIDECAR_CHATGPT_ENABLED", "false")
                    .env(
                        "CODEX_SIDECAR_ORG_BASE_URL",
                        format!("http://{upstream}/v1"),
                    )
                    .env("CODEX_SIDECAR_LEDGER_PATH", dir.path().join("ledger.jsonl"))
                    .env("CODEX_SIDECAR_LOG_FORMAT", "json")
                    // The default cap (256) suits one agent; the open-stream tests need more,
                    // as many as nginx.conf's worker_connections.
                    .env("CODEX_SIDECAR_SERVER_MAX_CONNECTIONS", "32768")
                    .env("OPENAI_API_KEY", API_KEY)
                    .envs(tools.sidecar_env.iter().map(|(k, v)| (k, v)))
                    .stderr(log_file(dir.path(), "sidecar.log")?);
                (c, admin, false)
            }
            Kind::Nginx => {
                let conf = nginx_conf(tools, dir.path(), port, upstream)?;
                let mut c = command(&tools.nginx, dir.path());
                let mut globals = String::from("daemon off; master_process on;");
                if rustix::process::geteuid().is_root() {
                    // Workers would otherwise run as nobody, shut out of the 0700 prefix.
                    globals.push_str(" user root;");
                }
                c.arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(conf)
                    .arg("-g")
                    .arg(globals)
                    .stderr(log_file(dir.path(), "stderr.log")?);
                (c, addr, false)
            }
            Kind::Codex => {
                let mut c = command(&tools.codex, dir.path());
                c.arg("responses-api-proxy")
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--upstream-url")
                    .arg(format!("http://{upstream}/v1/responses"))
                    .env("CODEX_HOME", dir.path())
                    .stdin(Stdio::piped())
                    .stderr(log_file(dir.path(), "codex.log")?);
                // No readiness route: any HTTP answer (it sends 403 to GET) means serving.
                (c, addr, true)
            }
        };
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot start: {e}", kind.name()))?;
        if kind == Kind::Codex {
            // It reads the key from stdin, to the end.
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(API_KEY.as_bytes())
                    .await
                    .map_err(|e| format!("codex-proxy stdin: {e}"))?;
            }
        }
        let tree = child.id().map(|root| Tree { root });
        let mut running = Running {
            kind,
            addr,
            ready: Duration::ZERO,
            child: Some(child),
            tree,
            _dir: Some(dir),
        };
        let limit = spawned + Duration::from_secs(60);
        loop {
            if probe(ready_at, ready_any_status).await {
                running.ready = spawned.elapsed();
                return Ok(running);
            }
            if let Some(c) = running.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "{} exited during start-up: {status}{}",
                        kind.name(),
                        running.logs()
                    ));
                }
            }
            if Instant::now() > limit {
                return Err(format!(
                    "{} not ready after 60 s{}",
                    kind.name(),
                    running.logs()
                ));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// The tail of the target's logs, for error messages.
    fn logs(&self) -> String {
        let Some(dir) = self._dir.as_ref() else {
            return String::new();
        };
        let mut out = String::new();
        for name in ["sidecar.log", "error.log", "stderr.log", "codex.log"] {
            if let Ok(text) = std::fs::read_to_string(dir.path().join(name)) {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(600)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                if !tail.trim().is_empty() {
                    out.push_str(&format!("\n  {name}: {}", tail.trim()));
                }
            }
        }
        out
    }

    /// Stops the target: SIGTERM (nginx's master then stops its workers), SIGKILL after 30 s.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// GET /readyz answered with 200 (or with any HTTP status when `any_status`).
async fn probe(addr: SocketAddr, any_status: bool) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => got += n,
        }
    }
    buf.starts_with(b"HTTP/1.") && (any_status || &buf[9..12] == b"200")
}

/// benches/nginx.conf with this run's ports, prefix and key filled in.
fn nginx_conf(
    tools: &Tools,
    prefix: &Path,
    port: u16,
    upstream: SocketAddr,
) -> Result<PathBuf, String> {
    let template = std::fs::read_to_string(&tools.nginx_conf)
        .map_err(|e| format!("{}: {e}", tools.nginx_conf.display()))?;
    let conf = template
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@LISTEN@", &loopback(port).to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@API_KEY@", API_KEY);
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
