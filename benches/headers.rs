//! Cost of the per-request header rewrite (`proxy::headers`) on Codex's real header set.

use codex_sidecar::proxy::headers;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use std::hint::black_box;

/// What Codex 0.171.0 sends on `POST /v1/responses` (PROTOCOL.md §2).
fn codex_request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:7800"),
        ("authorization", "Bearer local-token-0123456789"),
        ("originator", "codex_exec"),
        (
            "user-agent",
            "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm-256color (codex-exec; 0.171.0)",
        ),
        ("accept", "text/event-stream"),
        ("content-type", "application/json"),
        ("accept-encoding", "zstd,gzip"),
        ("session-id", "0199a3c2-6f1e-7d40-9b8a-3c5e2f1d0a47"),
        ("thread-id", "0199a3c2-6f1e-7d40-9b8a-3c5e2f1d0a47"),
        (
            "x-client-request-id",
            "0199a3c2-7a55-7e11-8c2b-4d6f3e2a1b58",
        ),
        ("x-codex-window-id", "1"),
        ("x-codex-beta-features", "unified_exec,apply_patch_freeform"),
        (
            "x-codex-turn-metadata",
            "{\"turn_id\":\"0199a3c2-7a55\",\"sandbox\":\"read-only\",\"cwd_hash\":\"9f2c1e\"}",
        ),
        ("x-codex-turn-state", "eyJ0dXJuIjoxLCJzdGF0ZSI6ImFjdGl2ZSJ9"),
        ("content-length", "48213"),
        ("connection", "keep-alive"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

/// What the ChatGPT backend answers a streamed turn with (PROTOCOL.md §4).
fn upstream_response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("date", "Fri, 04 Dec 2026 03:30:00 GMT"),
        ("content-type", "text/event-stream; charset=utf-8"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("x-codex-primary-used-percent", "12.5"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-at", "1764018000"),
        ("x-codex-secondary-used-percent", "3.0"),
        ("x-codex-secondary-window-minutes", "10080"),
        ("x-codex-secondary-reset-at", "1764590400"),
        ("x-codex-credits-has-credits", "false"),
        ("x-codex-credits-unlimited", "false"),
        ("x-request-id", "req_6a1f0c9e2b7d4e58a3c1f2e0d9b8a7c6"),
        ("x-codex-turn-state", "eyJ0dXJuIjoyLCJzdGF0ZSI6ImFjdGl2ZSJ9"),
        (
            "set-cookie",
            "__cf_bm=abc; path=/; expires=Fri, 04-Dec-26 04:00:00 GMT; HttpOnly; Secure",
        ),
        ("cf-ray", "8e1f2a3b4c5d6e7f-FRA"),
        ("server", "cloudflare"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn rewrite(c: &mut Criterion) {
    let request = codex_request_headers();
    let response = upstream_response_headers();
    let bearer = HeaderValue::from_static("Bearer sk-proj-0123456789abcdefghijklmnopqrstuvwxyz");
    let mut group = c.benchmark_group("headers");
    group.bench_function("to_upstream", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                headers::to_upstream(&mut h);
                let mut v = bearer.clone();
                v.set_sensitive(true);
                h.insert(AUTHORIZATION, v);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("to_agent_event_stream", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                headers::to_agent(&mut h);
                if headers::is_event_stream(&h) && !headers::is_encoded(&h) {
                    headers::mark_event_stream(&mut h);
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    // The clone alone, to subtract from the two above.
    group.bench_function("clone_only", |b| b.iter(|| black_box(request.clone())));
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
