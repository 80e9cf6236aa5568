//! The sections of RESULTS.md.

use std::fmt::{Result as FmtResult, Write};

use super::{mib, opt, us, Results};
use crate::plan::{
    CONNECTIONS, OPEN_STREAMS, RATES, STREAM_CONNECTIONS, STREAM_EVENTS, STREAM_INTERVAL,
};
use crate::stats::{median, Pct};
use crate::streams::OpenStreams;
use crate::targets::Kind;

fn first_line(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// What the SSE reader's benchmark stream is made of (computed from the fixture itself).
fn fixture_description() -> String {
    let stream = codex_sidecar::tap::fixtures::responses_stream(400_000);
    let mut sizes = Vec::new();
    let mut start = 0;
    for end in memchr::memmem::find_iter(&stream, b"\n\n") {
        sizes.push((&stream[start..end + 2], end + 2 - start));
        start = end + 2;
    }
    let deltas: Vec<usize> = sizes
        .iter()
        .filter(|(e, _)| e.starts_with(b"event: response.output_text.delta"))
        .map(|(_, n)| *n)
        .collect();
    let delta_bytes: usize = deltas.iter().sum();
    let last = sizes.last().map_or(0, |(_, n)| *n);
    format!(
        "The SSE reader reads `tap::fixtures::responses_stream(400_000)`, shaped like the ChatGPT \
         backend's answers to Codex: {} bytes in {} events, {} of them `response.output_text.delta` \
         averaging {} bytes (with the API's `obfuscation` padding; {:.0} % of the bytes), a reasoning \
         item with encrypted content, and a {} byte terminal `response.completed` repeating the \
         output and the usage. It is fed in 1, 16 and 64 KiB chunks and one event per chunk (how a \
         live stream arrives). The header rewrite runs on Codex 0.171.0's request headers and a \
         ChatGPT backend response's; the ledger append on an org record with usage.",
        stream.len(),
        sizes.len(),
        deltas.len(),
        delta_bytes / deltas.len().max(1),
        delta_bytes as f64 * 100.0 / stream.len().max(1) as f64,
        last
    )
}

/// Every stream reached the upstream and came back through the target with its first event.
fn all_open(o: &OpenStreams) -> bool {
    o.held >= o.wanted && o.opened >= o.wanted
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Results {
    pub(super) fn head(&self, s: &mut String) -> FmtResult {
        writeln!(s, "# Benchmarks: the sidecar next to a direct connection, a byte relay, nginx and `codex responses-api-proxy`\n")?;
        writeln!(
            s,
            "Written by `benches/macro` (run by `scripts/bench.sh`) on {}; {} rounds{}, {:.0} s. \
             Every figure is the median over the rounds; latency and stream figures come from \
             HDR histograms (1 µs to 60 s, 3 significant digits).\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            self.rounds,
            if self.quick {
                " (quick mode: short runs, not for quoting)"
            } else {
                ""
            },
            self.elapsed.as_secs_f64()
        )?;
        writeln!(s, "## Machine\n")?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        writeln!(s, "- `nproc`: {cpus}")?;
        writeln!(s, "- CPU: {}", first_line("/proc/cpuinfo", "model name"))?;
        writeln!(
            s,
            "- kernel: {}",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        )?;
        writeln!(s, "- memory: {}", first_line("/proc/meminfo", "MemTotal"))?;
        writeln!(s, "- open-file limit during the run: {}", self.nofile)?;
        let loads: Vec<String> = self
            .load_samples
            .iter()
            .map(|(w, l)| format!("{l} ({w})"))
            .collect();
        writeln!(
            s,
            "- load average (1 min) during the run: {}. The 2 cores are shared with other \
               work (compilers); the harness, the upstream and the target share them too.\n",
            loads.join(", ")
        )?;
        writeln!(s, "## Versions\n")?;
        for (name, v) in &self.versions {
            writeln!(s, "- {name}: `{v}`")?;
        }
        writeln!(s, "\n## Commands\n")?;
        writeln!(s, "```sh")?;
        for c in &self.commands {
            writeln!(s, "{c}")?;
        }
        writeln!(s, "```\n")
    }

    pub(super) fn targets(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Targets\n")?;
        writeln!(s, "| target | measured | |")?;
        writeln!(s, "|---|---|---|")?;
        for rate in RATES {
            let side = self.latency_added(Kind::Sidecar, rate, Pct::P99);
            let ngx = self.latency_added(Kind::Nginx, rate, Pct::P99);
            let relay = self.latency_added(Kind::Relay, rate, Pct::P99);
            let ok = side.zip(ngx).map(|(a, b)| a <= b);
            writeln!(
                s,
                "| added p99 at {rate} req/s ≤ nginx's | sidecar {} µs, nginx {} µs (tcp-relay {} µs) | {} |",
                opt(side, us),
                opt(ngx, us),
                opt(relay, us),
                met(ok)
            )?;
        }
        for conns in STREAM_CONNECTIONS {
            let ev = self.event_added(Kind::Sidecar, conns, Pct::P99);
            let ngx = self.event_added(Kind::Nginx, conns, Pct::P99);
            let relay = self.event_added(Kind::Relay, conns, Pct::P99);
            writeln!(
                s,
                "| added per-event delay p99 < 100 µs, {conns} streams at once | sidecar {} µs (nginx {} µs, tcp-relay {} µs) | {} |",
                opt(ev, us),
                opt(ngx, us),
                opt(relay, us),
                met(ev.map(|v| v < 100_000.0))
            )?;
        }
        let idle = self.rss_idle.get(&Kind::Sidecar).copied();
        writeln!(
            s,
            "| RSS idle < 16 MiB | {} MiB | {} |",
            opt(idle.map(|b| b as f64), |b| mib(b as u64)),
            met(idle.map(|b| b < 16 << 20))
        )?;
        let k1 = self
            .open_rss(Kind::Sidecar, OPEN_STREAMS[0])
            .map(|o| (o.rss_bytes, all_open(o)));
        writeln!(
            s,
            "| RSS with 1,000 open streams < 64 MiB | {} MiB | {} |",
            opt(k1.map(|k| k.0 as f64), |b| mib(b as u64)),
            met(k1.map(|(b, all)| all && b < 64 << 20))
        )?;
        let ready = self.ready_ms(Kind::Sidecar);
        writeln!(
            s,
            "| ready < 50 ms | {} ms | {} |",
            opt(ready, |v| format!("{v:.1}")),
            met(ready.map(|v| v < 50.0))
        )?;
        let sse = self
            .micro
            .iter()
            .filter(|m| m.id.starts_with("sse_reader/responses_stream"))
            .filter_map(|m| m.mb_per_s())
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.min(v)))
            });
        writeln!(
            s,
            "| SSE reader ≥ 1 GB/s (slowest Responses chunking) | {} MB/s | {} |\n",
            opt(sse, |v| format!("{v:.0}")),
            met(sse.map(|v| v >= 1000.0))
        )
    }

    pub(super) fn micro_table(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Micro benchmarks (criterion)\n")?;
        if self.micro.is_empty() {
            return writeln!(s, "No criterion results were found (run `cargo bench --bench sse_reader --bench headers --bench ledger_append` first).\n");
        }
        writeln!(s, "{}\n", fixture_description())?;
        writeln!(s, "| benchmark | median per iteration | throughput |")?;
        writeln!(s, "|---|---|---|")?;
        for m in &self.micro {
            let time = if m.median_ns >= 1e6 {
                format!("{:.2} ms", m.median_ns / 1e6)
            } else if m.median_ns >= 1e3 {
                format!("{:.2} µs", m.median_ns / 1e3)
            } else {
                format!("{:.0} ns", m.median_ns)
            };
            let tp = opt(m.mb_per_s(), |v| format!("{v:.0} MB/s"));
            writeln!(s, "| `{}` | {time} | {tp} |", m.id)?;
        }
        writeln!(s)
    }

    pub(super) fn latency_tables(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Latency at fixed request rates\n")?;
        writeln!(
            s,
            "Open loop, {CONNECTIONS} keep-alive connections, non-streamed JSON answers (8 KiB request, \
             1.5 KiB answer). *Added* is the target minus the direct connection in the same \
             round (median over rounds); absolute figures follow. Plot: [latency.svg](latency.svg).\n"
        )?;
        writeln!(s, "| rate | target | added p50 µs | added p99 µs | added p99.9 µs | p50 µs | p99 µs | p99.9 µs | achieved req/s | CPU µs/request | errors |")?;
        writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        for rate in RATES {
            for kind in Kind::ALL {
                let rows: Vec<_> = self
                    .latency
                    .iter()
                    .filter(|r| r.kind == kind && r.rate == rate)
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let added = |p| {
                    if kind == Kind::Direct {
                        "–".into()
                    } else {
                        opt(self.latency_added(kind, rate, p), us)
                    }
                };
                let abs = |p| opt(self.latency_median(kind, rate, p), us);
                let achieved = median(rows.iter().map(|r| r.achieved));
                let cpu = median(rows.iter().filter_map(|r| r.cpu_us));
                let errors: u64 = rows.iter().map(|r| r.errors).sum();
                writeln!(
                    s,
                    "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
                    kind.name(),
                    added(Pct::P50),
                    added(Pct::P99),
                    added(Pct::P999),
                    abs(Pct::P50),
                    abs(Pct::P99),
                    abs(Pct::P999),
                    opt(achieved, |v| format!("{v:.0}")),
                    opt(cpu, |v| format!("{v:.1}")),
                )?;
            }
        }
        writeln!(s)
    }

    pub(super) fn throughput_table(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Maximum throughput\n")?;
        writeln!(s, "Closed loop: {CONNECTIONS} connections sending back to back. The harness (client and upstream) shares the 2 cores with the target, so *direct* is the harness's own ceiling.\n")?;
        writeln!(
            s,
            "| target | req/s | p50 µs | p99 µs | CPU µs/request | errors |"
        )?;
        writeln!(s, "|---|---|---|---|---|---|")?;
        for kind in Kind::ALL {
            let rows: Vec<_> = self.max.iter().filter(|r| r.kind == kind).collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                kind.name(),
                opt(median(rows.iter().map(|r| r.throughput)), |v| format!(
                    "{v:.0}"
                )),
                opt(median(rows.iter().map(|r| r.pct.p50)), us),
                opt(median(rows.iter().map(|r| r.pct.p99)), us),
                opt(median(rows.iter().filter_map(|r| r.cpu_us)), |v| format!(
                    "{v:.1}"
                )),
                rows.iter().map(|r| r.errors).sum::<u64>()
            )?;
        }
        writeln!(s)
    }

    pub(super) fn memory_table(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Memory and start-up\n")?;
        writeln!(s, "RSS is `VmRSS` of the process plus its children (nginx: master and workers). *Idle*: 0.5 s after ready; *after load*: idle again after all the runs above. *Open streams*: that many streams held open at once through the target (the upstream has sent the first event and waits), memory read 0.5 s after all are open. *Ready*: spawn until `GET /readyz` answers 200 (the sidecar's admin listener; an nginx `location`); Codex's proxy and the relay have no readiness route, so for them the first HTTP answer of any status (Codex's proxy answers 403, the relay passes on the upstream's answer).\n")?;
        if self.open_counts.iter().any(|&n| !OPEN_STREAMS.contains(&n)) {
            writeln!(s, "The open-file limit here is {} and cannot be raised (the sandbox lacks `CAP_SYS_RESOURCE`); each stream takes a socket on both sides of the proxy, and the harness holds both ends, so the largest count measured is {}, not 10,000.\n", self.nofile, self.open_counts.last().copied().unwrap_or(0))?;
        }
        write!(
            s,
            "| target | ready ms | RSS idle MiB | RSS after load MiB |"
        )?;
        for n in &self.open_counts {
            write!(s, " {n} open streams MiB |")?;
        }
        writeln!(
            s,
            " threads at {} |",
            self.open_counts.last().copied().unwrap_or(0)
        )?;
        writeln!(
            s,
            "|---|---|---|---|{}---|",
            "---|".repeat(self.open_counts.len())
        )?;
        for kind in Kind::PROXIES {
            write!(
                s,
                "| {} | {} | {} | {} |",
                kind.name(),
                opt(self.ready_ms(kind), |v| format!("{v:.1}")),
                opt(self.rss_idle.get(&kind).map(|&b| b as f64), |b| mib(
                    b as u64
                )),
                opt(self.rss_after_load.get(&kind).map(|&b| b as f64), |b| mib(
                    b as u64
                )),
            )?;
            for &n in &self.open_counts {
                match self.open_rss(kind, n) {
                    Some(o) if all_open(o) => write!(s, " {} |", mib(o.rss_bytes))?,
                    Some(o) => write!(
                        s,
                        " {} (upstream held {}, client had headers of {}) |",
                        mib(o.rss_bytes),
                        o.held,
                        o.opened
                    )?,
                    None => write!(s, " – |")?,
                }
            }
            let last = self
                .open_counts
                .last()
                .and_then(|&n| self.open_rss(kind, n));
            writeln!(
                s,
                " {} |",
                last.map(|o| o.threads.to_string())
                    .unwrap_or_else(|| "–".into())
            )?;
        }
        writeln!(s)
    }

    pub(super) fn events_table(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## Delay added to each event of a stream\n")?;
        writeln!(
            s,
            "8 and then {CONNECTIONS} connections, each streaming answers of {STREAM_EVENTS} delta events {} ms apart, back to back. \
             The upstream writes its clock into each event as it emits it; the client subtracts it from the arrival time \
             (same process, same monotonic clock). *Added* is the target minus direct in the same round.\n",
            STREAM_INTERVAL.as_millis()
        )?;
        writeln!(s, "| streams at once | target | added p50 µs | added p99 µs | added p99.9 µs | p50 µs | p99 µs | p99.9 µs | streams/round | events/round | CPU µs/event | errors |")?;
        writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        for (conns, kind) in STREAM_CONNECTIONS
            .iter()
            .flat_map(|&c| Kind::ALL.iter().map(move |&k| (c, k)))
        {
            let rows: Vec<_> = self
                .events
                .iter()
                .filter(|r| r.kind == kind && r.conns == conns)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let added = |p| {
                if kind == Kind::Direct {
                    "–".into()
                } else {
                    opt(self.event_added(kind, conns, p), us)
                }
            };
            let abs = |p: Pct| opt(median(rows.iter().map(|r| r.pct.get(p))), us);
            writeln!(
                s,
                "| {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.name(),
                added(Pct::P50),
                added(Pct::P99),
                added(Pct::P999),
                abs(Pct::P50),
                abs(Pct::P99),
                abs(Pct::P999),
                opt(median(rows.iter().map(|r| r.streams as f64)), |v| format!(
                    "{v:.0}"
                )),
                opt(
                    median(rows.iter().map(|r| r.pct.count as f64)),
                    |v| format!("{v:.0}")
                ),
                opt(median(rows.iter().filter_map(|r| r.cpu_us)), |v| format!(
                    "{v:.1}"
                )),
                rows.iter().map(|r| r.errors).sum::<u64>()
            )?;
        }
        writeln!(s)
    }

    pub(super) fn problems(&self, s: &mut String) -> FmtResult {
        let mut lines = Vec::new();
        for r in &self.latency {
            if let Some(e) = &r.first_error {
                lines.push(format!(
                    "{} at {} req/s, round {}: {} errors, first: {e}",
                    r.kind.name(),
                    r.rate,
                    r.round,
                    r.errors
                ));
            }
        }
        for r in &self.max {
            if let Some(e) = &r.first_error {
                lines.push(format!(
                    "{} flat out, round {}: {} errors, first: {e}",
                    r.kind.name(),
                    r.round,
                    r.errors
                ));
            }
        }
        for r in &self.events {
            if let Some(e) = &r.first_error {
                lines.push(format!(
                    "{} streams ({} at once), round {}: {} errors, first: {e}",
                    r.kind.name(),
                    r.conns,
                    r.round,
                    r.errors
                ));
            }
        }
        for o in &self.open {
            let x = &o.open;
            if !all_open(x)
                || x.first_error.is_some()
                || x.first_event < x.opened
                || x.completed < x.wanted
            {
                lines.push(format!(
                    "{} with {} streams: the upstream held {}, the client had the headers of {} (after {:.1} s) and the first event of {} when memory was read; {} ended properly after the release{}",
                    o.kind.name(), x.wanted, x.held, x.opened, x.open_time.as_secs_f64(), x.first_event, x.completed,
                    x.first_error.as_ref().map(|e| format!("; first error: {e}")).unwrap_or_default()
                ));
            }
        }
        if self.wrong_auth > 0 {
            lines.push(format!(
                "{} of {} upstream requests arrived without the org key",
                self.wrong_auth, self.upstream_requests
            ));
        }
        writeln!(s, "## Errors and anomalies\n")?;
        if lines.is_empty() {
            writeln!(s, "None: every request succeeded, every stream opened and ended, and all {} upstream requests carried the org key.\n", self.upstream_requests)?;
        }
        for l in lines.iter().take(40) {
            writeln!(s, "- {l}")?;
        }
        if lines.len() > 40 {
            writeln!(s, "- … and {} more", lines.len() - 40)?;
        }
        writeln!(s)
    }

    pub(super) fn method(&self, s: &mut String) -> FmtResult {
        writeln!(s, "## How it is measured\n")?;
        for line in [
            "The harness (`benches/macro/`) runs the upstream and the load generator in one process (tokio, hyper 1, HTTP/1.1 over loopback). Each proxy is a child process on loopback started from scratch: the tcp-relay (`benches/macro/relay.rs`, the harness itself with `--relay`: one tokio event loop copying bytes both ways, no HTTP; the client's own key goes through it; it stands for the price of one more loopback hop on this machine), nginx from `benches/nginx.conf` (keep-alive pool to the upstream, `proxy_buffering off`, access log on), the sidecar's release binary (`org` billing, the key in `OPENAI_API_KEY`, `org.base_url` pointing at the upstream over http, ledger and JSON logs in a temp dir), Codex's `responses-api-proxy` (key on stdin, `--upstream-url` at the upstream). All attach the same org key; the upstream counts requests that arrive without it.",
            "Rounds are interleaved: each round runs every rate against direct, tcp-relay, nginx, sidecar, Codex's proxy in turn, so machine noise hits all alike; tables quote the median over rounds, *added* figures the median of the per-round differences to direct.",
            "Open loop: each of the 64 connections sends at rate/64 on a fixed schedule; a request delayed by its connection's previous one is timed from when it was due (no coordinated omission), one that waited for the timer from when it was sent.",
            "CPU time per request: `utime + stime` from `/proc/PID/stat` (process and children) before and after each run, divided by the requests of the run (warm-up included).",
        ] {
            writeln!(s, "- {line}")?;
        }
        Ok(())
    }
}
