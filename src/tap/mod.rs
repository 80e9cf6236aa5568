//! The stream reader: watches each response body on its way to the agent and learns from it.
//!
//! Layout: `sse` cuts an event stream into events, `scan` walks a JSON object's members,
//! `fields` reads the few that matter, `observe` turns them into what the proxy needs (model, usage, outcome, failures).

mod fields;
#[doc(hidden)]
pub mod fixtures;
mod observe;
mod scan;
pub mod sse;
#[cfg(test)]
mod tests;

pub use fields::ApiError;
pub use observe::{BodyKind, Feed, Observer, Terminal, JSON_CAP};
