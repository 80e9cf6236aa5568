//! The results of one run and their rendering as benches/RESULTS.md (tables) and latency.svg.

use std::collections::HashMap;
use std::time::Duration;

use crate::micro::MicroRow;
use crate::plan::{ByKind, Options};
use crate::stats::{median, Pct, Percentiles};
use crate::streams::OpenStreams;
use crate::targets::Kind;

pub struct LatencyRow {
    pub kind: Kind,
    pub rate: u32,
    pub round: usize,
    pub pct: Percentiles,
    pub achieved: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub cpu_us: Option<f64>,
}

pub struct MaxRow {
    pub kind: Kind,
    pub round: usize,
    pub throughput: f64,
    pub pct: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
    pub cpu_us: Option<f64>,
}

pub struct EventRow {
    pub kind: Kind,
    /// Streams at once.
    pub conns: usize,
    /// CPU time of the target per event delivered, µs.
    pub cpu_us: Option<f64>,
    pub round: usize,
    pub pct: Percentiles,
    pub streams: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub struct OpenRow {
    pub kind: Kind,
    pub open: OpenStreams,
}

pub struct Results {
    pub rounds: usize,
    pub quick: bool,
    pub commands: Vec<String>,
    pub nofile: u64,
    pub load_samples: Vec<(String, String)>,
    pub ready: ByKind<Vec<Duration>>,
    pub rss_idle: ByKind<u64>,
    pub rss_after_load: ByKind<u64>,
    pub latency: Vec<LatencyRow>,
    pub max: Vec<MaxRow>,
    pub events: Vec<EventRow>,
    pub open: Vec<OpenRow>,
    /// The open-stream counts measured, in order.
    pub open_counts: Vec<u64>,
    pub micro: Vec<MicroRow>,
    pub wrong_auth: u64,
    pub upstream_requests: u64,
    pub elapsed: Duration,
    versions: Vec<(String, String)>,
}

fn us(ns: f64) -> String {
    if ns.abs() >= 10_000.0 {
        format!("{:.0}", ns / 1e3)
    } else {
        format!("{:.1}", ns / 1e3)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn run_output(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        }
        Err(e) => format!("({program}: {e})"),
    }
}

impl Results {
    pub fn new(o: &Options) -> Results {
        let path = |p: &std::path::Path| p.display().to_string();
        let versions = vec![
            (
                "codex-sidecar".into(),
                run_output(&path(&o.tools.sidecar), &["--version"]),
            ),
            ("nginx".into(), run_output(&path(&o.tools.nginx), &["-v"])),
            (
                "codex".into(),
                run_output(&path(&o.tools.codex), &["--version"]),
            ),
        ];
        Results {
            rounds: o.rounds,
            quick: o.quick,
            commands: o.commands.clone(),
            nofile: 0,
            load_samples: Vec::new(),
            ready: HashMap::new(),
            rss_idle: HashMap::new(),
            rss_after_load: HashMap::new(),
            latency: Vec::new(),
            max: Vec::new(),
            events: Vec::new(),
            open: Vec::new(),
            open_counts: Vec::new(),
            micro: Vec::new(),
            wrong_auth: 0,
            upstream_requests: 0,
            elapsed: Duration::ZERO,
            versions,
        }
    }

    /// Median over rounds of one percentile at one rate.
    pub fn latency_median(&self, kind: Kind, rate: u32, p: Pct) -> Option<f64> {
        median(
            self.latency
                .iter()
                .filter(|r| r.kind == kind && r.rate == rate)
                .map(|r| r.pct.get(p)),
        )
    }

    /// Median over rounds of (target − direct) in the same round: noise shared by the pair cancels.
    pub fn latency_added(&self, kind: Kind, rate: u32, p: Pct) -> Option<f64> {
        median((0..self.rounds).filter_map(|round| {
            let of = |k: Kind| {
                self.latency
                    .iter()
                    .find(|r| r.kind == k && r.rate == rate && r.round == round)
                    .map(|r| r.pct.get(p))
            };
            Some(of(kind)? - of(Kind::Direct)?)
        }))
    }

    fn event_added(&self, kind: Kind, conns: usize, p: Pct) -> Option<f64> {
        median((0..self.rounds).filter_map(|round| {
            let of = |k: Kind| {
                self.events
                    .iter()
                    .find(|r| r.kind == k && r.conns == conns && r.round == round)
                    .map(|r| r.pct.get(p))
            };
            Some(of(kind)? - of(Kind::Direct)?)
        }))
    }

    fn ready_ms(&self, kind: Kind) -> Option<f64> {
        median(self.ready.get(&kind)?.iter().map(|d| d.as_secs_f64() * 1e3))
    }

    fn open_rss(&self, kind: Kind, n: u64) -> Option<&OpenStreams> {
        self.open
            .iter()
            .find(|o| o.kind == kind && o.open.wanted == n)
            .map(|o| &o.open)
    }

    pub fn write(&self, o: &Options) -> Result<(), String> {
        std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
        let md = o.out.join("RESULTS.md");
        let notes = std::fs::read_to_string(&o.notes).ok();
        std::fs::write(&md, self.markdown(notes.as_deref()))
            .map_err(|e| format!("{}: {e}", md.display()))?;
        let svg = o.out.join("latency.svg");
        std::fs::write(&svg, crate::svg::latency(self))
            .map_err(|e| format!("{}: {e}", svg.display()))?;
        Ok(())
    }

    fn markdown(&self, notes: Option<&str>) -> String {
        let mut s = String::new();
        let _ = self.head(&mut s);
        let _ = self.targets(&mut s);
        let _ = self.micro_table(&mut s);
        let _ = self.latency_tables(&mut s);
        let _ = self.throughput_table(&mut s);
        let _ = self.memory_table(&mut s);
        let _ = self.events_table(&mut s);
        let _ = self.problems(&mut s);
        let _ = self.method(&mut s);
        if let Some(n) = notes {
            s.push('\n');
            s.push_str(n.trim_end());
            s.push('\n');
        }
        s
    }
}

mod render;
