//! What one benchmark run does, in order, and the options that size it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::request_body;
use crate::load;
use crate::procfs;
use crate::report::{EventRow, LatencyRow, MaxRow, OpenRow, Results};
use crate::stats::Percentiles;
use crate::streams;
use crate::targets::{Kind, Running, Tools, API_KEY};
use crate::upstream::Upstream;

pub const RATES: [u32; 3] = [500, 2_000, 5_000];
pub const CONNECTIONS: usize = 64;
pub const OPEN_STREAMS: [u64; 2] = [1_000, 10_000];

/// The open streams the descriptor limit allows: each takes a socket on both sides of the
/// proxy, and the harness holds both ends (client and upstream), so two per stream each;
/// `used` descriptors are taken already.
pub fn open_streams_possible(nofile: u64, used: u64, wanted: u64) -> u64 {
    let room = nofile.saturating_sub(used + 200) / 2;
    if room >= wanted {
        wanted
    } else {
        room / 100 * 100
    }
}

/// Events per stream and the upstream's pause between them in the per-event delay test.
pub const STREAM_EVENTS: u32 = 40;
pub const STREAM_INTERVAL: Duration = Duration::from_millis(5);
/// Streams at once in the per-event delay test: a light load, and the 64 of the rate tests.
pub const STREAM_CONNECTIONS: [usize; 2] = [8, 64];

pub struct Options {
    pub out: PathBuf,
    pub rounds: usize,
    pub quick: bool,
    pub tools: Tools,
    pub criterion: PathBuf,
    pub commands: Vec<String>,
    pub notes: PathBuf,
    /// Only drive the sidecar (under `--wrap-sidecar`) with a fixed load, for a profiler.
    pub profile: bool,
    /// With `--profile`: hold this many streams open instead (memory profile).
    pub profile_open: Option<u64>,
    /// The proxies to run next to the direct connection (`--only nginx,sidecar` for a quick
    /// comparison; the report leaves the others' cells empty).
    pub proxies: Vec<Kind>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            out: PathBuf::from("benches"),
            rounds: 3,
            quick: false,
            tools: Tools {
                sidecar: PathBuf::from("target/release/codex-sidecar"),
                nginx: PathBuf::from("/usr/sbin/nginx"),
                nginx_conf: PathBuf::from("benches/nginx.conf"),
                codex: PathBuf::from(
                    "target/tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
                ),
                wrap_sidecar: Vec::new(),
                sidecar_env: Vec::new(),
            },
            profile: false,
            profile_open: None,
            proxies: Kind::PROXIES.to_vec(),
            criterion: PathBuf::from("target/criterion"),
            commands: Vec::new(),
            notes: PathBuf::from("benches/PROFILE.md"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--bench" => {}
                "--quick" => o.quick = true,
                "--out" => o.out = value(a)?.into(),
                "--rounds" => o.rounds = value(a)?.parse().map_err(|e| format!("--rounds: {e}"))?,
                "--sidecar" => o.tools.sidecar = value(a)?.into(),
                "--nginx" => o.tools.nginx = value(a)?.into(),
                "--codex" => o.tools.codex = value(a)?.into(),
                "--criterion" => o.criterion = value(a)?.into(),
                "--command" => o.commands.push(value(a)?),
                "--notes" => o.notes = value(a)?.into(),
                "--profile" => o.profile = true,
                "--only" => {
                    o.proxies = value(a)?
                        .split(',')
                        .map(|name| {
                            Kind::PROXIES
                                .into_iter()
                                .find(|k| k.name() == name)
                                .ok_or_else(|| format!("--only: no proxy named {name:?}"))
                        })
                        .collect::<Result<_, _>>()?
                }
                "--sidecar-env" => {
                    let kv = value(a)?;
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("--sidecar-env {kv:?}: expected NAME=VALUE"))?;
                    o.tools.sidecar_env.push((k.to_owned(), v.to_owned()));
                }
                "--profile-open" => {
                    o.profile_open = Some(
                        value(a)?
                            .parse()
                            .map_err(|e| format!("--profile-open: {e}"))?,
                    )
                }
                "--wrap-sidecar" => {
                    o.tools.wrap_sidecar = value(a)?.split_whitespace().map(str::to_owned).collect()
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} (see benches/macro/plan.rs)"
                    ))
                }
            }
        }
        for (what, path, fix) in [
            ("the sidecar", &o.tools.sidecar, "cargo build --release"),
            ("nginx", &o.tools.nginx, "apt-get install nginx"),
            (
                "nginx.conf",
                &o.tools.nginx_conf,
                "run from the repository root",
            ),
            (
                "the Codex CLI",
                &o.tools.codex,
                "scripts/install-test-tools.sh",
            ),
        ] {
            if !path.exists() {
                return Err(format!("{what} not found at {} ({fix})", path.display()));
            }
        }
        o.rounds = o.rounds.max(1);
        Ok(o)
    }

    fn rate_duration(&self, rate: u32) -> Duration {
        let secs = match rate {
            r if r <= 500 => 5.0,
            r if r <= 2_000 => 4.0,
            _ => 3.0,
        };
        Duration::from_secs_f64(if self.quick { secs / 5.0 } else { secs })
    }

    fn short(&self) -> Duration {
        Duration::from_secs_f64(if self.quick { 0.6 } else { 3.0 })
    }
}

/// Raises the open-file limit for the harness and the targets it starts (10,000 streams
/// need two sockets each here, and two in every proxy). Returns the limit in force.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = 65_536;
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: Some(want),
        },
    );
    let now = getrlimit(Resource::Nofile);
    if now.current.unwrap_or(u64::MAX) < want {
        // Not privileged: go as high as the hard limit allows.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[macro {}] {}", procfs::loadavg(), msg.as_ref());
}

pub async fn run(o: Options) -> Result<(), String> {
    if o.profile {
        return profile(&o).await;
    }
    let t0 = Instant::now();
    let mut r = Results::new(&o);
    r.nofile = raise_nofile();
    r.load_samples.push(("start".into(), procfs::loadavg()));
    let upstream = Upstream::start(format!("Bearer {API_KEY}")).await?;
    say(format!(
        "upstream on {}, open-file limit {}",
        upstream.addr, r.nofile
    ));

    // Start-up: every proxy started afresh several times, interleaved.
    for _ in 0..(o.rounds + 2) {
        for &kind in &o.proxies {
            let t = Running::spawn(kind, &o.tools, upstream.addr).await?;
            r.ready.entry(kind).or_default().push(t.ready);
            t.stop().await;
        }
    }
    say("start-up times measured");

    let mut running: Vec<Running> = vec![Running::direct(upstream.addr)];
    for &kind in &o.proxies {
        running.push(Running::spawn(kind, &o.tools, upstream.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in &running {
        if let Some(tree) = t.tree {
            r.rss_idle.insert(t.kind, tree.rss_bytes());
        }
    }

    let json = request_body("json");
    // Warm every path once (connection pools, lazy statics, page faults) before measuring.
    for t in &running {
        let _ = load::closed_loop(
            t.dest(),
            CONNECTIONS,
            Duration::from_millis(300),
            json.clone(),
        )
        .await;
    }

    for round in 0..o.rounds {
        for rate in RATES {
            for t in &running {
                let cpu0 = t.tree.map(|tr| tr.cpu_seconds());
                let run = load::open_loop(
                    t.dest(),
                    rate,
                    CONNECTIONS,
                    o.rate_duration(rate),
                    json.clone(),
                )
                .await;
                let cpu = cpu_per_request(t, cpu0, run.ok + CONNECTIONS as u64);
                r.latency.push(LatencyRow {
                    kind: t.kind,
                    rate,
                    round,
                    pct: Percentiles::of(&run.latencies)?,
                    achieved: run.throughput(),
                    errors: run.errors,
                    first_error: run.first_error,
                    cpu_us: cpu,
                });
            }
            say(format!("round {round}: {rate} req/s done"));
        }
        r.load_samples
            .push((format!("latency round {round}"), procfs::loadavg()));
    }

    for round in 0..o.rounds {
        for t in &running {
            let cpu0 = t.tree.map(|tr| tr.cpu_seconds());
            let run = load::closed_loop(t.dest(), CONNECTIONS, o.short(), json.clone()).await;
            let cpu = cpu_per_request(t, cpu0, run.ok + CONNECTIONS as u64);
            r.max.push(MaxRow {
                kind: t.kind,
                round,
                throughput: run.throughput(),
                pct: Percentiles::of(&run.latencies)?,
                errors: run.errors,
                first_error: run.first_error,
                cpu_us: cpu,
            });
        }
        say(format!("round {round}: maximum throughput done"));
    }
    r.load_samples
        .push(("throughput".into(), procfs::loadavg()));

    for round in 0..o.rounds {
        for conns in STREAM_CONNECTIONS {
            for t in &running {
                let cpu0 = t.tree.map(|tr| tr.cpu_seconds());
                let run = streams::event_delays(
                    t.dest(),
                    conns,
                    o.short(),
                    STREAM_EVENTS,
                    STREAM_INTERVAL,
                )
                .await;
                let cpu_us = cpu_per_request(t, cpu0, run.delays.len() as u64);
                r.events.push(EventRow {
                    cpu_us,
                    conns,
                    kind: t.kind,
                    round,
                    pct: Percentiles::of(&run.delays)?,
                    streams: run.streams,
                    errors: run.errors,
                    first_error: run.first_error,
                });
            }
        }
        say(format!("round {round}: per-event delay done"));
    }
    r.load_samples.push(("streams".into(), procfs::loadavg()));

    for t in &running {
        if let Some(tree) = t.tree {
            r.rss_after_load.insert(t.kind, tree.rss_bytes());
        }
    }
    let opens: Vec<u64> = if o.quick {
        vec![200, 1_000]
    } else {
        OPEN_STREAMS.to_vec()
    };
    for (i, wanted) in opens.into_iter().enumerate() {
        if i > 0 {
            // Codex's proxy keeps every upstream connection of the last test idle in its
            // pool (hundreds of the harness's descriptors): start it afresh to free them.
            if let Some(at) = running.iter().position(|t| t.kind == Kind::Codex) {
                let old = running.remove(at);
                old.stop().await;
                running.insert(
                    at,
                    Running::spawn(Kind::Codex, &o.tools, upstream.addr).await?,
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let n = open_streams_possible(r.nofile, procfs::open_fds(), wanted);
        r.open_counts.push(n);
        for t in &running {
            let Some(tree) = t.tree else { continue };
            let deadline = Duration::from_secs(if o.quick { 20 } else { 30 });
            let open = streams::hold_open(t.dest(), n, tree, &upstream, deadline).await;
            say(format!(
                "{}: {n} open streams: {} opened, RSS {} KiB",
                t.kind.name(),
                open.opened,
                open.rss_bytes / 1024
            ));
            r.open.push(OpenRow { kind: t.kind, open });
            // Let sockets close before the next target takes its turn.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    r.load_samples.push(("end".into(), procfs::loadavg()));
    r.wrong_auth = upstream
        .wrong_auth
        .load(std::sync::atomic::Ordering::Relaxed);
    r.upstream_requests = upstream.requests.load(std::sync::atomic::Ordering::Relaxed);

    for t in running {
        t.stop().await;
    }
    r.elapsed = t0.elapsed();
    r.micro = crate::micro::read(&o.criterion);
    r.write(&o)?;
    say(format!(
        "wrote {}/RESULTS.md and latency.svg in {:.0} s",
        o.out.display(),
        r.elapsed.as_secs_f64()
    ));
    Ok(())
}

fn cpu_per_request(t: &Running, before: Option<f64>, requests: u64) -> Option<f64> {
    let (tree, before) = (t.tree?, before?);
    (requests > 0).then(|| (tree.cpu_seconds() - before) * 1e6 / requests as f64)
}

/// Values of one target, by kind.
pub type ByKind<T> = HashMap<Kind, T>;

/// A fixed load on the sidecar alone, for a profiler (`--wrap-sidecar`): see `profile`.
async fn profile(o: &Options) -> Result<(), String> {
    crate::profile::run(o).await
}
