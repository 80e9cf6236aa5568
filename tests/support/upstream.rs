//! An in-process fake model upstream over TLS (HTTP/2 by ALPN and HTTP/1.1),
//! with a test CA made on the spot. It records every request and plays
//! scripted answers: SSE streams with delays, JSON, errors, odd chunking,
//! stalls, resets and HTML pages. [`Options`] make the listener itself
//! misbehave: bad certificates, HTTP/1.1 only, connections closed after each answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a scripted body ends.
#[derive(Clone, Debug)]
pub enum End {
    /// Normal end of body.
    Finish,
    /// Stay silent forever (until the client goes away).
    Stall,
    /// Abort the body with an error (the connection is cut).
    Reset,
    /// No answer at all: the connection (HTTP/1.1) or stream (HTTP/2) is reset
    /// before any response header; chunks and status are ignored.
    ResetBeforeHead,
}

/// Which certificate the fake upstream presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cert {
    /// `localhost` and 127.0.0.1, signed by the CA in `ca_file`.
    #[default]
    Good,
    /// Signed by the CA, but for `wrong.example` only.
    WrongHost,
    /// For `localhost`, signed by the CA, expired in 2020.
    Expired,
    /// For `localhost`, signed by a CA nobody trusts.
    UnknownCa,
}

/// How the listener behaves (everything well by default).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub cert: Cert,
    /// Offer only HTTP/1.1 by ALPN.
    pub http1_only: bool,
    /// Close each connection once its first answer was sent, as servers with a
    /// short keep-alive do (HTTP/1.1: the socket closes; HTTP/2: GOAWAY).
    pub close_after_answer: bool,
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// (delay before, bytes) pairs.
    pub chunks: Vec<(Duration, Bytes)>,
    pub end: End,
    /// Delay before the response headers.
    pub head_delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![(Duration::ZERO, Bytes::from(body.into()))],
            end: End::Finish,
            head_delay: Duration::ZERO,
        }
    }

    pub fn sse(events: Vec<String>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: events
                .into_iter()
                .map(|e| (Duration::ZERO, Bytes::from(e)))
                .collect(),
            end: End::Finish,
            head_delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delay_each(mut self, d: Duration) -> Reply {
        for c in &mut self.chunks {
            c.0 = d;
        }
        self
    }

    pub fn ending(mut self, end: End) -> Reply {
        self.end = end;
        self
    }
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// The running fake upstream.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bodies whose client went away before the end.
    pub cancelled: Arc<AtomicUsize>,
    /// Connections currently open.
    pub open_connections: Arc<AtomicUsize>,
    /// TLS connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// `https://localhost:<port><prefix>`.
    pub fn base_url(&self, prefix: &str) -> String {
        format!("https://localhost:{}{prefix}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub async fn start(
        script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeUpstream {
        FakeUpstream::start_with(Options::default(), script).await
    }

    pub async fn start_with(
        options: Options,
        script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeUpstream {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert_der, key_der) = make_certs(options.cert);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .unwrap();
        tls.alpn_protocols = if options.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let open_connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (s2, c2, o2, a2) = (
            seen.clone(),
            cancelled.clone(),
            open_connections.clone(),
            accepted.clone(),
        );
        let close_after_answer = options.close_after_answer;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (seen, cancelled, open, accepted, script) = (
                    s2.clone(),
                    c2.clone(),
                    o2.clone(),
                    a2.clone(),
                    script.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let answered = Arc::new(tokio::sync::Notify::new());
                    let on_answer = close_after_answer.then(|| answered.clone());
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, cancelled, script, on_answer) = (
                            seen.clone(),
                            cancelled.clone(),
                            script.clone(),
                            on_answer.clone(),
                        );
                        async move { answer(req, seen, cancelled, script, on_answer).await }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = answered.notified() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakeUpstream {
            addr,
            seen,
            cancelled,
            open_connections,
            accepted,
            ca_file,
            _dir: dir,
            task,
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    cancelled: Arc<AtomicUsize>,
    script: Arc<Script>,
    on_answer: Option<Arc<tokio::sync::Notify>>,
) -> Result<Response<ChanBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        version: parts.version,
        at: Instant::now(),
    };
    let n = {
        let mut v = seen.lock().unwrap();
        v.push(s.clone());
        v.len() - 1
    };
    let reply = script(&s, n);
    tokio::time::sleep(reply.head_delay).await;
    if matches!(reply.end, End::ResetBeforeHead) {
        return Err(std::io::Error::other(
            "scripted reset before the response head",
        ));
    }
    let (tx, rx) = mpsc::channel(16);
    let chunks = reply.chunks.clone();
    let end = reply.end.clone();
    tokio::spawn(async move {
        for (delay, chunk) in chunks {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        match end {
            End::Finish => {}
            End::Stall => {
                tx.closed().await;
                cancelled.fetch_add(1, Ordering::SeqCst);
            }
            End::Reset => {
                let _ = tx.send(Err(std::io::Error::other("scripted reset"))).await;
            }
            End::ResetBeforeHead => {}
        }
    });
    let mut resp = Response::new(ChanBody(rx, on_answer));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in &reply.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Ok(resp)
}

/// A body fed from a channel; tells the connection when it was sent (or dropped).
pub struct ChanBody(
    mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    Option<Arc<tokio::sync::Notify>>,
);

impl Drop for ChanBody {
    fn drop(&mut self) {
        if let Some(n) = &self.1 {
            n.notify_one();
        }
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// A CA (written to `ca_file`) and the leaf `cert` asks for.
fn make_certs(
    cert: Cert,
) -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "codex-sidecar test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names = if cert == Cert::WrongHost {
        vec!["wrong.example".to_string()]
    } else {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    };
    let mut leaf_params = CertificateParams::new(names).unwrap();
    if cert == Cert::Expired {
        leaf_params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let (other_key, other_params) = (KeyPair::generate().unwrap(), {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "nobody trusts this CA");
        p
    });
    let issuer = if cert == Cert::UnknownCa {
        rcgen::Issuer::from_params(&other_params, &other_key)
    } else {
        rcgen::Issuer::from_params(&ca_params, &ca_key)
    };
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (
        ca.pem(),
        leaf.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
}

/// A realistic Responses stream: created, `n` deltas, completed with usage.
pub fn responses_stream(
    text_parts: &[&str],
    model: &str,
    usage: (u64, u64, u64, u64),
) -> Vec<String> {
    let (input, cached, output, reasoning) = usage;
    let mut v = vec![format!(
        "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"id\":\"resp_1\",\"model\":\"{model}\",\"status\":\"in_progress\"}}}}\n\n"
    )];
    v.push("event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\",\"role\":\"assistant\",\"id\":\"msg_1\",\"content\":[]}}\n\n".into());
    for p in text_parts {
        v.push(format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":{}}}\n\n",
            serde_json::to_string(p).unwrap()
        ));
    }
    let full: String = text_parts.concat();
    v.push(format!(
        "event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{{\"type\":\"message\",\"role\":\"assistant\",\"id\":\"msg_1\",\"content\":[{{\"type\":\"output_text\",\"text\":{}}}]}}}}\n\n",
        serde_json::to_string(&full).unwrap()
    ));
    v.push(format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"model\":\"{model}\",\"status\":\"completed\",\"usage\":{{\"input_tokens\":{input},\"input_tokens_details\":{{\"cached_tokens\":{cached}}},\"output_tokens\":{output},\"output_tokens_details\":{{\"reasoning_tokens\":{reasoning}}},\"total_tokens\":{}}}}}}}\n\n",
        input + output
    ));
    v
}
