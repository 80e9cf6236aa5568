//! The pooled HTTPS client to the model upstreams: rustls (webpki roots plus
//! `upstream.ca_file`), HTTP/2 by ALPN or HTTP/1.1, `HTTPS_PROXY`/`NO_PROXY`
//! through a CONNECT tunnel, and the connect timeout.

use std::error::Error as StdError;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::proxy::body::UpstreamBody;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client every upstream request goes through.
pub type UpstreamClient = Client<HttpsConnector<ProxyConnector>, UpstreamBody>;

/// Builds the client. Errors name the CA file and what is wrong with it.
pub fn build_client<B>(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<ProxyConnector>, B>, String>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let proxy = Arc::new(Matcher::from_env());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let added = add_pem_roots(&mut roots, path)?;
        tracing::info!(ca_file = %path.display(), certificates = added, "extra trusted roots loaded");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(ProxyConnector {
            direct: http,
            proxy,
        });
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector))
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("upstream.ca_file {}: cannot read it ({e})", path.display()))?;
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.map_err(|e| format!("upstream.ca_file {}: not valid PEM ({e})", path.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "upstream.ca_file {}: a certificate is not usable as a root ({e})",
                path.display()
            )
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(format!(
            "upstream.ca_file {}: holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(added)
}

/// TCP connector that goes through the environment's proxy (CONNECT tunnel)
/// when `HTTPS_PROXY`/`HTTP_PROXY` match, and direct otherwise. Loopback
/// upstreams never go through a proxy.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    proxy: Arc<Matcher>,
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let via = if is_loopback(&dst) {
            None
        } else {
            self.proxy.intercept(&dst)
        };
        match via {
            None => {
                let fut = self.direct.call(dst);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Some(intercept) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), self.direct.clone());
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
                    Ok(tunnel.call(dst).await?)
                })
            }
        }
    }
}

fn is_loopback(uri: &Uri) -> bool {
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Classifies a client error for `upstream_errors_total{kind}` and the message.
pub fn classify(err: &(dyn StdError + 'static)) -> (&'static str, String) {
    let mut kind = "protocol";
    let mut text = chain_text(err);
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            kind = "tls";
            text = format!("TLS handshake failed: {e}");
            break;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if inner.downcast_ref::<rustls::Error>().is_some() {
                    kind = "tls";
                    text = format!("TLS handshake failed: {inner}");
                    break;
                }
            }
            kind = match io.kind() {
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound => "connect",
                std::io::ErrorKind::TimedOut => "timeout",
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => "reset",
                _ => kind,
            };
            text = io.to_string();
        }
        cur = e.source();
    }
    // TLS failures arrive boxed in ways that hide their type; their text does not.
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let t = e.to_string();
        if kind != "tls"
            && (t.contains("certificate") || t.contains("peer sent") || t.contains("tls handshake"))
        {
            kind = "tls";
            text = format!("TLS handshake failed: {t}");
        }
        cur = e.source();
    }
    if let Some(e) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        if e.is_connect() && kind == "protocol" {
            kind = "connect";
        }
    }
    if kind == "protocol" && was_reset(err) {
        kind = "reset";
        text = format!("the upstream reset the connection ({text})");
    }
    (kind, capped(text))
}

/// The upstream closed the connection or reset the HTTP/2 stream before the
/// answer was complete (hyper keeps h2's reason only in its text).
fn was_reset(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        let t = e.to_string();
        if t.contains("stream error received") || t.contains("connection reset") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Every cause in the chain, outermost first ("client error (SendRequest)"
/// alone tells the agent nothing), capped so an error page cannot grow it.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let t = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = e.source();
    }
    capped(parts.join(": "))
}

fn capped(mut text: String) -> String {
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct Outer(Box<dyn StdError + Send + Sync>);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (SendRequest)")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn kinds_and_the_whole_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&Outer(Box::new(refused))).0, "connect");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&Outer(Box::new(reset))).0, "reset");
        // An HTTP/2 stream reset is known only by its text.
        let h2 = Outer(Box::new(std::io::Error::other(
            "stream error received: unexpected internal error encountered",
        )));
        let (kind, text) = classify(&h2);
        assert_eq!(kind, "reset");
        assert!(text.contains("unexpected internal error"), "{text}");
        let tls = Outer(Box::new(std::io::Error::other(
            "invalid peer certificate: Expired",
        )));
        assert_eq!(classify(&tls).0, "tls");
        // The outer text alone says nothing: the cause is kept, capped.
        let long = Outer(Box::new(std::io::Error::other("x".repeat(1000))));
        let (kind, text) = classify(&long);
        assert_eq!(kind, "protocol");
        assert!(text.starts_with("x"), "{text}");
        assert!(text.len() <= 300);
    }
}
