//! Realistic upstream answers for the reader's tests and benchmarks (not part of the API).
//!
//! The Responses stream has the shape the ChatGPT backend sends Codex: a reasoning item, a
//! message made of many small `response.output_text.delta` events (which carry most of the
//! bytes), then a terminal event carrying the whole output and the usage. Text includes
//! multibyte UTF-8 and JSON escapes so that chunk cuts land inside them.

use serde_json::{json, Value};

use crate::usage::Usage;

pub const MODEL: &str = "gpt-5.4";
pub const RESPONSE_ID: &str = "resp_68b7c2e4f5a09d1c8e3b7a6f2d4c1e90";
pub const USAGE: Usage = Usage {
    input: 48_213,
    cached_input: 40_960,
    output: 3_517,
    reasoning: 1_216,
    total: 51_730,
};

pub const CHAT_MODEL: &str = "gpt-4.1-2025-04-14";
pub const CHAT_ID: &str = "chatcmpl-C1x2y3z4a5b6c7d8e9f0";
pub const CHAT_USAGE: Usage = Usage {
    input: 1_917,
    cached_input: 1_536,
    output: 245,
    reasoning: 64,
    total: 2_162,
};

/// How a generated Responses stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// `response.incomplete` with reason `max_output_tokens`.
    Incomplete,
    /// `response.failed` with `rate_limit_exceeded`, "try again in 1.5s".
    Failed,
}

pub const FAILED_CODE: &str = "rate_limit_exceeded";
pub const FAILED_MESSAGE: &str =
    "Rate limit reached for gpt-5.4 on tokens per min (TPM). Please try again in 1.5s.";

const WORDS: [&str; 24] = [
    " the",
    " stream",
    " reader",
    " only",
    " observes",
    ",",
    " it",
    " never",
    " changes",
    " a",
    " byte",
    ".",
    " naïve",
    " café",
    " 日本語",
    " 🚀",
    " Ελληνικά",
    " \"quoted\"",
    "\n",
    " back\\slash",
    " `code`",
    " fn",
    " main()",
    " {}",
];

/// Deterministic pseudo-random numbers (xorshift), so every run sees the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len())]))
            .collect()
    }
}

/// The padding the API adds to deltas so their size does not give the text away.
fn obfuscation(rng: &mut Rng) -> String {
    let len = 4 + rng.below(10);
    rng.token(len)
}

/// Writes one event with `type` as the first key, as the API does (serde_json sorts keys).
fn event(out: &mut Vec<u8>, data: &Value) {
    let mut data = data.clone();
    let name = data
        .as_object_mut()
        .and_then(|map| map.remove("type"))
        .and_then(|name| name.as_str().map(str::to_owned))
        .unwrap_or_default();
    let rest = data.to_string();
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    out.extend_from_slice(
        format!("event: {name}\ndata: {{\"type\":\"{name}\",{rest}\n\n").as_bytes(),
    );
}

fn response(status: &str, output: Value, usage: Value, extra: &[(&str, Value)]) -> Value {
    let mut response = json!({
        "id": RESPONSE_ID, "object": "response", "created_at": 1_764_000_000u64,
        "status": status, "background": false, "error": null, "incomplete_details": null,
        "instructions": "You are Codex, a coding agent. Follow the user's instructions; keep edits small.",
        "max_output_tokens": null, "model": MODEL, "output": output,
        "parallel_tool_calls": false, "previous_response_id": null,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": false,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": "shell", "description": "Runs a shell command",
                   "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}}],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
    });
    for (key, value) in extra {
        response[*key] = value.clone();
    }
    response
}

fn usage_json(usage: Usage) -> Value {
    json!({"input_tokens": usage.input, "input_tokens_details": {"cached_tokens": usage.cached_input},
           "output_tokens": usage.output, "output_tokens_details": {"reasoning_tokens": usage.reasoning},
           "total_tokens": usage.total})
}

/// A completed Responses stream of about `approx_len` bytes.
pub fn responses_stream(approx_len: usize) -> Vec<u8> {
    responses_stream_ending(approx_len, Ending::Completed)
}

/// A Responses stream of about `approx_len` bytes, ending as asked.
pub fn responses_stream_ending(approx_len: usize, ending: Ending) -> Vec<u8> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut out = Vec::with_capacity(approx_len + approx_len / 8);
    let mut seq = 0u64;
    let mut next_seq = || {
        seq += 1;
        seq
    };
    event(
        &mut out,
        &json!({"type": "response.created", "sequence_number": 0,
        "response": response("in_progress", json!([]), Value::Null, &[])}),
    );
    event(
        &mut out,
        &json!({"type": "response.in_progress", "sequence_number": next_seq(),
        "response": response("in_progress", json!([]), Value::Null, &[])}),
    );

    let reasoning_id = format!("rs_{}", rng.token(32));
    event(
        &mut out,
        &json!({"type": "response.output_item.added", "sequence_number": next_seq(),
        "output_index": 0, "item": {"id": reasoning_id, "type": "reasoning", "summary": []}}),
    );
    let mut summary = String::new();
    for _ in 0..(approx_len / 4096).max(4) {
        let delta = WORDS[rng.below(WORDS.len())];
        summary.push_str(delta);
        event(
            &mut out,
            &json!({"type": "response.reasoning_summary_text.delta",
            "sequence_number": next_seq(), "item_id": reasoning_id, "output_index": 0,
            "summary_index": 0, "delta": delta, "obfuscation": obfuscation(&mut rng)}),
        );
    }
    event(
        &mut out,
        &json!({"type": "response.reasoning_summary_text.done", "sequence_number": next_seq(),
        "item_id": reasoning_id, "output_index": 0, "summary_index": 0, "text": summary}),
    );
    let reasoning_item = json!({"id": reasoning_id, "type": "reasoning",
        "encrypted_content": rng.token(1536),
        "summary": [{"type": "summary_text", "text": summary}]});
    event(
        &mut out,
        &json!({"type": "response.output_item.done", "sequence_number": next_seq(),
        "output_index": 0, "item": reasoning_item}),
    );

    let message_id = format!("msg_{}", rng.token(32));
    event(
        &mut out,
        &json!({"type": "response.output_item.added", "sequence_number": next_seq(),
        "output_index": 1, "item": {"id": message_id, "type": "message", "status": "in_progress",
        "content": [], "role": "assistant"}}),
    );
    event(
        &mut out,
        &json!({"type": "response.content_part.added", "sequence_number": next_seq(),
        "item_id": message_id, "output_index": 1, "content_index": 0,
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
    );
    let mut text = String::new();
    // The text is repeated three times at the end (done events and the terminal event).
    while out.len() + 3 * (text.len() + 2048) < approx_len {
        let delta = WORDS[rng.below(WORDS.len())];
        text.push_str(delta);
        event(
            &mut out,
            &json!({"type": "response.output_text.delta", "sequence_number": next_seq(),
            "item_id": message_id, "output_index": 1, "content_index": 0, "delta": delta,
            "logprobs": [], "obfuscation": obfuscation(&mut rng)}),
        );
    }
    event(
        &mut out,
        &json!({"type": "response.output_text.done", "sequence_number": next_seq(),
        "item_id": message_id, "output_index": 1, "content_index": 0, "text": text, "logprobs": []}),
    );
    let part = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    event(
        &mut out,
        &json!({"type": "response.content_part.done", "sequence_number": next_seq(),
        "item_id": message_id, "output_index": 1, "content_index": 0, "part": part}),
    );
    let message_item = json!({"id": message_id, "type": "message", "status": "completed",
        "content": [part], "role": "assistant"});
    event(
        &mut out,
        &json!({"type": "response.output_item.done", "sequence_number": next_seq(),
        "output_index": 1, "item": message_item}),
    );

    let output = json!([reasoning_item, message_item]);
    let terminal = match ending {
        Ending::Completed => json!({"type": "response.completed", "sequence_number": next_seq(),
            "response": response("completed", output, usage_json(USAGE), &[])}),
        Ending::Incomplete => json!({"type": "response.incomplete", "sequence_number": next_seq(),
            "response": response("incomplete", output, usage_json(USAGE),
                &[("incomplete_details", json!({"reason": "max_output_tokens"}))])}),
        Ending::Failed => json!({"type": "response.failed", "sequence_number": next_seq(),
            "response": response("failed", output, usage_json(USAGE),
                &[("error", json!({"code": FAILED_CODE, "message": FAILED_MESSAGE}))])}),
    };
    event(&mut out, &terminal);
    out
}

/// A non-streamed (`stream: false`) Responses body.
pub fn responses_json() -> Vec<u8> {
    let output = json!([{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "text": "Done: 日本語 🚀"}]}]);
    response("completed", output, usage_json(USAGE), &[])
        .to_string()
        .into_bytes()
}

fn chat_usage_json() -> Value {
    json!({"prompt_tokens": CHAT_USAGE.input, "completion_tokens": CHAT_USAGE.output,
           "total_tokens": CHAT_USAGE.total,
           "prompt_tokens_details": {"cached_tokens": CHAT_USAGE.cached_input, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": CHAT_USAGE.reasoning, "audio_tokens": 0,
               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

/// A streamed Chat Completions answer of `deltas` content chunks; with `include_usage` every
/// chunk says `"usage":null` and a last chunk carries the usage, as the API does.
pub fn chat_stream(deltas: usize, include_usage: bool, finish_reason: &str) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut chunk = |choices: Value, usage: Option<Value>| {
        let mut data = json!({"id": CHAT_ID, "object": "chat.completion.chunk",
            "created": 1_764_000_000u64, "model": CHAT_MODEL,
            "service_tier": "default", "system_fingerprint": "fp_3f58d112f7", "choices": choices});
        if include_usage {
            data["usage"] = usage.unwrap_or(Value::Null);
        }
        out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    };
    chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
        "logprobs": null, "finish_reason": null}]),
        None,
    );
    for _ in 0..deltas {
        let word = WORDS[rng.below(WORDS.len())];
        chunk(
            json!([{"index": 0, "delta": {"content": word}, "logprobs": null,
            "finish_reason": null}]),
            None,
        );
    }
    chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason}]),
        None,
    );
    if include_usage {
        chunk(json!([]), Some(chat_usage_json()));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// A non-streamed Chat Completions body.
pub fn chat_json() -> Vec<u8> {
    json!({"id": CHAT_ID, "object": "chat.completion", "created": 1_764_000_000u64,
        "model": CHAT_MODEL, "choices": [{"index": 0, "message": {"role": "assistant",
        "content": "Hello \"there\" 🚀", "refusal": null, "annotations": []},
        "logprobs": null, "finish_reason": "stop"}],
        "usage": chat_usage_json(), "service_tier": "default", "system_fingerprint": "fp_3f58d112f7"})
    .to_string()
    .into_bytes()
}
