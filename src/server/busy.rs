//! Connections beyond `server.max_connections`: each gets one `503
//! too_many_connections` JSON answer and is closed, without being served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Refusals answered at once; past this many a connection is dropped unanswered
/// (a flood must not grow tasks without bound).
const MAX_REFUSING: usize = 64;
/// The whole refusal (read the head, answer, let the client read) ends within this.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Most bytes read of the refused request's head before answering.
const MAX_HEAD: usize = 16 * 1024;

pub struct Refusals {
    slots: Arc<Semaphore>,
    answer: Bytes,
    count: Arc<AtomicU64>,
}

impl Refusals {
    pub fn new(max_connections: usize) -> Self {
        let err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "codex-sidecar already serves server.max_connections ({max_connections}) connections; \
                 close idle connections, or raise server.max_connections"
            ),
        );
        let body = err.json_body();
        let mut answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        Refusals {
            slots: Arc::new(Semaphore::new(MAX_REFUSING)),
            answer: Bytes::from(answer),
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Answers `stream` with the 503 in the background and closes it.
    pub fn refuse(&self, stream: TcpStream) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n % 100 == 0 {
            tracing::warn!(
                refused = n,
                "connection refused: server.max_connections reached"
            );
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let answer = self.answer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIME, answer_once(stream, answer)).await;
            drop(slot);
        });
    }
}

/// Reads the request head (so closing does not reset the connection before
/// the client read the answer), writes the answer, half-closes, then drains.
async fn answer_once(mut stream: TcpStream, answer: Bytes) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while head.len() < MAX_HEAD && memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    // Until the client closes (or the refusal time ends): what it still
    // sends is discarded so the kernel does not answer it with a reset.
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}
