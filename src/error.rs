//! The sidecar's own error answers: OpenAI-shaped JSON before a stream, an SSE
//! `response.failed` event after it started.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// An error the sidecar answers itself, with a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// The `error.type` field (SPEC: `route_not_found`, `no_credential`, ...).
    pub kind: Cow<'static, str>,
    /// The `error.code` field; the same as `kind` unless more precise.
    pub code: String,
    pub message: String,
    /// Seconds for the `Retry-After` header, when a reset time is known.
    pub retry_after: Option<u64>,
    /// Codex-compatible usage-limit fields (`plan_type`, `resets_at`).
    pub plan_type: Option<String>,
    pub resets_at: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: Cow::Borrowed(kind),
            code: kind.to_owned(),
            message: message.into(),
            retry_after: None,
            plan_type: None,
            resets_at: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    /// `{"error": {"type", "code", "message", "param": null, ...}}`.
    pub fn json_body(&self) -> Bytes {
        let mut error = json!({
            "type": self.kind,
            "code": self.code,
            "message": self.message,
            "param": null,
        });
        if let Some(obj) = error.as_object_mut() {
            if let Some(plan) = &self.plan_type {
                obj.insert("plan_type".into(), json!(plan));
            }
            if let Some(at) = self.resets_at {
                obj.insert("resets_at".into(), json!(at));
            }
            if let Some(secs) = self.retry_after {
                if self.resets_at.is_some() {
                    obj.insert("resets_in_seconds".into(), json!(secs));
                }
            }
        }
        Bytes::from(json!({ "error": error }).to_string())
    }

    /// The SSE event that ends a stream which already started: Codex reads
    /// `response.failed` and its `response.error`.
    pub fn sse_failed_event(&self) -> Bytes {
        let event = json!({
            "type": "response.failed",
            "response": {
                "status": "failed",
                "error": {"type": self.kind, "code": self.code, "message": self.message},
            },
        });
        Bytes::from(format!("event: response.failed\ndata: {event}\n\n"))
    }

    pub fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "codex-sidecar serves only POST /v1/responses, POST /v1/responses/compact, GET /v1/models \
             and POST /v1/chat/completions; point the agent's base_url at http://<listen>/v1",
        )
    }

    pub fn upstream_unreachable(detail: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("codex-sidecar could not reach the model upstream: {detail}"),
        )
    }

    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_has_the_openai_shape() {
        let e = ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route");
        assert_eq!(
            e.json_body(),
            Bytes::from_static(
                br#"{"error":{"code":"route_not_found","message":"no such route","param":null,"type":"route_not_found"}}"#
            )
        );
    }

    #[test]
    fn usage_limit_fields_are_codex_compatible() {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "usage_limit_reached",
            "used up",
        )
        .with_retry_after(Some(60));
        e.plan_type = Some("plus".into());
        e.resets_at = Some(1_764_000_000);
        let v: serde_json::Value = serde_json::from_slice(&e.json_body()).unwrap();
        assert_eq!(v["error"]["plan_type"], "plus");
        assert_eq!(v["error"]["resets_at"], 1_764_000_000);
        assert_eq!(v["error"]["resets_in_seconds"], 60);
    }

    #[test]
    fn sse_failed_event_is_one_complete_event() {
        let e = ApiError::upstream_timeout("silent for 300s");
        let s = String::from_utf8(e.sse_failed_event().to_vec()).unwrap();
        assert!(s.starts_with("event: response.failed\ndata: {"));
        assert!(s.ends_with("}\n\n"));
        let data: serde_json::Value =
            serde_json::from_str(s.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["response"]["error"]["code"], "upstream_timeout");
    }
}
