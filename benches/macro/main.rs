//! The macro benchmark: the sidecar side by side with a direct connection, nginx and Codex's
//! `responses-api-proxy`, in one run, written to benches/RESULTS.md and benches/latency.svg.
//!
//! Runs only when given `--bench` (`cargo bench --bench macro`, as scripts/bench.sh does);
//! `cargo test --all-targets` builds it and runs it without `--bench`, and then it exits at
//! once. Layout: `upstream` the fast local upstream, `client` the HTTP client, `load` the
//! fixed-rate and flat-out load, `streams` per-event delay and open streams, `targets` the
//! four targets, `procfs` CPU and memory, `profile` a fixed load for a profiler, `stats` percentiles, `micro` the criterion
//! figures, `report` and `svg` the results.
#![forbid(unsafe_code)]

mod client;
mod load;
mod micro;
mod plan;
mod procfs;
mod profile;
mod relay;
mod report;
mod stats;
mod streams;
mod svg;
mod targets;
mod upstream;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, listen, upstream] = args.as_slice() {
        if flag == "--relay" {
            return relay::main(listen, upstream);
        }
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets in test mode: nothing to check here.
        eprintln!("macro benchmark: run it with `cargo bench --bench macro` or scripts/bench.sh");
        return ExitCode::SUCCESS;
    }
    let options = match plan::Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("macro: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("macro: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(plan::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("macro: {e}");
            ExitCode::FAILURE
        }
    }
}
