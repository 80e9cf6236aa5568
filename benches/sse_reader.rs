//! Throughput of the stream reader on a realistic Responses stream, fed in proxy-sized chunks
//! and, as a live stream arrives, one event per chunk.

use codex_sidecar::tap::{fixtures, BodyKind, Observer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn sse_reader(c: &mut Criterion) {
    let stream = fixtures::responses_stream(400_000);
    let mut group = c.benchmark_group("sse_reader");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk_size in [1024, 16 * 1024, 64 * 1024] {
        group.bench_with_input(
            BenchmarkId::new("responses_stream", chunk_size),
            &chunk_size,
            |b, &chunk_size| {
                b.iter(|| {
                    let mut observer = Observer::new(BodyKind::Sse);
                    for chunk in stream.chunks(chunk_size) {
                        black_box(observer.feed(black_box(chunk)));
                    }
                    observer.finish();
                    black_box(observer.usage())
                })
            },
        );
    }
    // A live stream reaches the proxy one event per frame (the upstream flushes each event).
    let events: Vec<&[u8]> = split_events(&stream);
    group.bench_function("responses_stream/per_event", |b| {
        b.iter(|| {
            let mut observer = Observer::new(BodyKind::Sse);
            for event in &events {
                black_box(observer.feed(black_box(event)));
            }
            observer.finish();
            black_box(observer.usage())
        })
    });
    let chat = fixtures::chat_stream(2_000, true, "stop");
    group.throughput(Throughput::Bytes(chat.len() as u64));
    group.bench_function("chat_stream/16384", |b| {
        b.iter(|| {
            let mut observer = Observer::new(BodyKind::Sse);
            for chunk in chat.chunks(16 * 1024) {
                black_box(observer.feed(black_box(chunk)));
            }
            observer.finish();
            black_box(observer.usage())
        })
    });
    group.finish();
}

/// The stream cut after each blank line, so each piece is one whole event.
fn split_events(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in memchr::memmem::find_iter(stream, b"\n\n") {
        out.push(&stream[start..end + 2]);
        start = end + 2;
    }
    if start < stream.len() {
        out.push(&stream[start..]);
    }
    out
}

criterion_group!(benches, sse_reader);
criterion_main!(benches);
