//! Who pays for a request: the user's ChatGPT plan or the organization's model access.

use serde::{Deserialize, Serialize};

/// The billing source a session is pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// The user's connected ChatGPT account: not OCU-billed.
    ChatgptPlan,
    /// The organization's model access: OCU-billed.
    Org,
}

impl Billing {
    /// Both sources, in a fixed order (for metrics and status output).
    pub const ALL: [Billing; 2] = [Billing::ChatgptPlan, Billing::Org];

    /// The name used in headers, metrics labels, the ledger and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::ChatgptPlan => "chatgpt_plan",
            Billing::Org => "org",
        }
    }

    /// Whether the environment provider's compute-unit metering bills this source.
    pub fn ocu_billable(self) -> bool {
        self == Billing::Org
    }
}

impl std::fmt::Display for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
