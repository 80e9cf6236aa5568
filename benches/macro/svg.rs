//! benches/latency.svg: latency percentiles of each target at each rate, drawn by hand
//! (log scale, one panel per rate), so no plotting dependency is needed.

use std::fmt::Write;

use crate::plan::RATES;
use crate::report::Results;
use crate::stats::Pct;
use crate::targets::Kind;

const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 50.0;
const GAP: f64 = 75.0;

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Direct => "#555555",
        Kind::Relay => "#999999",
        Kind::Nginx => "#2b8a3e",
        Kind::Sidecar => "#d9480f",
        Kind::Codex => "#1c7ed6",
    }
}

pub fn latency(r: &Results) -> String {
    // The y range: decades that hold every median percentile (in µs).
    let values: Vec<f64> = RATES
        .iter()
        .flat_map(|&rate| {
            Kind::ALL.iter().flat_map(move |&k| {
                Pct::ALL
                    .iter()
                    .filter_map(move |&p| r.latency_median(k, rate, p))
            })
        })
        .map(|ns| ns / 1e3)
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = values
        .iter()
        .cloned()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y = |v_us: f64| TOP + PANEL_H - (v_us.max(1e-3).log10() - lo) / (hi - lo) * PANEL_H;
    let width = LEFT + RATES.len() as f64 * (PANEL_W + GAP) + 20.0;
    let height = TOP + PANEL_H + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15">Request latency by percentile (µs, log scale; median of rounds; 64 connections, open loop)</text>"#
    );
    for (i, &rate) in RATES.iter().enumerate() {
        let x0 = LEFT + i as f64 * (PANEL_W + GAP);
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="middle" font-weight="bold">{rate} req/s</text>"#,
            x0 + PANEL_W / 2.0,
            TOP - 10.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let mut decade = lo;
        while decade <= hi {
            let v = 10f64.powf(decade);
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x0:.0}" y1="{yy:.1}" x2="{:.0}" y2="{yy:.1}" stroke="#ddd"/>"##,
                x0 + PANEL_W
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 4.0,
                yy + 4.0,
                label(v)
            );
            decade += 1.0;
        }
        let xs: Vec<f64> = (0..Pct::ALL.len())
            .map(|j| x0 + 30.0 + j as f64 * (PANEL_W - 60.0) / (Pct::ALL.len() - 1) as f64)
            .collect();
        for (j, p) in Pct::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
                xs[j],
                TOP + PANEL_H + 16.0,
                p.label()
            );
        }
        for kind in Kind::ALL {
            let points: Vec<(f64, f64)> = Pct::ALL
                .iter()
                .enumerate()
                .filter_map(|(j, &p)| {
                    r.latency_median(kind, rate, p)
                        .map(|ns| (xs[j], y(ns / 1e3)))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            let c = color(kind);
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (px, py) in points {
                let _ = writeln!(s, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{c}"/>"#);
            }
        }
    }
    let ly = TOP + PANEL_H + 45.0;
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let lx = LEFT + i as f64 * 150.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.0}" y1="{ly:.0}" x2="{:.0}" y2="{ly:.0}" stroke="{}" stroke-width="3"/>"#,
            lx + 24.0,
            color(*kind)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            kind.name()
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.0}" fill="#666">Same machine, same round for every target; figures in benches/RESULTS.md.</text>"##,
        ly + 28.0
    );
    s.push_str("</svg>\n");
    s
}

fn label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}
