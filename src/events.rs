//! POSTs each limit and credential state change to `events.url`, with bounded
//! retries, off the request path: a slow or dead receiver never delays a request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn post_transitions(app: Arc<App>, url: Uri) {
    let client = match crate::upstream::build_client::<Full<Bytes>>(
        app.config.upstream.ca_file.as_deref(),
        app.config.upstream.connect_timeout,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "events.url: cannot build the HTTP client; state changes will not be posted");
            return;
        }
    };
    let mut limits = app.limits.subscribe();
    let mut creds = app.creds.subscribe();
    loop {
        let event = tokio::select! {
            t = limits.recv() => match t {
                Ok(t) => serde_json::json!({"kind": "limit", "transition": t}),
                Err(RecvError::Lagged(n)) => { tracing::warn!(dropped = n, "events.url: too slow, state changes dropped"); continue }
                Err(RecvError::Closed) => return,
            },
            c = creds.recv() => match c {
                Ok(c) => serde_json::json!({"kind": "credential", "change": c}),
                Err(RecvError::Lagged(n)) => { tracing::warn!(dropped = n, "events.url: too slow, state changes dropped"); continue }
                Err(RecvError::Closed) => return,
            },
        };
        let body = Bytes::from(event.to_string());
        for attempt in 1..=ATTEMPTS {
            let req = Request::post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::USER_AGENT,
                    concat!("codex-sidecar/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body.clone()));
            let Ok(req) = req else { break };
            match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => break,
                Ok(Ok(resp)) => {
                    tracing::warn!(status = %resp.status(), attempt, "events.url refused a state change")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, attempt, "events.url unreachable"),
                Err(_) => tracing::warn!(attempt, "events.url timed out"),
            }
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
}
