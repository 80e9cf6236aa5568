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

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
        .max_buf_size(256 * 1024);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(256 * 1024);
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
    let admin_app = app.clone();
    let admin_task = tokio::spawn(serve_admin(admin_app, listeners.admin));
    let proxy = listeners.proxy;
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
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(crate::proxy::handle(app, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(proxy);
    app.draining.store(true, Ordering::SeqCst);
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

async fn serve_admin(app: Arc<App>, listener: TcpListener) {
    let builder = builder();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(crate::admin::handle(&app, req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
