//! Fixed-rate (open-loop) and as-fast-as-possible (closed-loop) load over N connections.
//!
//! Open loop: each connection sends at `rate / connections`, on a fixed schedule that does
//! not wait for the target. A request that had to wait behind its connection's previous one
//! is timed from when it was due, so a slow target cannot hide its queue (no coordinated
//! omission); one that waited for the timer is timed from when it was really sent, so the
//! timer's 1 ms granularity does not count against anyone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::client::{since, Conn, Dest};

pub struct Run {
    /// Latency of each completed request, in nanoseconds (see `stats::Percentiles`).
    pub latencies: Vec<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    fn new() -> Run {
        Run {
            latencies: Vec::new(),
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens a connection, retrying a few times (a target under a burst of connects may refuse).
async fn open(dest: Dest, worker: usize) -> Result<Conn, String> {
    let mut last = String::new();
    for _ in 0..5 {
        match Conn::open(dest, worker).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}

/// `rate` requests per second in total over `conns` connections for `duration`.
pub async fn open_loop(
    dest: Dest,
    rate: u32,
    conns: usize,
    duration: Duration,
    body: Bytes,
) -> Run {
    let interval = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
    let mut set = JoinSet::new();
    // Every connection is open and warm before the clock starts.
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + duration;
    for worker in 0..conns {
        let body = body.clone();
        set.spawn(async move {
            let mut run = Run::new();
            let mut conn = match open(dest, worker).await {
                Ok(c) => c,
                Err(e) => {
                    run.fail(e);
                    return run;
                }
            };
            if let Err(e) = conn.call(&body).await {
                run.fail(format!("warm-up: {e}"));
                return run;
            }
            let offset = interval.mul_f64(worker as f64 / conns as f64);
            let mut k: u32 = 0;
            loop {
                let due = start + offset + interval * k;
                k += 1;
                if due >= end {
                    break;
                }
                let from = if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                match conn.call(&body).await {
                    Ok(_) => {
                        run.ok += 1;
                        run.latencies.push(since(from));
                    }
                    Err(e) => {
                        run.fail(e);
                        match open(dest, worker).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            run
        });
    }
    let mut total = Run::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => total.merge(r),
            Err(e) => total.fail(format!("worker died: {e}")),
        }
    }
    // Until the last answer: a target that fell behind shows its real rate.
    total.elapsed = start.elapsed().max(duration);
    total
}

/// Back-to-back requests on `conns` connections for `duration`: the most the target can do.
pub async fn closed_loop(dest: Dest, conns: usize, duration: Duration, body: Bytes) -> Run {
    let mut set = JoinSet::new();
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + duration;
    for worker in 0..conns {
        let body = body.clone();
        set.spawn(async move {
            let mut run = Run::new();
            let mut conn = match open(dest, worker).await {
                Ok(c) => c,
                Err(e) => {
                    run.fail(e);
                    return run;
                }
            };
            if let Err(e) = conn.call(&body).await {
                run.fail(format!("warm-up: {e}"));
                return run;
            }
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                let t = Instant::now();
                match conn.call(&body).await {
                    Ok(_) => {
                        run.ok += 1;
                        run.latencies.push(since(t));
                    }
                    Err(e) => {
                        run.fail(e);
                        match open(dest, worker).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            run
        });
    }
    let mut total = Run::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => total.merge(r),
            Err(e) => total.fail(format!("worker died: {e}")),
        }
    }
    // Until the last answer: a target that fell behind shows its real rate.
    total.elapsed = start.elapsed().max(duration);
    total
}
