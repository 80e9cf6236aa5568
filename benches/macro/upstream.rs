//! The fast local upstream: plain HTTP/1.1 on loopback, answering a non-streamed JSON
//! Responses body, or an SSE stream of N events that carry the time they were emitted.
//!
//! What to answer is in the request body's `metadata.bench` (every proxy forwards the body
//! untouched): `json`, `sse:<events>:<interval µs>`, or `hold` (one event, then silence
//! until [`Upstream::release`], then the rest: an open stream for the memory test).
//! Every request must carry the org key; the upstream counts those that do not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The clock both ends of a stream read: the upstream and the client share this process.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The marker a delta event carries its emit time behind (in the `obfuscation` field,
/// which the API fills with random padding anyway).
pub const STAMP: &[u8] = b"\"obfuscation\":\"t";

pub struct Upstream {
    pub addr: SocketAddr,
    /// Open (true) lets held streams finish; closed, new ones wait.
    gate: watch::Sender<bool>,
    /// Held streams now waiting at the gate.
    pub held: Arc<AtomicU64>,
    /// Requests whose `authorization` was not the org key (a proxy that lost the credential).
    pub wrong_auth: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
}

impl Upstream {
    pub async fn start(expected_auth: String) -> Result<Upstream, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("upstream: cannot bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("upstream: no local address: {e}"))?;
        let (gate, _) = watch::channel(false);
        let up = Upstream {
            addr,
            gate,
            held: Arc::new(AtomicU64::new(0)),
            wrong_auth: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let ctx = Arc::new(Ctx {
            expected_auth,
            gate: up.gate.subscribe(),
            held: up.held.clone(),
            wrong_auth: up.wrong_auth.clone(),
            requests: up.requests.clone(),
        });
        tokio::spawn(accept_loop(listener, ctx));
        Ok(up)
    }

    /// Lets every held stream finish, and those that arrive later too, until [`Upstream::close`].
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    /// Held streams wait again.
    pub fn close(&self) {
        self.gate.send_replace(false);
    }
}

struct Ctx {
    expected_auth: String,
    gate: watch::Receiver<bool>,
    held: Arc<AtomicU64>,
    wrong_auth: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors under the open-streams test: back off, keep serving the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(ctx.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

async fn answer(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    let auth_ok = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == ctx.expected_auth.as_bytes());
    if !auth_ok {
        ctx.wrong_auth.fetch_add(1, Ordering::Relaxed);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mode = bench_mode(&body);
    let reply = match mode.as_deref() {
        Some("json") | None => json_reply(),
        Some("hold") => sse_reply(
            8,
            Duration::ZERO,
            Some((ctx.gate.clone(), ctx.held.clone())),
        ),
        Some(spec) => {
            let mut parts = spec
                .split(':')
                .skip(1)
                .map(|p| p.parse::<u64>().unwrap_or(0));
            let events = parts.next().unwrap_or(10).clamp(1, 100_000) as usize;
            let interval = Duration::from_micros(parts.next().unwrap_or(0).min(1_000_000));
            sse_reply(events, interval, None)
        }
    };
    Ok(reply)
}

/// The value of `"bench":"..."` in the request body.
fn bench_mode(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"bench\":\"";
    let start = memchr::memmem::find(body, KEY)? + KEY.len();
    let len = memchr::memchr(b'"', &body[start..])?;
    Some(String::from_utf8_lossy(&body[start..start + len]).into_owned())
}

fn json_reply() -> Reply {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    let body = BODY
        .get_or_init(|| Bytes::from(codex_sidecar::tap::fixtures::responses_json()))
        .clone();
    let mut r = Response::new(Full::new(body).boxed());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    h.insert("x-request-id", http::HeaderValue::from_static("req_bench"));
    r
}

type Hold = (watch::Receiver<bool>, Arc<AtomicU64>);

fn sse_reply(events: usize, interval: Duration, hold: Option<Hold>) -> Reply {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(play(tx, events, interval, hold));
    let mut r = Response::new(ChannelBody { rx }.boxed());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert("x-request-id", http::HeaderValue::from_static("req_bench"));
    r
}

const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_bench\",\"object\":\"response\",\"created_at\":1764000000,\"status\":\"in_progress\",\"model\":\"gpt-5.4\",\"output\":[],\"usage\":null}}\n\n";
const ADDED: &str = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"msg_bench\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n";
const WORDS: [&str; 8] = [
    " the",
    " stream",
    " is",
    " never",
    " buffered",
    ",",
    " café",
    " 🚀",
];

fn delta(seq: usize) -> Bytes {
    let word = WORDS[seq % WORDS.len()];
    Bytes::from(format!(
        "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{},\"item_id\":\"msg_bench\",\"output_index\":0,\"content_index\":0,\"delta\":\"{word}\",\"logprobs\":[],\"obfuscation\":\"t{}\"}}\n\n",
        seq + 2,
        now_ns()
    ))
}

fn completed(seq: usize) -> Bytes {
    Bytes::from(format!(
        "event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":{},\"output_index\":0,\"item\":{{\"id\":\"msg_bench\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{{\"type\":\"output_text\",\"annotations\":[],\"text\":\"…\"}}],\"role\":\"assistant\"}}}}\n\n\
event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":{},\"response\":{{\"id\":\"resp_bench\",\"object\":\"response\",\"created_at\":1764000000,\"status\":\"completed\",\"model\":\"gpt-5.4\",\"output\":[],\"usage\":{{\"input_tokens\":48213,\"input_tokens_details\":{{\"cached_tokens\":40960}},\"output_tokens\":3517,\"output_tokens_details\":{{\"reasoning_tokens\":1216}},\"total_tokens\":51730}}}}}}\n\n",
        seq + 2,
        seq + 3
    ))
}

/// Sends the stream event by event, each as its own frame (as a live upstream flushes them).
async fn play(tx: mpsc::Sender<Bytes>, events: usize, interval: Duration, hold: Option<Hold>) {
    if tx
        .send(Bytes::from_static(CREATED.as_bytes()))
        .await
        .is_err()
    {
        return;
    }
    if let Some((mut gate, held)) = hold {
        held.fetch_add(1, Ordering::Relaxed);
        // The gate opens, or the client goes away.
        let gone = tokio::select! {
            _ = gate.wait_for(|open| *open) => false,
            _ = tx.closed() => true,
        };
        held.fetch_sub(1, Ordering::Relaxed);
        if gone {
            return;
        }
    }
    if tx.send(Bytes::from_static(ADDED.as_bytes())).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(interval.max(Duration::from_micros(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..events {
        if !interval.is_zero() {
            tick.tick().await;
        }
        if tx.send(delta(seq)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(completed(events)).await;
}

/// A response body fed by [`play`] through a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
