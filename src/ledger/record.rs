//! The ledger record (schema version 1): what one request cost and who pays for it.
//!
//! Written as one JSON object per line, fields in the order of SPEC's example.
//! `ocu_billable` is not stored: it is derived from `billing` when writing, and checked
//! against it when reading, so the two can never disagree.

use super::id::is_valid_id;
use super::time::Timestamp;
use crate::billing::Billing;
use crate::usage::Usage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The route a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/responses/compact`
    ResponsesCompact,
    /// `GET /v1/models`
    Models,
    /// `POST /v1/chat/completions`
    ChatCompletions,
}

impl Route {
    /// The name in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Responses => "responses",
            Route::ResponsesCompact => "responses_compact",
            Route::Models => "models",
            Route::ChatCompletions => "chat_completions",
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream finished the answer (`response.completed`, or a complete JSON body).
    Completed,
    /// The upstream ended the answer early (`response.incomplete`).
    Incomplete,
    /// The upstream reported a failure (`response.failed`, or an error status).
    Failed,
    /// The sidecar answered itself because of a limit (429 without asking the upstream).
    Limited,
    /// The agent went away before the answer ended.
    ClientCancelled,
    /// The upstream could not be reached, timed out, or broke the stream.
    UpstreamError,
    /// The sidecar refused the request (credential, route or ledger problem).
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Completed,
        Outcome::Incomplete,
        Outcome::Failed,
        Outcome::Limited,
        Outcome::ClientCancelled,
        Outcome::UpstreamError,
        Outcome::Rejected,
    ];

    /// The name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Incomplete => "incomplete",
            Outcome::Failed => "failed",
            Outcome::Limited => "limited",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The kind of limit a request ran into (the `kind` label of `limit_events_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    RateLimit,
    UsageLimit,
    UsageNotIncluded,
    InsufficientQuota,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::RateLimit,
        LimitKind::UsageLimit,
        LimitKind::UsageNotIncluded,
        LimitKind::InsufficientQuota,
    ];

    /// The name in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RateLimit => "rate_limit",
            LimitKind::UsageLimit => "usage_limit",
            LimitKind::UsageNotIncluded => "usage_not_included",
            LimitKind::InsufficientQuota => "insufficient_quota",
        }
    }
}

/// The limit a request ran into, when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitNote {
    pub kind: LimitKind,
    /// Unix seconds when the limit resets, when known.
    #[serde(deserialize_with = "Option::deserialize")]
    pub resets_at: Option<u64>,
}

/// An account id as the ledger may hold it: a hash, never the id itself.
///
/// The only way to make one from an id is [`AccountHash::of`]; reading a record accepts
/// only the hash's shape (32 lower-case hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountHash(String);

impl AccountHash {
    /// The first 128 bits of SHA-256 of the account id, in hex.
    pub fn of(account_id: &str) -> Self {
        let digest = Sha256::digest(account_id.as_bytes());
        AccountHash(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hash as written in records.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AccountHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let is_hash = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_hash {
            Ok(AccountHash(s))
        } else {
            Err(serde::de::Error::custom(
                "account must be 32 lower-case hex digits (a hash, never the id)",
            ))
        }
    }
}

/// One request's ledger record.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RecordIn")]
pub struct Record {
    /// Unique, sortable by time: see [`super::new_id`].
    pub id: String,
    /// When the request ended (the last byte went out, or the agent went away).
    pub ts: Timestamp,
    /// When the request arrived.
    pub started: Timestamp,
    /// The session the request belongs to.
    pub session: String,
    /// The billing source the session is pinned to.
    pub billing: Billing,
    pub route: Route,
    /// The model named in the answer (or the request), when known.
    pub model: Option<String>,
    /// The HTTP status the agent saw.
    pub status: u16,
    pub outcome: Outcome,
    /// Tokens as the upstream reported them; `None` when it reported none (never estimated).
    pub usage: Option<Usage>,
    pub upstream_request_id: Option<String>,
    pub duration_ms: u64,
    /// Request sent upstream -> response headers, when the upstream answered.
    pub first_byte_ms: Option<u64>,
    pub limit: Option<LimitNote>,
    /// The upstream account, hashed; omitted from the line when `None`.
    pub account: Option<AccountHash>,
}

impl Record {
    /// Whether OCU metering bills this request: exactly when `billing` is `org`.
    pub fn ocu_billable(&self) -> bool {
        self.billing.ocu_billable()
    }

    /// The record as one JSON line, `\n` included: the bytes serde writes for it (the
    /// `Serialize` impl below; a test holds the two equal), put together by hand because
    /// this runs once per request (`benches/PROFILE.md`).
    pub fn to_line(&self) -> Vec<u8> {
        use crate::json_text::{push_opt_str, push_opt_u64, push_str, push_u64};
        use std::fmt::Write;
        let mut out = String::with_capacity(448);
        out.push_str("{\"v\":");
        push_u64(&mut out, u64::from(SCHEMA_VERSION));
        out.push_str(",\"id\":");
        push_str(&mut out, &self.id);
        let _ = write!(
            out,
            ",\"ts\":\"{}\",\"started\":\"{}\"",
            self.ts, self.started
        );
        out.push_str(",\"session\":");
        push_str(&mut out, &self.session);
        out.push_str(",\"billing\":\"");
        out.push_str(self.billing.as_str());
        out.push_str("\",\"ocu_billable\":");
        out.push_str(if self.ocu_billable() { "true" } else { "false" });
        out.push_str(",\"route\":\"");
        out.push_str(self.route.as_str());
        out.push_str("\",\"model\":");
        push_opt_str(&mut out, self.model.as_deref());
        out.push_str(",\"status\":");
        push_u64(&mut out, u64::from(self.status));
        out.push_str(",\"outcome\":\"");
        out.push_str(self.outcome.as_str());
        out.push_str("\",\"usage\":");
        match &self.usage {
            Some(u) => {
                for (name, n) in [
                    ("{\"input\":", u.input),
                    (",\"cached_input\":", u.cached_input),
                    (",\"output\":", u.output),
                    (",\"reasoning\":", u.reasoning),
                    (",\"total\":", u.total),
                ] {
                    out.push_str(name);
                    push_u64(&mut out, n);
                }
                out.push('}');
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"upstream_request_id\":");
        push_opt_str(&mut out, self.upstream_request_id.as_deref());
        out.push_str(",\"duration_ms\":");
        push_u64(&mut out, self.duration_ms);
        out.push_str(",\"first_byte_ms\":");
        push_opt_u64(&mut out, self.first_byte_ms);
        out.push_str(",\"limit\":");
        match &self.limit {
            Some(l) => {
                out.push_str("{\"kind\":\"");
                out.push_str(l.kind.as_str());
                out.push_str("\",\"resets_at\":");
                push_opt_u64(&mut out, l.resets_at);
                out.push('}');
            }
            None => out.push_str("null"),
        }
        if let Some(account) = &self.account {
            out.push_str(",\"account\":");
            push_str(&mut out, account.as_str());
        }
        out.push_str("}\n");
        out.into_bytes()
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RecordOut {
            v: SCHEMA_VERSION,
            id: &self.id,
            ts: self.ts,
            started: self.started,
            session: &self.session,
            billing: self.billing,
            ocu_billable: self.ocu_billable(),
            route: self.route,
            model: self.model.as_deref(),
            status: self.status,
            outcome: self.outcome,
            usage: self.usage.as_ref(),
            upstream_request_id: self.upstream_request_id.as_deref(),
            duration_ms: self.duration_ms,
            first_byte_ms: self.first_byte_ms,
            limit: self.limit.as_ref(),
            account: self.account.as_ref(),
        }
        .serialize(s)
    }
}

/// The line as written: SPEC's field order, `v` and `ocu_billable` filled in.
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    id: &'a str,
    ts: Timestamp,
    started: Timestamp,
    session: &'a str,
    billing: Billing,
    ocu_billable: bool,
    route: Route,
    model: Option<&'a str>,
    status: u16,
    outcome: Outcome,
    usage: Option<&'a Usage>,
    upstream_request_id: Option<&'a str>,
    duration_ms: u64,
    first_byte_ms: Option<u64>,
    limit: Option<&'a LimitNote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a AccountHash>,
}

/// The line as read, strictly: every field but `account` present (nullable ones as
/// `null`), no unknown fields. `Option::deserialize` makes a missing key an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    v: u32,
    id: String,
    ts: Timestamp,
    started: Timestamp,
    session: String,
    billing: Billing,
    ocu_billable: bool,
    route: Route,
    #[serde(deserialize_with = "Option::deserialize")]
    model: Option<String>,
    status: u16,
    outcome: Outcome,
    #[serde(deserialize_with = "Option::deserialize")]
    usage: Option<UsageIn>,
    #[serde(deserialize_with = "Option::deserialize")]
    upstream_request_id: Option<String>,
    duration_ms: u64,
    #[serde(deserialize_with = "Option::deserialize")]
    first_byte_ms: Option<u64>,
    #[serde(deserialize_with = "Option::deserialize")]
    limit: Option<LimitNote>,
    #[serde(default)]
    account: Option<AccountHash>,
}

/// `Usage` read strictly (the shared type itself accepts unknown keys).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageIn {
    input: u64,
    cached_input: u64,
    output: u64,
    reasoning: u64,
    total: u64,
}

impl TryFrom<RecordIn> for Record {
    type Error = String;

    fn try_from(r: RecordIn) -> Result<Self, String> {
        if r.v != SCHEMA_VERSION {
            return Err(format!(
                "schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                r.v
            ));
        }
        if !is_valid_id(&r.id) {
            return Err(format!("id {:?} is not a 26-character record id", r.id));
        }
        if r.session.is_empty() {
            return Err("session is empty".into());
        }
        if r.ocu_billable != r.billing.ocu_billable() {
            return Err(format!(
                "ocu_billable is {} but billing is {:?} (must be billing == \"org\")",
                r.ocu_billable,
                r.billing.as_str()
            ));
        }
        if !(100..=599).contains(&r.status) {
            return Err(format!("status {} is not an HTTP status", r.status));
        }
        Ok(Record {
            id: r.id,
            ts: r.ts,
            started: r.started,
            session: r.session,
            billing: r.billing,
            route: r.route,
            model: r.model,
            status: r.status,
            outcome: r.outcome,
            usage: r.usage.map(|u| Usage {
                input: u.input,
                cached_input: u.cached_input,
                output: u.output,
                reasoning: u.reasoning,
                total: u.total,
            }),
            upstream_request_id: r.upstream_request_id,
            duration_ms: r.duration_ms,
            first_byte_ms: r.first_byte_ms,
            limit: r.limit,
            account: r.account,
        })
    }
}
