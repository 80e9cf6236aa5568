//! codex-sidecar: the Codex agent's local model endpoint.
#![forbid(unsafe_code)]

pub mod billing;
pub mod secret;
pub mod tap;
pub mod usage;
