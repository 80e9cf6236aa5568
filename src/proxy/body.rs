//! Bodies in both directions. Up: the agent's request body, streamed with the
//! size limit enforced as it flows. Down: the upstream's answer, passed on frame
//! by frame while the stream reader observes it, with the idle timeout, and
//! the end-of-body hook that fires exactly once (end, error or cancel).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::exchange::{Exchange, Outcome};
use crate::error::ApiError;
use crate::tap::{BodyKind, Observer, Terminal};
use crate::upstream::BoxError;

/// The agent's request body on its way up, cut off past `max_request_body`.
pub struct UpstreamBody {
    inner: Incoming,
    remaining: u64,
    too_large: Arc<AtomicBool>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, limit: u64, too_large: Arc<AtomicBool>) -> Self {
        UpstreamBody {
            inner,
            remaining: limit,
            too_large,
        }
    }
}

#[derive(Debug)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body larger than server.max_request_body")
    }
}

impl std::error::Error for TooLarge {}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the agent receives.
pub enum ResponseBody {
    /// An answer the sidecar wrote itself (errors), or a buffered upstream error.
    Full(Option<Bytes>),
    /// The upstream's answer, passed through.
    Stream(Box<StreamBody>),
}

impl ResponseBody {
    pub fn full(b: Bytes) -> Self {
        ResponseBody::Full(Some(b))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(s) => s.ended && s.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(s) if !s.event_stream => s.inner.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// The upstream body with its reader, idle timer and end-of-body hook.
pub struct StreamBody {
    inner: Incoming,
    observer: Observer,
    event_stream: bool,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    exchange: Option<Exchange>,
    /// A last frame to send before ending (the `response.failed` of an error).
    pending: Option<Bytes>,
    ended: bool,
    /// Bytes still to come when the upstream declared a length (`Content-Length`).
    remaining: Option<u64>,
}

impl StreamBody {
    pub fn new(
        inner: Incoming,
        kind: BodyKind,
        event_stream: bool,
        idle_timeout: Duration,
        exchange: Exchange,
    ) -> Self {
        StreamBody {
            remaining: inner.size_hint().exact(),
            inner,
            observer: Observer::new(kind),
            event_stream,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            exchange: Some(exchange),
            pending: None,
            ended: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(mut ex) = self.exchange.take() {
            ex.learn(&self.observer);
            ex.finish(outcome, self.observer.usage());
        }
    }

    fn outcome_of_terminal(&self) -> Outcome {
        match self.observer.terminal() {
            Some(Terminal::Completed) | None => Outcome::Completed,
            Some(Terminal::Incomplete { .. }) => Outcome::Incomplete,
            Some(Terminal::Failed { .. }) => Outcome::Failed,
        }
    }

    /// Ends the stream on an upstream failure: SSE streams get a
    /// `response.failed` event, other bodies an error (the connection is cut).
    fn fail(
        &mut self,
        err: ApiError,
        cause: BoxError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(ex) = self.exchange.as_mut() {
            ex.upstream_failed(&err);
        }
        self.finish(Outcome::UpstreamError);
        self.ended = true;
        if self.event_stream {
            Poll::Ready(Some(Ok(Frame::data(err.sse_failed_event()))))
        } else {
            Poll::Ready(Some(Err(cause)))
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(last) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(last))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    let t = Instant::now();
                    let feed = this.observer.feed(data);
                    if let Some(deadline) =
                        tokio::time::Instant::now().checked_add(this.idle_timeout)
                    {
                        this.idle.as_mut().reset(deadline);
                    }
                    if let Some(ex) = this.exchange.as_mut() {
                        if let Some((code, message)) = this.observer.take_failure() {
                            ex.stream_failure(&code, &message);
                        }
                        ex.add_overhead(t.elapsed());
                    }
                    if feed.terminal {
                        // The record is written before the agent can see the end.
                        let outcome = this.outcome_of_terminal();
                        this.finish(outcome);
                    }
                }
                if this.remaining == Some(0) || this.inner.is_end_stream() {
                    // The upstream body is complete (its Content-Length is in, or the end
                    // of stream came with the data). End it here: hyper stops polling a
                    // body once it has written Content-Length bytes, so the end would
                    // otherwise look like the agent going away.
                    this.observer.finish();
                    let outcome = this.outcome_of_terminal();
                    this.finish(outcome);
                    this.ended = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let (kind, text) = crate::upstream::classify(&e);
                crate::telemetry::upstream_error(kind);
                let err = ApiError::upstream_unreachable(format!("the stream broke off: {text}"));
                this.fail(err, Box::new(e))
            }
            Poll::Ready(None) => {
                this.observer.finish();
                let outcome = this.outcome_of_terminal();
                this.finish(outcome);
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    crate::telemetry::upstream_error("timeout");
                    let secs = this.idle_timeout.as_secs_f64();
                    let err = ApiError::upstream_timeout(format!(
                        "the upstream sent nothing for {secs}s (upstream.idle_timeout) and the stream was ended; retry the request"
                    ));
                    let cause: BoxError = Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "upstream idle timeout",
                    ));
                    return this.fail(err, cause);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_none()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // The agent went away before the end: dropping `inner` cancels the
        // upstream request (its connection is not reused with unread data).
        if self.exchange.is_some() {
            self.finish(Outcome::ClientCancelled);
        }
    }
}
