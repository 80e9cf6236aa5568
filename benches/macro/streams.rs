//! Streams through a target: the delay each event picks up on the way (arrival minus the
//! upstream's emit time), and the memory it takes to hold many streams open at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{request_body, Conn, Dest};
use crate::procfs::Tree;
use crate::upstream::Upstream;

pub struct EventRun {
    /// Arrival minus emit of every stamped event, nanoseconds.
    pub delays: Vec<u64>,
    pub streams: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `conns` connections each streaming `events`-event answers back to back for `duration`.
pub async fn event_delays(
    dest: Dest,
    conns: usize,
    duration: Duration,
    events: u32,
    interval: Duration,
) -> EventRun {
    let body = request_body(&format!("sse:{events}:{}", interval.as_micros()));
    let end = Instant::now() + duration;
    let mut set = JoinSet::new();
    for worker in 0..conns {
        let body = body.clone();
        set.spawn(async move {
            let mut delays = Vec::new();
            let mut streams = 0u64;
            let mut conn = Conn::open(dest, worker).await?;
            // Spread the streams' starts so their events do not all fall on the same tick.
            tokio::time::sleep(interval.mul_f64(worker as f64 / conns as f64)).await;
            while Instant::now() < end {
                conn.stream(&body, &mut delays).await?;
                streams += 1;
            }
            Ok::<_, String>((delays, streams))
        });
    }
    let mut run = EventRun {
        delays: Vec::new(),
        streams: 0,
        errors: 0,
        first_error: None,
    };
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((d, s)) => {
                run.delays.extend(d);
                run.streams += s;
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert(e);
            }
        }
    }
    run
}

pub struct OpenStreams {
    pub wanted: u64,
    /// Streams whose response headers came back through the target.
    pub opened: u64,
    /// Streams the upstream was holding open when memory was read.
    pub held: u64,
    /// Of those, streams whose first event had arrived when memory was read.
    pub first_event: u64,
    pub rss_bytes: u64,
    pub threads: u64,
    /// Streams that ended properly after the release.
    pub completed: u64,
    pub first_error: Option<String>,
    pub open_time: Duration,
}

/// Opens `n` held streams through the target at `addr`, reads the target's memory while all
/// are open, then releases them and waits for them to end.
pub async fn hold_open(
    dest: Dest,
    n: u64,
    tree: Tree,
    upstream: &Upstream,
    deadline: Duration,
) -> OpenStreams {
    let body = request_body("hold");
    upstream.close();
    let opened = Arc::new(AtomicU64::new(0));
    let first = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Connect in waves so no listen backlog overflows.
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        let (body, opened, first, failed, gate) = (
            body.clone(),
            opened.clone(),
            first.clone(),
            failed.clone(),
            gate.clone(),
        );
        set.spawn(async move {
            let result = hold_one(dest, i as usize, &body, &opened, &first, gate).await;
            if result.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            result
        });
    }
    let limit = started + deadline;
    // Open once the upstream holds them all (a proxy that buffers never shows the client
    // its headers) or the client has them all.
    while upstream.held.load(Ordering::Relaxed) < n
        && opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = started.elapsed();
    // Let the target settle (buffers allocated on the first event, thread stacks touched).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_bytes = tree.rss_bytes();
    let threads = tree.threads();
    let first_event = first.load(Ordering::Relaxed);
    let opened_now = opened.load(Ordering::Relaxed);
    let held = upstream.held.load(Ordering::Relaxed);
    upstream.release();
    let mut completed = 0;
    let mut first_error = None;
    let drain = tokio::time::timeout(deadline, async {
        while let Some(r) = set.join_next().await {
            match r.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(()) => completed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    })
    .await;
    if drain.is_err() {
        first_error.get_or_insert_with(|| "streams still open after the release".into());
        set.abort_all();
    }
    OpenStreams {
        wanted: n,
        opened: opened_now,
        held,
        first_event,
        rss_bytes,
        threads,
        completed,
        first_error,
        open_time,
    }
}

async fn hold_one(
    dest: Dest,
    worker: usize,
    body: &Bytes,
    opened: &AtomicU64,
    first: &AtomicU64,
    gate: Arc<Semaphore>,
) -> Result<(), String> {
    let mut permit = Some(gate.acquire_owned().await.map_err(|e| e.to_string())?);
    let mut conn = Conn::open(dest, worker).await?;
    let start = conn.start(body);
    tokio::pin!(start);
    // The next connection may go once this one has its headers, or after 100 ms (a proxy
    // that buffers sends no headers until the stream ends).
    let mut resp = tokio::select! {
        r = &mut start => r?,
        _ = tokio::time::sleep(Duration::from_millis(100)) => {
            permit.take();
            start.await?
        }
    };
    opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut seen_first = false;
    while let Some(frame) = resp.frame().await {
        frame.map_err(|e| format!("stream broke: {e}"))?;
        if !seen_first {
            seen_first = true;
            first.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
