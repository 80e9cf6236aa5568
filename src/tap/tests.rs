//! The observer against realistic, cut-up and hostile bodies (CASES.md 2, 3, 4, 5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::fixtures::{self, Ending};
use super::*;
use crate::usage::Usage;

/// Everything the proxy can read from an observer after a body, plus when it was told.
#[derive(Debug, PartialEq, Eq)]
struct Learned {
    model: Option<String>,
    response_id: Option<String>,
    usage: Option<Usage>,
    terminal: Option<Terminal>,
    failures: Vec<(String, String)>,
    error: Option<ApiError>,
    /// Indices of the chunks whose `Feed` said terminal / failure.
    terminal_chunks: Vec<usize>,
    failure_chunks: Vec<usize>,
}

fn observe(kind: BodyKind, chunks: &[&[u8]]) -> Learned {
    let mut observer = Observer::new(kind);
    let mut failures = Vec::new();
    let (mut terminal_chunks, mut failure_chunks) = (Vec::new(), Vec::new());
    for (i, chunk) in chunks.iter().enumerate() {
        let feed = observer.feed(chunk);
        if feed.terminal {
            terminal_chunks.push(i);
        }
        if feed.failure {
            failure_chunks.push(i);
            failures.extend(observer.take_failure());
        }
    }
    observer.finish();
    failures.extend(observer.take_failure());
    Learned {
        model: observer.model().map(str::to_owned),
        response_id: observer.response_id().map(str::to_owned),
        usage: observer.usage(),
        terminal: observer.terminal().cloned(),
        failures,
        error: observer.error().cloned(),
        terminal_chunks,
        failure_chunks,
    }
}

fn observe_sse(stream: &[u8]) -> Learned {
    observe(BodyKind::Sse, &[stream])
}

fn nothing() -> Learned {
    Learned {
        model: None,
        response_id: None,
        usage: None,
        terminal: None,
        failures: vec![],
        error: None,
        terminal_chunks: vec![],
        failure_chunks: vec![],
    }
}

fn completed() -> Learned {
    Learned {
        model: Some(fixtures::MODEL.into()),
        response_id: Some(fixtures::RESPONSE_ID.into()),
        usage: Some(fixtures::USAGE),
        terminal: Some(Terminal::Completed),
        terminal_chunks: vec![0],
        ..nothing()
    }
}

fn with_line_ends(stream: &[u8], eol: &[u8]) -> Vec<u8> {
    // Generated JSON never holds a raw newline, so every `\n` is a line end.
    let mut out = Vec::with_capacity(stream.len() * 2);
    for &b in stream {
        if b == b'\n' {
            out.extend_from_slice(eol);
        } else {
            out.push(b);
        }
    }
    out
}

/// Cuts `stream` in two at every offset: same learning, and the terminal reported in the chunk
/// holding the byte at `terminal_at` (the end of the blank line closing the terminal event).
fn assert_every_cut(stream: &[u8], terminal_at: usize, expected: &Learned) {
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        let got = observe(BodyKind::Sse, &[a, b]);
        let chunk = usize::from(terminal_at >= cut);
        let want = Learned {
            terminal_chunks: vec![chunk],
            failure_chunks: expected.failure_chunks.iter().map(|_| chunk).collect(),
            ..clone_of(expected)
        };
        assert_eq!(got, want, "cut at {cut}");
    }
}

fn clone_of(l: &Learned) -> Learned {
    Learned {
        model: l.model.clone(),
        response_id: l.response_id.clone(),
        usage: l.usage,
        terminal: l.terminal.clone(),
        failures: l.failures.clone(),
        error: l.error.clone(),
        terminal_chunks: l.terminal_chunks.clone(),
        failure_chunks: l.failure_chunks.clone(),
    }
}

/// Cuts into random sizes (1 byte to `max`), with a deterministic seed.
fn random_chunks(stream: &[u8], seed: u64, max: usize) -> Vec<&[u8]> {
    let mut state = seed | 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = (1 + (state % max as u64) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

#[test]
fn case_02_every_cut_of_a_stream_learns_the_same() {
    let stream = fixtures::responses_stream(0);
    assert!(
        stream.len() < 16 * 1024,
        "keep the exhaustive test quick: {}",
        stream.len()
    );
    assert_eq!(observe_sse(&stream), completed());
    assert_every_cut(&stream, stream.len() - 1, &completed());
}

#[test]
fn case_02_every_cut_with_crlf_and_cr_line_ends() {
    let stream = fixtures::responses_stream(0);
    let crlf = with_line_ends(&stream, b"\r\n");
    assert_eq!(observe_sse(&crlf), completed());
    // The blank line's `\r` ends the event; its `\n` may come in the next chunk.
    assert_every_cut(&crlf, crlf.len() - 2, &completed());
    let cr = with_line_ends(&stream, b"\r");
    assert_eq!(observe_sse(&cr), completed());
    assert_every_cut(&cr, cr.len() - 1, &completed());
}

#[test]
fn case_02_random_chunkings_of_a_large_stream() {
    let stream = fixtures::responses_stream(300_000);
    assert!(stream.len() > 250_000);
    let multibyte = stream.iter().filter(|&&b| b >= 0x80).count();
    assert!(multibyte > 1000, "the fixture must exercise UTF-8 cuts");
    let expected = completed();
    let last = stream.len() - 1;
    for seed in 1..=24u64 {
        let chunks = random_chunks(
            &stream,
            seed * 0x9e37_79b9,
            [7, 100, 1500, 20_000][seed as usize % 4],
        );
        let got = observe(BodyKind::Sse, &chunks);
        let mut end = 0;
        let terminal_chunk = chunks.iter().position(|c| {
            end += c.len();
            end > last
        });
        assert_eq!(
            got.terminal_chunks,
            vec![terminal_chunk.unwrap()],
            "seed {seed}"
        );
        assert_eq!(
            Learned {
                terminal_chunks: vec![0],
                ..got
            },
            expected,
            "seed {seed}"
        );
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let got = observe(BodyKind::Sse, &bytes);
    assert_eq!(got.terminal_chunks, vec![last]);
}

#[test]
fn case_02_every_cut_of_a_chat_stream_learns_the_same() {
    let stream = fixtures::chat_stream(8, true, "stop");
    let usage_chunk_end = stream.len() - b"data: [DONE]\n\n".len() - 1;
    let expected = Learned {
        model: Some(fixtures::CHAT_MODEL.into()),
        response_id: Some(fixtures::CHAT_ID.into()),
        usage: Some(fixtures::CHAT_USAGE),
        terminal: Some(Terminal::Completed),
        terminal_chunks: vec![0],
        ..nothing()
    };
    assert_every_cut(&stream, usage_chunk_end, &expected);
    let crlf = with_line_ends(&stream, b"\r\n");
    assert_every_cut(
        &crlf,
        crlf.len() - b"data: [DONE]\r\n\r\n".len() - 2,
        &expected,
    );
}

#[test]
fn case_02_multi_line_data_and_comments() {
    let stream = concat!(
        ": keep-alive\n\n",
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\n",
        "data: \"response\":{\"id\":\"resp_1\",\n",
        "data:\"model\":\"gpt-5.4\"}}\n",
        "id: 1\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"usage\":\n",
        "data: {\"input_tokens\":10,\"output_tokens\":2,\"total_tokens\":12}}}\n\n",
    );
    let expected = Learned {
        model: Some("gpt-5.4".into()),
        response_id: Some("resp_1".into()),
        usage: Some(Usage {
            input: 10,
            cached_input: 0,
            output: 2,
            reasoning: 0,
            total: 12,
        }),
        terminal: Some(Terminal::Completed),
        terminal_chunks: vec![0],
        ..nothing()
    };
    assert_eq!(observe_sse(stream.as_bytes()), expected);
    assert_every_cut(stream.as_bytes(), stream.len() - 1, &expected);
}

#[test]
fn case_03_garbage_and_unknown_events_learn_nothing() {
    let garbage: &[&[u8]] = &[
        b"event: response.completed\ndata: {not json\n\n",
        b"event: response.completed\ndata: [1,2,3]\n\n",
        b"event: response.completed\ndata: {\"response\": 7}\n\n",
        b"event: response.failed\ndata: {\"response\": {\"error\": 5\n\n",
        b"event: something.new\ndata: {\"usage\": {\"input_tokens\": 1}}\n\n",
        b"data: {\"type\":\"codex.rate_limits\",\"error\":null}\n\n",
        b"event: error\ndata: \xff\xfe\x00\n\n",
        b"data: \x00\x01\x02\x03\r\n\r\n",
        b"\xef\xbb\xbfdata: {\"model\":\"x\"}\n\n",
        b"retry: abc\nid: \xff\n\n",
        b"<html><body>502 Bad Gateway</body></html>",
    ];
    for &body in garbage {
        assert_eq!(
            observe_sse(body),
            nothing(),
            "{}",
            String::from_utf8_lossy(body)
        );
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(observe(BodyKind::Sse, &bytes), nothing());
        assert_eq!(observe(BodyKind::Json, &[body]), nothing());
    }
}

#[test]
fn case_03_noise_between_events_does_not_hide_the_real_ones() {
    let stream = fixtures::responses_stream(20_000);
    let mut noisy = Vec::new();
    let mut blank_lines = 0;
    for event in stream.split_inclusive(|&b| b == b'\n') {
        blank_lines += usize::from(event == b"\n");
        if event == b"\n" && blank_lines % 3 == 0 {
            // Right after a blank line: a junk event, comments and unknown fields.
            noisy.extend_from_slice(event);
            noisy.extend_from_slice(b"event: bogus\ndata: {\"usage\":{\"input_tokens\":\n\n");
            noisy.extend_from_slice(b":\xff\xfe comment\nfoo: bar\n\n");
            continue;
        }
        noisy.extend_from_slice(event);
    }
    assert!(noisy.len() > stream.len());
    assert_eq!(observe_sse(&noisy), completed());
}

#[test]
fn case_03_binary_noise_never_panics_or_learns() {
    let mut state = 0x1234_5678_9abc_def1_u64;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for max in [1, 17, 4096] {
        let chunks = random_chunks(&noise, max as u64, max);
        assert_eq!(observe(BodyKind::Sse, &chunks), nothing());
        assert_eq!(observe(BodyKind::Json, &chunks), nothing());
    }
}

#[test]
fn case_04_response_failed_mid_stream_is_a_failure() {
    let stream = fixtures::responses_stream_ending(20_000, Ending::Failed);
    let expected = Learned {
        terminal: Some(Terminal::Failed {
            code: Some(fixtures::FAILED_CODE.into()),
            message: Some(fixtures::FAILED_MESSAGE.into()),
        }),
        failures: vec![(
            fixtures::FAILED_CODE.into(),
            fixtures::FAILED_MESSAGE.into(),
        )],
        failure_chunks: vec![0],
        ..completed()
    };
    assert_eq!(observe_sse(&stream), expected);
    // After the failure the stream may go on (here: a new error event): each is reported once.
    let mut longer = stream.clone();
    longer.extend_from_slice(
        b"event: error\ndata: {\"type\":\"error\",\"code\":\"insufficient_quota\",\"message\":\"Quota exceeded\"}\n\n",
    );
    let chunks: Vec<&[u8]> = vec![&longer[..stream.len()], &longer[stream.len()..]];
    let got = observe(BodyKind::Sse, &chunks);
    assert_eq!(got.failure_chunks, vec![0, 1]);
    assert_eq!(
        got.failures,
        vec![
            (
                fixtures::FAILED_CODE.into(),
                fixtures::FAILED_MESSAGE.into()
            ),
            ("insufficient_quota".into(), "Quota exceeded".into())
        ]
    );
    assert_eq!(got.terminal, expected.terminal);
    assert_eq!(got.terminal_chunks, vec![0]);
}

#[test]
fn case_04_take_failure_clears_and_keeps_the_latest() {
    let mut observer = Observer::new(BodyKind::Sse);
    let feed = observer.feed(
        b"event: error\ndata: {\"type\":\"error\",\"code\":\"a\",\"message\":\"1\"}\n\n\
          data: {\"type\":\"error\",\"error\":{\"type\":\"server_is_overloaded\",\"message\":\"2\"}}\n\n",
    );
    assert_eq!(
        feed,
        Feed {
            terminal: false,
            failure: true
        }
    );
    assert_eq!(
        observer.take_failure(),
        Some(("server_is_overloaded".into(), "2".into()))
    );
    assert_eq!(observer.take_failure(), None);
    assert_eq!(observer.terminal(), None);
    assert!(
        observer
            .feed(b"event: error\ndata: {\"type\":\"error\"}\n\n")
            .failure
    );
    assert_eq!(
        observer.take_failure(),
        Some((String::new(), String::new()))
    );
}

#[test]
fn response_incomplete_with_reason() {
    let stream = fixtures::responses_stream_ending(20_000, Ending::Incomplete);
    let expected = Learned {
        terminal: Some(Terminal::Incomplete {
            reason: Some("max_output_tokens".into()),
        }),
        ..completed()
    };
    assert_eq!(observe_sse(&stream), expected);
}

#[test]
fn case_05_streamed_responses_usage_is_exact() {
    let stream = fixtures::responses_stream(100_000);
    assert_eq!(observe_sse(&stream).usage, Some(fixtures::USAGE));
}

#[test]
fn case_05_non_streamed_responses_usage_is_exact() {
    let body = fixtures::responses_json();
    let chunks: Vec<&[u8]> = body.chunks(13).collect();
    let expected = Learned {
        terminal_chunks: vec![],
        ..completed()
    };
    assert_eq!(observe(BodyKind::Json, &chunks), expected);
}

#[test]
fn case_05_chat_completions_usage_is_exact() {
    let stream = fixtures::chat_stream(200, true, "stop");
    let usage_chunk_end = stream.len() - b"data: [DONE]\n\n".len() - 1;
    let expected = Learned {
        model: Some(fixtures::CHAT_MODEL.into()),
        response_id: Some(fixtures::CHAT_ID.into()),
        usage: Some(fixtures::CHAT_USAGE),
        terminal: Some(Terminal::Completed),
        terminal_chunks: vec![0],
        ..nothing()
    };
    assert_eq!(observe_sse(&stream), expected);
    // The usage chunk is the terminal one, not `[DONE]` after it.
    let (a, b) = stream.split_at(usage_chunk_end + 1);
    assert_eq!(observe(BodyKind::Sse, &[a, b]).terminal_chunks, vec![0]);
    let (a, b) = stream.split_at(usage_chunk_end);
    assert_eq!(observe(BodyKind::Sse, &[a, b]).terminal_chunks, vec![1]);
    let chunks = random_chunks(&stream, 99, 50);
    assert_eq!(
        observe(BodyKind::Sse, &chunks).usage,
        Some(fixtures::CHAT_USAGE)
    );

    let body = fixtures::chat_json();
    let expected_json = Learned {
        terminal_chunks: vec![],
        ..expected
    };
    assert_eq!(observe(BodyKind::Json, &[&body]), expected_json);
}

#[test]
fn chat_stream_without_usage_ends_at_done() {
    let stream = fixtures::chat_stream(20, false, "stop");
    let got = observe_sse(&stream);
    assert_eq!(got.usage, None);
    assert_eq!(got.model.as_deref(), Some(fixtures::CHAT_MODEL));
    assert_eq!(got.terminal, Some(Terminal::Completed));
    let (a, b) = stream.split_at(stream.len() - 1);
    assert_eq!(observe(BodyKind::Sse, &[a, b]).terminal_chunks, vec![1]);
}

#[test]
fn chat_cut_short_is_incomplete() {
    let got = observe_sse(&fixtures::chat_stream(5, true, "length"));
    assert_eq!(
        got.terminal,
        Some(Terminal::Incomplete {
            reason: Some("length".into())
        })
    );
    assert_eq!(got.usage, Some(fixtures::CHAT_USAGE));
}

#[test]
fn chat_stream_error_chunk_is_a_failure() {
    let stream = b"data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n";
    let got = observe_sse(stream);
    assert_eq!(
        got.failures,
        vec![("server_error".into(), "The server had an error".into())]
    );
    assert_eq!(got.terminal, None);
}

#[test]
fn event_type_from_json_alone() {
    // The same stream without `event:` lines: the JSON `type` says what each event is.
    let stream = fixtures::responses_stream(20_000);
    let unnamed: Vec<u8> = stream
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"event:"))
        .flatten()
        .copied()
        .collect();
    assert_eq!(observe_sse(&unnamed), completed());
}

#[test]
fn huge_events_over_the_cap_are_dropped() {
    let mut stream =
        b"event: response.created\ndata: {\"response\":{\"model\":\"m\",\"pad\":\"".to_vec();
    stream.resize(stream.len() + sse::DATA_CAP, b'a');
    stream.extend_from_slice(b"\"}}\n\n");
    stream.extend_from_slice(&fixtures::responses_stream(0));
    let chunks: Vec<&[u8]> = stream.chunks(64 * 1024).collect();
    assert_eq!(
        observe(BodyKind::Sse, &chunks).model.as_deref(),
        Some(fixtures::MODEL)
    );

    let mut observer = Observer::new(BodyKind::Json);
    let body = fixtures::responses_json();
    observer.feed(&body[..body.len() - 1]);
    observer.feed(&vec![b' '; JSON_CAP]);
    observer.feed(&body[body.len() - 1..]);
    observer.finish();
    assert_eq!((observer.usage(), observer.model()), (None, None));
}

#[test]
fn json_error_bodies() {
    let body = br#"{"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
        "plan_type": "plus", "resets_at": 1764000000, "resets_in_seconds": 3600}}"#;
    let got = observe(BodyKind::Json, &[body]);
    assert_eq!(
        got.error,
        Some(ApiError {
            error_type: Some("usage_limit_reached".into()),
            code: None,
            message: Some("The usage limit has been reached".into()),
            plan_type: Some("plus".into()),
            resets_at: Some(1_764_000_000),
            resets_in_seconds: Some(3600),
        })
    );
    assert_eq!((got.terminal, got.failures), (None, vec![]));

    let failed = br#"{"id":"resp_9","object":"response","status":"failed","model":"gpt-5.4",
        "error":{"code":"server_is_overloaded","message":"busy"},"usage":null}"#;
    let got = observe(BodyKind::Json, &[failed]);
    assert_eq!(
        got.terminal,
        Some(Terminal::Failed {
            code: Some("server_is_overloaded".into()),
            message: Some("busy".into())
        })
    );
    assert_eq!(
        got.failures,
        vec![("server_is_overloaded".into(), "busy".into())]
    );
    assert_eq!(
        (got.error, got.usage, got.response_id.as_deref()),
        (None, None, Some("resp_9"))
    );
}

#[test]
fn other_bodies_are_not_read_and_finish_is_final() {
    let stream = fixtures::responses_stream(0);
    assert_eq!(observe(BodyKind::Other, &[&stream]), nothing());
    let mut observer = Observer::new(BodyKind::Sse);
    observer.finish();
    assert_eq!(observer.feed(&stream), Feed::default());
    observer.finish();
    assert_eq!(observer.terminal(), None);
    // An event cut off by the end of the body is discarded, as the agent discards it.
    let cut = &stream[..stream.len() - 1];
    let got = observe_sse(cut);
    assert_eq!((got.terminal, got.usage), (None, None));
    assert_eq!(got.model.as_deref(), Some(fixtures::MODEL));
}

#[test]
fn body_kind_from_content_type() {
    use BodyKind::*;
    let cases = [
        (Some("text/event-stream"), Sse),
        (Some("Text/Event-Stream; charset=utf-8"), Sse),
        (Some("application/json"), Json),
        (Some(" application/json ; charset=UTF-8"), Json),
        (Some("application/problem+json"), Json),
        (Some("text/html"), Other),
        (Some(""), Other),
        (None, Other),
    ];
    for (content_type, kind) in cases {
        assert_eq!(
            BodyKind::from_content_type(content_type),
            kind,
            "{content_type:?}"
        );
    }
}

#[test]
fn event_type_found_by_parsing_when_not_first() {
    let stream = br#"data: {"response":{"id":"resp_2","model":"m","text":{"format":{"type":"text"}}},"type":"response.created"}

data: {"response":{"incomplete_details":{"reason":"content_filter"},"usage":null},"type":"response.incomplete"}

"#;
    let got = observe_sse(stream);
    assert_eq!(
        (got.model.as_deref(), got.response_id.as_deref()),
        (Some("m"), Some("resp_2"))
    );
    assert_eq!(
        got.terminal,
        Some(Terminal::Incomplete {
            reason: Some("content_filter".into())
        })
    );
    assert_eq!(got.usage, None);
}
