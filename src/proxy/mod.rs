//! The request pipeline, in the order a request passes it:
//! refuse proxy tricks → route → client token → session pin → credential →
//! limits → forward → answer (headers, stream reader, end-of-body hook).

pub mod body;
pub mod exchange;
pub mod headers;
pub mod route;
pub mod session;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::billing::Billing;
use crate::credentials::{ChatgptCred, ChatgptStatus, OrgCred};
use crate::error::ApiError;
use crate::limits::{LimitKey, Rejection};
use crate::tap::BodyKind;
use body::{ResponseBody, StreamBody, UploadFault, UpstreamBody};
use exchange::{Exchange, Outcome};
use route::{Match, Route};
use session::Pin;

/// Largest upstream error body read to classify it (limit signals, error kind).
const MAX_ERROR_BODY: usize = 1 << 20;

/// The longest upstream `Retry-After` passed on as it is (a week).
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Serves one request from the agent.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ResponseBody> {
    let t0 = Instant::now();
    if let Err(e) = headers::check_request_head(req.headers()) {
        return plain_error(e);
    }
    // Not an open proxy: only origin-form targets on our own routes. (HTTP/2
    // always carries :scheme and :authority, like Host; neither picks the upstream.)
    let absolute_form = req.version() < http::Version::HTTP_2
        && (req.uri().scheme().is_some() || req.uri().authority().is_some());
    if req.method() == Method::CONNECT || absolute_form {
        return plain_error(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "codex-sidecar is not a forward proxy: send origin-form requests such as POST /v1/responses",
        )
        .with_code("proxy_request_refused"));
    }
    let route = match route::lookup(req.method(), req.uri().path()) {
        Match::Found(r) => r,
        Match::WrongMethod(r) => {
            let allow = if r == Route::Models {
                "GET, HEAD"
            } else {
                "POST"
            };
            let mut resp = plain_error(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} takes {allow} only", req.uri().path()),
            ));
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return resp;
        }
        Match::NotFound => return plain_error(ApiError::not_found()),
    };
    let session = session::session_id(req.headers());
    let mut ex = Exchange::begin(app.clone(), route, session, t0);
    match run(&app, &mut ex, req).await {
        Ok(Answer::Stream {
            parts,
            body,
            kind,
            sse,
        }) => {
            let body = StreamBody::new(body, kind, sse, app.config.upstream.idle_timeout, ex);
            Response::from_parts(parts, ResponseBody::Stream(Box::new(body)))
        }
        Ok(Answer::Done(resp)) => resp,
        Err((err, outcome)) => answer_error(&mut ex, err, outcome),
    }
}

type Failure = (ApiError, Outcome);

/// What the pipeline produced: an upstream stream to pass on (the exchange
/// then moves into its body), or a finished answer.
enum Answer {
    Stream {
        parts: http::response::Parts,
        body: Incoming,
        kind: BodyKind,
        sse: bool,
    },
    Done(Response<ResponseBody>),
}

async fn run(app: &Arc<App>, ex: &mut Exchange, req: Request<Incoming>) -> Result<Answer, Failure> {
    let route = ex.route;
    // Until the session is pinned below, a refusal is recorded with the billing
    // source the session has, or would get (never a default that bills the org).
    ex.pin = app
        .sessions
        .peek(&ex.session)
        .or_else(|| choose_pin(app).ok());
    check_client_token(app, req.headers()).map_err(|e| (e, Outcome::Rejected))?;
    if app.draining.load(Ordering::Relaxed) {
        return Err((
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "codex-sidecar is shutting down; retry in a moment",
            ),
            Outcome::Rejected,
        ));
    }
    if app.config.ledger.required && !app.ledger.as_ref().is_some_and(|l| l.writable()) {
        return Err((
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger_unavailable",
                format!(
                    "the billing ledger {} cannot be written and ledger.required = true; free disk space or fix its permissions",
                    app.config.ledger.path.display()
                ),
            ),
            Outcome::Rejected,
        ));
    }
    if let Some(len) = content_length(req.headers()) {
        if len > app.config.server.max_request_body {
            return Err((too_large(app), Outcome::Rejected));
        }
    }

    // Session → billing source → credential.
    let pin = app
        .sessions
        .pin(&ex.session, || choose_pin(app))
        .map_err(|e| (e, Outcome::Rejected))?;
    ex.pin = Some(pin.clone());
    let mut target = credential_for(app, &pin, &ex.session).map_err(|e| (e, Outcome::Rejected))?;
    if route == Route::ChatCompletions && matches!(target, Target::Chatgpt(_)) {
        return Err((
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_on_chatgpt_plan",
                "the ChatGPT plan serves the Responses API only; use POST /v1/responses (Codex: wire_api = \"responses\")",
            ),
            Outcome::Rejected,
        ));
    }

    // Limits: go, wait, or answer 429 without touching the upstream.
    let mut key = target.limit_key();
    ex.limit_key = Some(key.clone());
    let hold_start = Instant::now();
    let admitted = app.limits.admit(&key).await;
    ex.held(hold_start.elapsed());
    match admitted {
        Ok(permit) => ex.permit = Some(permit),
        Err(rejection) => {
            let fallback = matches!(target, Target::Chatgpt(_))
                && app.limits.settings().on_usage_limit
                    == crate::limits::OnUsageLimit::FallbackToOrg
                && rejection.kind.exhausts();
            match (fallback, app.creds.org()) {
                (true, Some(org)) => {
                    tracing::warn!(session = %ex.session, reason = %rejection.error_type,
                        "ChatGPT plan used up: session falls back to org (limits.on_usage_limit = fallback_to_org)");
                    ex.pin = app.sessions.fall_back_to_org(&ex.session);
                    target = Target::Org(org);
                    key = target.limit_key();
                    ex.limit_key = Some(key.clone());
                    match app.limits.admit(&key).await {
                        Ok(permit) => ex.permit = Some(permit),
                        Err(r) => return Err(limited(app, ex, r)),
                    }
                }
                _ => return Err(limited(app, ex, rejection)),
            }
        }
    }

    forward(app, ex, req, &target, &key).await
}

async fn forward(
    app: &Arc<App>,
    ex: &mut Exchange,
    req: Request<Incoming>,
    target: &Target,
    key: &LimitKey,
) -> Result<Answer, Failure> {
    let route = ex.route;
    let (mut parts, body) = req.into_parts();
    let base = match target {
        Target::Chatgpt(_) => &app.config.chatgpt.base_url,
        Target::Org(_) => &app.config.org.base_url,
    };
    let uri = base
        .join(route.upstream_suffix(), parts.uri.query())
        .map_err(|e| {
            (
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("cannot build the upstream URL: {e}"),
                ),
                Outcome::Rejected,
            )
        })?;
    headers::to_upstream(&mut parts.headers);
    target.attach(&mut parts.headers);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let fault = Arc::new(UploadFault::default());
    let up_body = UpstreamBody::new(body, app.config.server.max_request_body, fault.clone());
    let up_req = Request::from_parts(parts, up_body);

    ex.sending();
    let sent = tokio::time::timeout(
        app.config.upstream.first_byte_timeout,
        app.client.request(up_req),
    )
    .await;
    let resp = match sent {
        Err(_) => {
            crate::telemetry::upstream_error("timeout");
            return Err((
                ApiError::upstream_timeout(format!(
                    "the upstream did not answer within {} (upstream.first_byte_timeout); retry the request",
                    humantime::format_duration(app.config.upstream.first_byte_timeout)
                )),
                Outcome::UpstreamError,
            ));
        }
        Ok(Err(e)) => {
            if fault.too_large.load(Ordering::Relaxed) {
                return Err((too_large(app), Outcome::Rejected));
            }
            if fault.client_broke.load(Ordering::Relaxed) {
                // The agent's fault, not the upstream's: no upstream error counted.
                return Err((
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "the request body ended before it was complete (the client went away or sent broken chunked framing); send it again",
                    )
                    .with_code("request_body_incomplete"),
                    Outcome::ClientCancelled,
                ));
            }
            let (kind, text) = crate::upstream::classify(&e);
            crate::telemetry::upstream_error(kind);
            tracing::warn!(request_id = %ex.id, kind, error = %text, "upstream request failed");
            return Err((
                ApiError::upstream_unreachable(format!("{kind} error: {text}")),
                Outcome::UpstreamError,
            ));
        }
        Ok(Ok(resp)) => resp,
    };

    let status = resp.status();
    let request_id = ["x-request-id", "x-oai-request-id"]
        .iter()
        .find_map(|h| resp.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect());
    let arrived = ex.headers_arrived(status.as_u16(), request_id);
    let (mut parts, body) = resp.into_parts();
    headers::to_agent(&mut parts.headers);

    if !status.is_success() {
        if let (StatusCode::UNAUTHORIZED, Target::Chatgpt(cred)) = (status, target) {
            // Renew before answering, so the agent's own retry carries the new
            // token. In its own task: an agent that goes away must not cancel a
            // refresh in flight (the rotated refresh token would be lost).
            let (a, c) = (app.clone(), cred.clone());
            let renew =
                tokio::spawn(async move { a.refresher.after_unauthorized(&a.creds, &c).await });
            let _ = tokio::time::timeout(crate::credentials::refresh::MAX_WAIT_ON_401, renew).await;
        }
        return upstream_error_answer(app, ex, key, parts, body).await;
    }
    // One observation per upstream response: error answers are observed with their body.
    app.limits
        .observe_response(key, status.as_u16(), &parts.headers);
    let sse = headers::is_event_stream(&parts.headers);
    if !sse
        && !headers::is_json(&parts.headers)
        && headers::content_type(&parts.headers).is_some_and(|ct| ct.contains("html"))
    {
        crate::telemetry::upstream_error("protocol");
        return Err((
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!(
                    "the upstream answered {status} with an HTML page instead of an API response; a proxy or CDN in front of {} may be interfering",
                    base.authority
                ),
            )
            .with_code("upstream_invalid_response"),
            Outcome::UpstreamError,
        ));
    }
    if headers::is_encoded(&parts.headers) {
        // Asked for identity: a compressed answer cannot be read for usage and
        // limits, so it would go unbilled; a proxy on the way re-encodes it.
        crate::telemetry::upstream_error("protocol");
        let encoding = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .chars()
            .take(32)
            .collect::<String>();
        return Err((
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!(
                    "the upstream answered with content-encoding: {encoding} although codex-sidecar asked for identity; a proxy in front of {} is re-encoding answers",
                    base.authority
                ),
            )
            .with_code("upstream_invalid_response"),
            Outcome::UpstreamError,
        ));
    }
    let kind = if sse {
        BodyKind::Sse
    } else if headers::is_json(&parts.headers) {
        BodyKind::Json
    } else {
        BodyKind::Other
    };
    if sse {
        headers::mark_event_stream(&mut parts.headers);
    }
    add_sidecar_headers(&mut parts.headers, ex);
    ex.add_overhead(arrived.elapsed());
    Ok(Answer::Stream {
        parts,
        body,
        kind,
        sse,
    })
}

/// A non-2xx upstream answer: JSON errors pass through (with `Retry-After`
/// whenever a reset is known); anything else becomes a JSON error the agent can show.
async fn upstream_error_answer(
    app: &Arc<App>,
    ex: &mut Exchange,
    key: &LimitKey,
    mut parts: http::response::Parts,
    body: Incoming,
) -> Result<Answer, Failure> {
    let status = parts.status;
    let read = tokio::time::timeout(
        app.config.upstream.idle_timeout,
        read_capped(body, MAX_ERROR_BODY),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) | Err(_) => Bytes::new(),
    };
    let retry_after = app
        .limits
        .observe_error_body(key, status.as_u16(), &parts.headers, &bytes);
    let described = crate::limits::signals::parse_error_body(&bytes, std::time::SystemTime::now());
    let limit = described.as_ref().and_then(|b| b.kind);
    let resets_at = described.as_ref().and_then(|b| b.resets_at).or_else(|| {
        retry_after.map(|s| crate::time::unix_after(std::time::Duration::from_secs(s)))
    });
    if let Some(kind) = limit {
        ex.set_limit(kind, resets_at);
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        ex.set_limit(crate::limits::LimitKind::RateLimit, resets_at);
    }
    let json = headers::is_json(&parts.headers)
        && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
    let mut resp = if json {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            ex.set_model(v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        add_sidecar_headers(&mut parts.headers, ex);
        Response::from_parts(parts, ResponseBody::full(bytes))
    } else {
        crate::telemetry::upstream_error("protocol");
        let what = headers::content_type(&parts.headers)
            .unwrap_or("no content type")
            .to_owned();
        let err = ApiError::new(
            status,
            "upstream_error",
            format!(
                "the upstream answered {status} with a {what} body instead of an API error; a proxy or CDN in front of the model API may have blocked the request"
            ),
        )
        .with_code(format!("upstream_http_{}", status.as_u16()))
        .with_retry_after(retry_after);
        ex.status = status.as_u16();
        let mut r = error_response(&err);
        add_sidecar_headers(r.headers_mut(), ex);
        let outcome = if limit.is_some() || status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::Limited
        } else {
            Outcome::UpstreamError
        };
        ex.finish(outcome, None);
        return Ok(Answer::Done(r));
    };
    if let Some(secs) = retry_after {
        // CASES.md 9: the agent gets a Retry-After it can use. The upstream's
        // own stays when it is one; a missing, garbled, negative or absurd one
        // (Codex would fail at once, or wait for years) becomes the known reset.
        let usable = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                crate::limits::signals::parse_retry_after(v, std::time::SystemTime::now())
            })
            .is_some_and(|d| d <= MAX_RETRY_AFTER);
        if !usable {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
    ex.finish(Outcome::Failed, None);
    Ok(Answer::Done(resp))
}

async fn read_capped(mut body: Incoming, cap: usize) -> Result<Bytes, hyper::Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            let room = cap.saturating_sub(buf.len());
            buf.extend_from_slice(&d[..d.len().min(room)]);
            if buf.len() >= cap {
                break;
            }
        }
    }
    Ok(buf.freeze())
}

/// Where a request goes and with which credential.
enum Target {
    Chatgpt(Arc<ChatgptCred>),
    Org(Arc<OrgCred>),
}

impl Target {
    fn limit_key(&self) -> LimitKey {
        match self {
            Target::Chatgpt(c) => LimitKey::new(Billing::ChatgptPlan, c.account_hash.as_str()),
            Target::Org(_) => LimitKey::org(),
        }
    }

    fn attach(&self, h: &mut http::HeaderMap) {
        match self {
            Target::Chatgpt(c) => {
                h.insert(header::AUTHORIZATION, c.authorization.clone());
                h.insert("chatgpt-account-id", c.account_header.clone());
            }
            Target::Org(o) => {
                h.insert(header::AUTHORIZATION, o.authorization.clone());
                if let Some(v) = &o.organization {
                    h.insert("openai-organization", v.clone());
                }
                if let Some(v) = &o.project {
                    h.insert("openai-project", v.clone());
                }
            }
        }
    }
}

/// A new session's billing source: the ChatGPT plan when connected, else the org.
fn choose_pin(app: &App) -> Result<Pin, ApiError> {
    if let ChatgptStatus::Connected(c) = app.creds.chatgpt() {
        return Ok(Pin {
            billing: Billing::ChatgptPlan,
            account: Some(c.account_hash.clone()),
            fell_back: false,
        });
    }
    if app.creds.org().is_some() {
        return Ok(Pin {
            billing: Billing::Org,
            account: None,
            fell_back: false,
        });
    }
    Err(no_credential(app))
}

fn no_credential(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_credential",
        format!(
            "codex-sidecar has no usable credential. Looked at: {}. Connect a ChatGPT plan or provide the organization's API key",
            app.creds.describe_sources()
        ),
    )
}

/// The credential of a pinned session: a session never changes who pays.
fn credential_for(app: &App, pin: &Pin, session: &str) -> Result<Target, ApiError> {
    let target = credential_of_pin(app, pin, session)?;
    // The session is usable again (say, its account came back): /status follows.
    app.sessions.set_state(session, "active");
    Ok(target)
}

fn credential_of_pin(app: &App, pin: &Pin, session: &str) -> Result<Target, ApiError> {
    match pin.billing {
        Billing::Org => app
            .creds
            .org()
            .map(Target::Org)
            .ok_or_else(|| no_credential(app)),
        Billing::ChatgptPlan => match app.creds.chatgpt() {
            ChatgptStatus::Connected(c) if Some(&c.account_hash) == pin.account.as_ref() => {
                Ok(Target::Chatgpt(c))
            }
            ChatgptStatus::NeedsReconnect => {
                app.sessions.set_state(session, "needs_reconnect");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "chatgpt_reconnect_required",
                    "the ChatGPT account's sign-in expired and could not be renewed: reconnect the ChatGPT account, then start a new session",
                ))
            }
            other => {
                app.sessions.set_state(session, "disconnected");
                let why = match other {
                    ChatgptStatus::Disabled => "the organization disabled ChatGPT plans",
                    ChatgptStatus::Connected(_) => "a different ChatGPT account is connected now",
                    _ => "the ChatGPT account was disconnected",
                };
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "chatgpt_disconnected",
                    format!("this session is billed to a ChatGPT plan, but {why}: start a new session (it will use the organization's access or the newly connected account)"),
                ))
            }
        },
    }
}

fn check_client_token(app: &App, h: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.client_token else {
        return Ok(());
    };
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    // Compare digests in constant time: neither content nor length leaks.
    let digest = sha2::Sha256::digest(given.trim().as_bytes());
    if bool::from(digest.as_slice().ct_eq(expected.as_slice())) && !given.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "missing or wrong local token: send Authorization: Bearer <the token in server.client_token_file> (Codex: the provider's env_key variable)",
        ))
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!(
            "the request body is larger than server.max_request_body ({} bytes); raise it in the sidecar's config or compact the conversation",
            app.config.server.max_request_body
        ),
    )
}

/// A limits rejection as the agent sees it (Codex-compatible 429).
fn limited(app: &App, ex: &mut Exchange, r: Rejection) -> Failure {
    app.sessions.set_state(&ex.session, "limited");
    ex.set_limit(r.kind, r.resets_at);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "usage_limit_reached",
        r.message.clone(),
    );
    e.kind = r.error_type.clone().into();
    e.code = r.code.clone();
    e.retry_after = r.retry_after_secs;
    e.plan_type = r.plan_type.clone();
    e.resets_at = r.resets_at;
    (e, Outcome::Limited)
}

fn add_sidecar_headers(h: &mut http::HeaderMap, ex: &Exchange) {
    if let Some(pin) = &ex.pin {
        h.insert(
            "x-codex-sidecar-billing",
            HeaderValue::from_static(pin.billing.as_str()),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&ex.id) {
        h.insert("x-codex-sidecar-request-id", v);
    }
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    let body = err.json_body();
    let mut resp = Response::new(ResponseBody::full(body.clone()));
    *resp.status_mut() = err.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(secs) = err.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// An error for a request that never reached the route table (no record).
fn plain_error(err: ApiError) -> Response<ResponseBody> {
    error_response(&err)
}

/// An error the sidecar answers for a routed request: one record, one response.
fn answer_error(ex: &mut Exchange, err: ApiError, outcome: Outcome) -> Response<ResponseBody> {
    ex.status = err.status.as_u16();
    let mut resp = error_response(&err);
    add_sidecar_headers(resp.headers_mut(), ex);
    if err.status == StatusCode::SERVICE_UNAVAILABLE && err.kind == "shutting_down" {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ex.finish(outcome, None);
    resp
}
