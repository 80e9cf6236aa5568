//! The config parser (src/config.rs) on arbitrary TOML: it never panics, and
//! every refusal says something.
#![no_main]

use codex_sidecar::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let no_env = |_: &str| None;
    if let Err(problems) = config::load_text(
        Some((text, "fuzz.toml".into())),
        &no_env,
        &config::Overrides::default(),
    ) {
        assert!(!problems.is_empty() && problems.iter().all(|p| !p.trim().is_empty()));
    }
});
