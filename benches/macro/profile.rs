//! A fixed amount of work on the sidecar alone, so that a profiler's instruction counts
//! (`--wrap-sidecar "valgrind --tool=callgrind ..."`) compare between two builds:
//! 2,000 JSON requests over 8 connections, then 256 streams of 40 events over 16.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::client::{request_body, Conn};
use crate::plan::Options;
use crate::targets::{Kind, Running};
use crate::upstream::Upstream;

pub const JSON_REQUESTS: usize = 2_000;
pub const STREAMS: usize = 256;
const EVENTS: u32 = 40;

pub async fn run(o: &Options) -> Result<(), String> {
    let upstream = Upstream::start(format!("Bearer {}", crate::targets::API_KEY)).await?;
    let t = Running::spawn(Kind::Sidecar, &o.tools, upstream.addr).await?;
    eprintln!(
        "profile: sidecar ready after {:.0} ms",
        t.ready.as_secs_f64() * 1e3
    );
    if let (Some(n), Some(tree)) = (o.profile_open, t.tree) {
        // Memory instead: `n` streams held open (for a heap profiler such as massif).
        let open =
            crate::streams::hold_open(t.dest(), n, tree, &upstream, Duration::from_secs(120)).await;
        eprintln!(
            "profile: {} of {n} streams open, RSS {} KiB",
            open.held,
            open.rss_bytes / 1024
        );
        t.stop().await;
        return Ok(());
    }
    let json = request_body("json");
    let stream = request_body(&format!("sse:{EVENTS}:1000"));
    for (what, body, conns, total) in [
        ("JSON requests", json, 8, JSON_REQUESTS),
        ("streams", stream, 16, STREAMS),
    ] {
        let mut set = JoinSet::new();
        for worker in 0..conns {
            let (body, dest) = (body.clone(), t.dest());
            set.spawn(async move {
                let mut conn = Conn::open(dest, worker).await?;
                let mut delays = Vec::new();
                for _ in 0..total / conns {
                    conn.stream(&body, &mut delays).await?;
                }
                Ok::<_, String>(())
            });
        }
        let mut errors = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r) {
                errors.push(e);
            }
        }
        eprintln!(
            "profile: {total} {what}, {} workers failed {:?}",
            errors.len(),
            errors.first()
        );
    }
    // Let the ledger's group commit run once before the profiler's totals are taken.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    t.stop().await;
    Ok(())
}
