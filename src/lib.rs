//! codex-sidecar: the Codex agent's local model endpoint.
#![forbid(unsafe_code)]

pub mod billing;
pub mod limits;
pub mod secret;
pub mod usage;
