//! Listeners and connections: bind, accept, serve HTTP/1.1 and HTTP/2 (h2c),
//! and drain gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;

mod busy;

/// How long a client may take to send a request's headers (also how long an
/// idle keep-alive connection stays open): slow clients cannot hold slots.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The parser's hard caps. Requests under them but over the sidecar's own
/// limits (`proxy::headers::MAX_REQUEST_HEADERS`, `MAX_REQUEST_HEADER_BYTES`)
/// get a JSON `431`; beyond them hyper answers a bare `431` and closes.
const PARSER_MAX_HEADERS: usize = 1024;
const PARSER_MAX_HEAD_BYTES: usize = 256 * 1024;

/// The two bound sockets.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(proxy: SocketAddr, admin: SocketAddr) -> Result<Listeners, String> {
        let p = TcpListener::bind(proxy)
            .await
            .map_err(|e| format!("server.listen {proxy}: cannot bind ({e}); is another sidecar running? pick another port"))?;
        let a = TcpListener::bind(admin).await.map_err(|e| {
            format!("server.admin_listen {admin}: cannot bind ({e}); pick another port")
        })?;
        Ok(Listeners { proxy: p, admin: a })
    }

    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(PARSER_MAX_HEADERS)
        .max_buf_size(PARSER_MAX_HEAD_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(PARSER_MAX_HEAD_BYTES as u32);
    b
}

/// Serves until `shutdown` resolves, then drains: new connections are
/// refused, `/readyz` turns 503, in-flight requests get `shutdown_grace` to
/// finish. `force` (a second signal) ends the drain at once.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = builder();
    let refusals = busy::Refusals::new(app.config.server.max_connections);
    let admin_app = app.clone();
    let admin_task = tokio::spawn(serve_admin(admin_app, listeners.admin));
    let proxy = listeners.proxy;
    // Tells connections still waiting for their first bytes that the drain began:
    // such a connection (a client's spare, opened and never used) holds no
    // request, so it must not hold the drain for HEADER_READ_TIMEOUT.
    let (draining_tx, draining_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = proxy.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: wait a little instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Over the cap: a clear 503 instead of a silent queue.
                let Ok(slot) = app.connection_slots.clone().try_acquire_owned() else {
                    refusals.refuse(stream);
                    continue;
                };
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(crate::proxy::handle(app, req).await) }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let mut draining = draining_rx.clone();
                tokio::spawn(async move {
                    let spoke = tokio::select! {
                        spoke = first_bytes(&stream) => spoke,
                        _ = draining.wait_for(|d| *d) => false,
                    };
                    if spoke {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(proxy);
    app.draining.store(true, Ordering::SeqCst);
    let _ = draining_tx.send(true);
    let grace = app.config.server.shutdown_grace;
    tracing::info!(grace = %humantime::format_duration(grace), "draining: no new connections; in-flight requests may finish");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown_grace elapsed with requests still in flight; closing them"),
        _ = force => tracing::warn!("second signal: exiting at once"),
    }
    if let Some(l) = &app.ledger {
        // Stop the group-commit task and fsync what it had not yet.
        l.close();
        l.flush();
    }
    admin_task.abort();
}

/// Waits until the client sent enough to tell HTTP/1 from HTTP/2 (at most
/// [`HEADER_READ_TIMEOUT`]): hyper-util's protocol sniffing has no timeout of
/// its own, so a silent client would otherwise hold its slot for ever.
async fn first_bytes(stream: &tokio::net::TcpStream) -> bool {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] {
                return true;
            }
            // A part of the HTTP/2 preface: peek returns at once, so pause.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(HEADER_READ_TIMEOUT, sniff)
        .await
        .unwrap_or(false)
}

/// Admin connections served at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

async fn serve_admin(app: Arc<App>, listener: TcpListener) {
    let builder = builder();
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Scrapers and health checks need a few connections; more are dropped
        // so a flood here cannot use up the process's file descriptors.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(crate::admin::handle(&app, req)) }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            if first_bytes(&stream).await {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
            drop(slot);
        });
    }
}
