//! The body observer: learns model, usage, outcome and failures from a response body it never changes.
//!
//! The proxy hands it every chunk before releasing that chunk to the agent. It only learns:
//! nothing it reads can fail, block or alter the stream, and its memory is capped.

use serde_json::Value;

use super::fields::{self, ApiError, Obj};
use super::sse::{Event, Interest, Scanner};
use crate::usage::Usage;

/// Largest non-streamed JSON body read; past it the observer learns nothing from the body.
pub const JSON_CAP: usize = 16 * 1024 * 1024;

/// Untyped events parsed only to find the model before giving up on them.
const MODEL_PROBES: u8 = 4;

/// How a body is framed, from its `content-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/event-stream`: read event by event as it passes.
    Sse,
    /// `application/json` (or `+json`): read whole at the end.
    Json,
    /// Anything else: not read.
    Other,
}

impl BodyKind {
    pub fn from_content_type(content_type: Option<&str>) -> BodyKind {
        let Some(content_type) = content_type else {
            return BodyKind::Other;
        };
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if mime == "text/event-stream" {
            BodyKind::Sse
        } else if mime == "application/json" || mime.ends_with("+json") {
            BodyKind::Json
        } else {
            BodyKind::Other
        }
    }
}

/// How the upstream said the response ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    Completed,
    /// `response.incomplete` (`incomplete_details.reason`), or a chat completion cut by
    /// `finish_reason` `length` / `content_filter`.
    Incomplete {
        reason: Option<String>,
    },
    /// `response.failed` (`response.error.code` / `.message`).
    Failed {
        code: Option<String>,
        message: Option<String>,
    },
}

/// What one chunk taught that the proxy must act on before releasing that chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// The terminal event ended inside this chunk (reported once per body).
    pub terminal: bool,
    /// A stream failure (`response.failed`, an `error` event) was seen in this chunk.
    pub failure: bool,
}

/// Reads one response body on its way to the agent.
#[derive(Debug)]
pub struct Observer {
    kind: BodyKind,
    scanner: Scanner,
    json: Vec<u8>,
    json_too_large: bool,
    finished: bool,
    learned: Learned,
}

impl Observer {
    pub fn new(kind: BodyKind) -> Self {
        Observer {
            kind,
            scanner: Scanner::new(interest),
            json: Vec::new(),
            json_too_large: false,
            finished: false,
            learned: Learned {
                probes_left: MODEL_PROBES,
                ..Learned::default()
            },
        }
    }

    /// Reads one chunk (any size, cut anywhere). Never fails.
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
        if self.finished {
            return Feed::default();
        }
        match self.kind {
            BodyKind::Sse => {
                let learned = &mut self.learned;
                learned.feed = Feed::default();
                self.scanner
                    .feed(chunk, &mut |event| learned.on_event(event));
                learned.feed
            }
            BodyKind::Json => {
                if !self.json_too_large {
                    if self.json.len() + chunk.len() > JSON_CAP {
                        self.json_too_large = true;
                        self.json = Vec::new();
                    } else {
                        self.json.extend_from_slice(chunk);
                    }
                }
                Feed::default()
            }
            BodyKind::Other => Feed::default(),
        }
    }

    /// The body ended: reads a JSON body and frees the buffers. An unfinished SSE event is
    /// discarded, as an event-stream client discards it.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if self.kind == BodyKind::Json && !self.json_too_large {
            if let Some(body) = fields::parse(&self.json) {
                self.learned.on_body(body);
            }
        }
        self.json = Vec::new();
        self.scanner = Scanner::new(interest);
    }

    /// Bytes to send before appending an event of the sidecar's own to an
    /// event stream the upstream left unfinished (see `Scanner::resync`).
    pub fn sse_resync(&self) -> &'static [u8] {
        match self.kind {
            BodyKind::Sse if !self.finished => self.scanner.resync(),
            _ => b"",
        }
    }

    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// The model the upstream says it used.
    pub fn model(&self) -> Option<&str> {
        self.learned.model.as_deref()
    }

    /// The upstream's response (or chat completion) id.
    pub fn response_id(&self) -> Option<&str> {
        self.learned.response_id.as_deref()
    }

    /// Usage as the upstream reported it; `None` when it did not.
    pub fn usage(&self) -> Option<Usage> {
        self.learned.usage
    }

    pub fn terminal(&self) -> Option<&Terminal> {
        self.learned.terminal.as_ref()
    }

    /// The latest stream failure (code, message) since the last take; a missing part is empty.
    pub fn take_failure(&mut self) -> Option<(String, String)> {
        self.learned.failure.take()
    }

    /// A JSON body's `{"error": {...}}`.
    pub fn error(&self) -> Option<&ApiError> {
        self.learned.error.as_ref()
    }
}

/// Responses event types the reader acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Created,
    Completed,
    Incomplete,
    Failed,
    Error,
}

/// What an event type says about the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Known(Kind),
    /// Progress (deltas, items added/done): nearly all the bytes, nothing to learn.
    Progress,
    /// Anything else: looked at cheaply before any parse.
    Other,
}

fn classify(name: &[u8]) -> Class {
    match name {
        b"response.created" => Class::Known(Kind::Created),
        b"response.completed" => Class::Known(Kind::Completed),
        b"response.incomplete" => Class::Known(Kind::Incomplete),
        b"response.failed" => Class::Known(Kind::Failed),
        b"error" => Class::Known(Kind::Error),
        _ if [&b".delta"[..], b".done", b".added", b".in_progress"]
            .iter()
            .any(|suffix| name.ends_with(suffix)) =>
        {
            Class::Progress
        }
        _ => Class::Other,
    }
}

/// The scanner's filter: progress events are never buffered.
fn interest(name: &[u8]) -> Interest {
    match classify(name) {
        Class::Progress => Interest::Skip,
        Class::Known(_) | Class::Other => Interest::Keep,
    }
}

/// Everything learned so far from one body.
#[derive(Debug, Default)]
struct Learned {
    model: Option<String>,
    response_id: Option<String>,
    usage: Option<Usage>,
    terminal: Option<Terminal>,
    failure: Option<(String, String)>,
    error: Option<ApiError>,
    /// Chat Completions: a `finish_reason` that means the answer was cut short.
    cut_short: Option<String>,
    probes_left: u8,
    /// What the chunk being fed has taught.
    feed: Feed,
}

impl Learned {
    fn on_event(&mut self, event: Event<'_>) {
        let class = match event.name.map(classify) {
            Some(class @ (Class::Known(_) | Class::Progress)) => class,
            // No usable name: the JSON `type` field may say what it is.
            None | Some(Class::Other) => {
                fields::sniff_type(event.data).map_or(Class::Other, classify)
            }
        };
        match class {
            Class::Known(kind) => {
                if let Some(obj) = fields::parse(event.data) {
                    self.on_typed(kind, obj);
                }
            }
            Class::Progress => {}
            Class::Other => self.on_untyped(event.data),
        }
    }

    fn on_typed(&mut self, kind: Kind, obj: Obj) {
        let response = obj.response.as_deref();
        if let Some(response) = response {
            self.learn_ids(response);
        }
        match kind {
            Kind::Created => {}
            Kind::Completed => self.end_response(Terminal::Completed, response),
            Kind::Incomplete => {
                let reason = response
                    .and_then(|r| r.incomplete_details.as_ref())
                    .and_then(|d| d.get("reason"))
                    .and_then(fields::text);
                self.end_response(Terminal::Incomplete { reason }, response);
            }
            Kind::Failed => {
                let error = response
                    .and_then(|r| r.error.as_ref())
                    .and_then(ApiError::from_value)
                    .unwrap_or_default();
                let (code, message) = error.code_and_message();
                self.fail(code.clone(), message.clone());
                self.end_response(Terminal::Failed { code, message }, response);
            }
            Kind::Error => {
                // `{"type":"error","code":..,"message":..}`, or the same nested in `error`.
                let nested = obj.error.as_ref().and_then(ApiError::from_value);
                let (code, message) = match nested {
                    Some(error) => error.code_and_message(),
                    None => (
                        obj.code.as_ref().and_then(fields::text),
                        obj.message.as_ref().and_then(fields::text),
                    ),
                };
                self.fail(code, message);
            }
        }
    }

    /// An event without a known type: a Chat Completions chunk, `[DONE]`, or something new.
    /// Parsed only when it may carry usage, an error, a finish reason, or the first model.
    fn on_untyped(&mut self, data: &[u8]) {
        if data.trim_ascii() == b"[DONE]" {
            self.end_chat();
            return;
        }
        let worth_parsing = fields::TELLING_KEYS
            .iter()
            .any(|key| fields::has_value(data, key));
        if !worth_parsing {
            if self.model.is_some() || self.probes_left == 0 {
                return;
            }
            self.probes_left -= 1;
        }
        let Some(obj) = fields::parse(data) else {
            return;
        };
        // A Responses event whose `type` is not its first key: the parse tells what it is.
        let kind = obj.kind.as_ref().and_then(Value::as_str).map(str::as_bytes);
        if let Some(Class::Known(kind)) = kind.map(classify) {
            self.on_typed(kind, obj);
            return;
        }
        if let Some(error) = obj.error.as_ref().and_then(ApiError::from_value) {
            let (code, message) = error.code_and_message();
            self.fail(code, message);
        }
        if !is_chat(&obj) {
            return;
        }
        self.learn_ids(&obj);
        self.note_finish_reasons(&obj);
        if let Some(usage) = obj.usage {
            if self.terminal.is_none() {
                self.usage = Some(usage);
            }
            self.end_chat();
        }
    }

    /// A whole JSON body: a response object, a chat completion, or an error.
    fn on_body(&mut self, body: Obj) {
        self.learn_ids(&body);
        if let Some(usage) = body.usage {
            self.usage = Some(usage);
        }
        let status = body.status.as_ref().and_then(Value::as_str);
        let error = body.error.as_ref().and_then(ApiError::from_value);
        if is_chat(&body) {
            self.note_finish_reasons(&body);
            self.terminal = Some(self.chat_terminal());
        } else if let Some(status) = status {
            self.terminal = match status {
                "completed" => Some(Terminal::Completed),
                "incomplete" => Some(Terminal::Incomplete {
                    reason: body
                        .incomplete_details
                        .as_ref()
                        .and_then(|d| d.get("reason"))
                        .and_then(fields::text),
                }),
                "failed" => {
                    let (code, message) = error.unwrap_or_default().code_and_message();
                    self.fail(code.clone(), message.clone());
                    Some(Terminal::Failed { code, message })
                }
                _ => None,
            };
        } else {
            self.error = error;
        }
    }

    /// A Responses terminal event: the first one decides the outcome and the usage.
    fn end_response(&mut self, terminal: Terminal, response: Option<&Obj>) {
        if self.terminal.is_some() {
            return;
        }
        self.usage = response.and_then(|r| r.usage);
        self.terminal = Some(terminal);
        self.feed.terminal = true;
    }

    /// The chat stream's end: the usage chunk, or `[DONE]` when there is none.
    fn end_chat(&mut self) {
        if self.terminal.is_none() {
            self.terminal = Some(self.chat_terminal());
            self.feed.terminal = true;
        }
    }

    fn chat_terminal(&self) -> Terminal {
        match &self.cut_short {
            Some(reason) => Terminal::Incomplete {
                reason: Some(reason.clone()),
            },
            None => Terminal::Completed,
        }
    }

    fn note_finish_reasons(&mut self, obj: &Obj) {
        let reasons = obj
            .choices
            .iter()
            .flatten()
            .filter_map(|c| c.finish_reason.as_ref());
        for reason in reasons.filter_map(Value::as_str) {
            if matches!(reason, "length" | "content_filter") {
                self.cut_short = Some(reason.to_owned());
            }
        }
    }

    /// The model and id, from whichever object names them first.
    fn learn_ids(&mut self, obj: &Obj) {
        if self.model.is_none() {
            self.model = obj
                .model
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if self.response_id.is_none() {
            self.response_id = obj.id.as_ref().and_then(Value::as_str).map(str::to_owned);
        }
    }

    fn fail(&mut self, code: Option<String>, message: Option<String>) {
        self.failure = Some((code.unwrap_or_default(), message.unwrap_or_default()));
        self.feed.failure = true;
    }
}

/// A Chat Completions chunk or body (the ids and usage of other objects are not ours to take).
fn is_chat(obj: &Obj) -> bool {
    obj.choices.is_some()
        || obj
            .object
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|o| o.starts_with("chat.completion"))
}
