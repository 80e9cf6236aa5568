//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::app::App;

pub fn handle<B>(app: &App, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "admin endpoints take GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if app.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" => {
            crate::credentials::publish_metrics(&app.creds);
            let body = crate::telemetry::metrics_handle().render();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/status" => {
            let body = serde_json::to_vec_pretty(&status(app)).unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /healthz /readyz /metrics /status\n",
        ),
    }
}

/// The `/status` document: no secrets, only states, hashes and times.
pub fn status(app: &App) -> serde_json::Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": crate::time::rfc3339_millis(app.started_wall),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "draining": app.draining.load(Ordering::Relaxed),
        "listen": app.config.server.listen.to_string(),
        "credentials": app.creds.views(),
        "limits": app.limits.snapshot(),
        "sessions": app.sessions.views(),
        "ledger": app.ledger.as_ref().map(|l| serde_json::to_value(l.status()).unwrap_or_default()),
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
