//! Token usage as the upstream reported it (never estimated).

use serde::{Deserialize, Serialize};

/// Token counts of one request, in the ledger's field names.
///
/// `cached_input` is part of `input`, and `reasoning` part of `output`, as the
/// upstream counts them; `total` is the upstream's own total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}
