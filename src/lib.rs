//! codex-sidecar: the Codex agent's local model endpoint.
//!
//! For every model request the sidecar attaches the right credential (the
//! user's ChatGPT plan or the organization's key), forwards it to the right
//! upstream, streams the answer back unbuffered while reading it for limit
//! signals and token usage, and writes one ledger record saying who pays.
//!
//! # A request's path through the modules
//!
//! ```text
//! server ──► proxy::handle ──► route ──► client token ──► session pin ──► credentials
//!                                                                            │
//!   agent ◄── proxy::body (tap reader, idle timeout, end hook) ◄── upstream ◄─ limits::admit
//!                         │
//!                         └─► proxy::exchange::finish ──► ledger + metrics + access log
//! ```
//!
//! # Layout
//!
//! - [`cli`]: clap definitions only; [`commands`]: `check`, `status`, `health`, `ledger`.
//! - [`config`]: TOML + environment + flags → validated [`config::Config`].
//! - [`run`]: start/stop a whole sidecar; [`server`]: listeners, connections, drain;
//!   [`signals`]: SIGTERM/SIGINT/SIGHUP.
//! - [`app`]: the shared state built from the config.
//! - [`proxy`]: the pipeline (route, headers, session, body, exchange).
//! - [`credentials`]: ChatGPT and org credential sources, files, auth.json, token
//!   refresh, device login.
//! - [`upstream`]: the pooled TLS client (HTTP/2 by ALPN, proxies, timeouts).
//! - [`tap`]: the stream reader that observes SSE and JSON answers.
//! - [`limits`]: limit signals and the per-account state machine.
//! - [`ledger`]: durable JSON Lines billing records, summary, verify.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/status`; [`status_view`]: for people.
//! - [`events`]: state changes posted to `events.url`.
//! - [`telemetry`]: metric names, buckets, logging; [`error`]: the sidecar's own answers.
//! - [`billing`], [`usage`], [`secret`], [`time`]: small shared types.
#![forbid(unsafe_code)]
// The sidecar's own error answer is returned by value on cold paths only.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod app;
pub mod billing;
pub mod cli;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod error;
pub mod events;
pub mod json_text;
pub mod ledger;
pub mod limits;
pub mod proxy;
pub mod run;
pub mod secret;
pub mod server;
pub mod signals;
pub mod status_view;
pub mod tap;
pub mod telemetry;
pub mod time;
pub mod upstream;
pub mod usage;
