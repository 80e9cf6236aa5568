//! The HTTP client for the ChatGPT auth server (`chatgpt.auth_url`): token
//! refresh and device login. It uses the upstream client's settings
//! (`upstream.ca_file`, `HTTPS_PROXY`/`NO_PROXY`, `upstream.connect_timeout`,
//! `upstream.first_byte_timeout`, `upstream.idle_timeout`) and reads bounded answers.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;

use crate::config::{BaseUrl, Config};
use crate::upstream::ProxyConnector;

/// Largest answer read from the auth server (token answers are a few KiB).
const MAX_ANSWER: usize = 256 * 1024;

/// An answer of the auth server. The body can hold tokens: never log it.
pub struct AuthAnswer {
    pub status: u16,
    pub body: Bytes,
}

impl AuthAnswer {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The error code an OAuth-style error answer carries: `error` as a
    /// string, or `error.code` / `error.type` of an error object, or a
    /// top-level `code`. Only short identifier-like codes are returned, so a
    /// server that echoes a token never gets it into a log line.
    pub fn error_code(&self) -> Option<String> {
        self.error_codes().into_iter().next()
    }

    /// Every identifier-like code in the answer (for matching known failures).
    pub fn error_codes(&self) -> Vec<String> {
        let Some(v) = self.json() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut push = |s: Option<&str>| {
            if let Some(s) = s.filter(|s| is_code(s)) {
                out.push(s.to_owned());
            }
        };
        let err = v.get("error");
        push(err.and_then(|e| e.as_str()));
        push(err.and_then(|e| e.get("code")).and_then(|c| c.as_str()));
        push(err.and_then(|e| e.get("type")).and_then(|c| c.as_str()));
        push(v.get("code").and_then(|c| c.as_str()));
        push(v.get("error_code").and_then(|c| c.as_str()));
        out
    }
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Why a call to the auth server got no answer.
#[derive(Debug)]
pub struct AuthUnreachable(pub String);

/// Posts to `{chatgpt.auth_url}/...`.
pub struct AuthClient {
    client: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    base: BaseUrl,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

impl AuthClient {
    /// Builds the client from the config. Errors name the CA file.
    pub fn new(cfg: &Config) -> Result<AuthClient, String> {
        let client = crate::upstream::build_client::<Full<Bytes>>(
            cfg.upstream.ca_file.as_deref(),
            cfg.upstream.connect_timeout,
        )?;
        Ok(AuthClient {
            client,
            base: cfg.chatgpt.auth_url.clone(),
            first_byte_timeout: cfg.upstream.first_byte_timeout,
            idle_timeout: cfg.upstream.idle_timeout,
        })
    }

    /// `{auth_url}{path}` as text, for messages and the person's browser.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<AuthAnswer, AuthUnreachable> {
        self.post(path, "application/json", body).await
    }

    /// POSTs an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<AuthAnswer, AuthUnreachable> {
        self.post(path, "application/x-www-form-urlencoded", body)
            .await
    }

    async fn post(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<AuthAnswer, AuthUnreachable> {
        let uri = self
            .base
            .join(path, None)
            .map_err(|e| AuthUnreachable(format!("cannot build the URL: {e}")))?;
        let mut req = Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("codex-sidecar/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthUnreachable(format!("cannot build the request: {e}")))?;
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let resp =
            match tokio::time::timeout(self.first_byte_timeout, self.client.request(req)).await {
                Err(_) => {
                    return Err(AuthUnreachable(format!(
                        "no answer within {} (upstream.first_byte_timeout)",
                        humantime::format_duration(self.first_byte_timeout)
                    )))
                }
                Ok(Err(e)) => {
                    let (kind, text) = crate::upstream::classify(&e);
                    return Err(AuthUnreachable(format!("{kind} error: {text}")));
                }
                Ok(Ok(r)) => r,
            };
        let status = resp.status().as_u16();
        let read = Limited::new(resp.into_body(), MAX_ANSWER).collect();
        let body = match tokio::time::timeout(self.idle_timeout, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                return Err(AuthUnreachable(format!(
                    "the answer broke off or is larger than {MAX_ANSWER} bytes ({e})"
                )))
            }
            Err(_) => {
                return Err(AuthUnreachable(format!(
                    "the answer stalled for {} (upstream.idle_timeout)",
                    humantime::format_duration(self.idle_timeout)
                )))
            }
        };
        Ok(AuthAnswer { status, body })
    }
}

/// `application/x-www-form-urlencoded` encoding of name/value pairs.
pub fn form_encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        encode_into(&mut out, k);
        out.push(b'=');
        encode_into(&mut out, v);
    }
    out
}

fn encode_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        let b = form_encode(&[
            ("grant_type", "authorization_code"),
            ("redirect_uri", "https://a.example/cb?x=1&y"),
            ("code", "a b+c"),
        ]);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "grant_type=authorization_code&redirect_uri=https%3A%2F%2Fa.example%2Fcb%3Fx%3D1%26y&code=a+b%2Bc"
        );
    }

    #[test]
    fn error_codes_are_read_from_every_shape_and_never_echo_values() {
        let a = |body: &str| AuthAnswer {
            status: 400,
            body: Bytes::from(body.to_owned()),
        };
        assert_eq!(
            a(r#"{"error":"refresh_token_expired"}"#)
                .error_code()
                .as_deref(),
            Some("refresh_token_expired")
        );
        assert_eq!(
            a(r#"{"error":{"code":"refresh_token_reused","message":"x"}}"#)
                .error_code()
                .as_deref(),
            Some("refresh_token_reused")
        );
        assert_eq!(
            a(r#"{"error":{"type":"refresh_token_invalidated"}}"#).error_codes(),
            vec!["refresh_token_invalidated".to_owned()]
        );
        assert_eq!(
            a(r#"{"error":"invalid_grant","code":"refresh_token_expired"}"#).error_codes(),
            vec![
                "invalid_grant".to_owned(),
                "refresh_token_expired".to_owned()
            ]
        );
        // A value that is not a short code (a token echoed back) is never returned.
        assert_eq!(a(r#"{"error":"eyJhbGciOi.J9 secret"}"#).error_code(), None);
        assert_eq!(a("<html>").error_code(), None);
    }
}
