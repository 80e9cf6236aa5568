//! The load generator's HTTP/1.1 client: one keep-alive connection per worker, Codex's
//! request headers and a realistic request body.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::upstream::{now_ns, STAMP};

/// What the agent sends the sidecar (the proxies replace it with the org key).
pub const LOCAL_TOKEN: &str = "Bearer local-bench-token";

/// Where the load goes and what it authenticates with.
#[derive(Clone, Copy, Debug)]
pub struct Dest {
    pub addr: SocketAddr,
    /// The org key when going direct, the local token through a proxy.
    pub auth: &'static str,
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: &'static str,
    session: String,
}

impl Conn {
    pub async fn open(dest: Dest, worker: usize) -> Result<Conn, String> {
        let Dest { addr, auth } = dest;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: addr.to_string(),
            auth,
            // One Codex thread per connection: the sidecar pins one session each.
            session: format!("0199a3c2-6f1e-7d40-9b8a-{worker:012x}"),
        })
    }

    fn request(&self, body: &Bytes) -> Result<Request<Full<Bytes>>, String> {
        Request::post("/v1/responses")
            .header("host", &self.host)
            .header("authorization", self.auth)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .header("originator", "codex_exec")
            .header("user-agent", "codex_exec/0.171.0 (Debian 12; x86_64) bench")
            .header("session-id", &self.session)
            .header("thread-id", &self.session)
            .header(
                "x-codex-turn-metadata",
                "{\"turn_id\":\"bench\",\"sandbox\":\"read-only\"}",
            )
            .body(Full::new(body.clone()))
            .map_err(|e| format!("request: {e}"))
    }

    /// Sends one request and reads the whole answer; the status must be 200.
    pub async fn call(&mut self, body: &Bytes) -> Result<usize, String> {
        let req = self.request(body)?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        Ok(bytes.len())
    }

    /// Sends a stream request and records, for every event that carries an emit time,
    /// arrival minus emit in nanoseconds.
    pub async fn stream(&mut self, body: &Bytes, delays: &mut Vec<u64>) -> Result<(), String> {
        let mut resp = self.start(body).await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = resp.frame().await {
            let frame = frame.map_err(|e| format!("stream broke: {e}"))?;
            let arrived = now_ns();
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                take_stamps(&mut pending, arrived, delays);
            }
        }
        Ok(())
    }

    /// Sends a request and returns the answer's body once the headers are in.
    pub async fn start(&mut self, body: &Bytes) -> Result<hyper::body::Incoming, String> {
        let req = self.request(body)?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        Ok(resp.into_body())
    }
}

/// Takes every complete event out of `pending`, recording the delay of those with a stamp.
fn take_stamps(pending: &mut Vec<u8>, arrived: u64, delays: &mut Vec<u64>) {
    let mut consumed = 0;
    while let Some(end) = memchr::memmem::find(&pending[consumed..], b"\n\n") {
        let event = &pending[consumed..consumed + end];
        if let Some(at) = memchr::memmem::find(event, STAMP) {
            let digits = &event[at + STAMP.len()..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            if let Some(emitted) = std::str::from_utf8(&digits[..len])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                delays.push(arrived.saturating_sub(emitted));
            }
        }
        consumed += end + 2;
    }
    pending.drain(..consumed);
}

/// A Codex-shaped request body of about 8 KiB (system prompt, a user turn, one tool), with
/// what the fake upstream should answer in `metadata.bench`.
pub fn request_body(bench: &str) -> Bytes {
    let instructions = "You are Codex, a coding agent running in a sandboxed workspace. \
        Keep edits small, explain what you changed, run the tests before you finish. "
        .repeat(48);
    let body = serde_json::json!({
        "model": "gpt-5.4",
        "stream": bench != "json",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": instructions}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Run the tests and fix what fails; café 🚀."}]}
        ],
        "tools": [{"type": "function", "name": "shell", "description": "Runs a shell command",
                   "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a3c2-6f1e-7d40-9b8a-3c5e2f1d0a47",
        "metadata": {"bench": bench},
    });
    Bytes::from(body.to_string())
}

/// Elapsed nanoseconds since `t`.
pub fn since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
