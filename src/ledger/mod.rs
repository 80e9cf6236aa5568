//! The ledger: one durable JSON line per request saying who pays for it (SPEC "Ledger record").
//!
//! - `record`: the schema v1 record and its strict reading; `id` and `time` its ids and timestamps.
//! - `writer`: `Ledger`, the synchronous one-`write(2)` append, rotation, health; `syncer`
//!   the group-commit fsync task; `files` the on-disk operations; `settings` `[ledger]`.
//! - `summary` and `verify`: the `ledger summary` and `ledger verify` commands.

mod files;
mod id;
mod record;
mod settings;
mod summary;
mod syncer;
mod time;
mod verify;
mod writer;

pub use files::{ledger_files, rotated_path};
pub use id::{is_valid_id, new_id};
pub use record::{AccountHash, LimitKind, LimitNote, Outcome, Record, Route, SCHEMA_VERSION};
pub use settings::{default_ledger_path, FsyncPolicy, LedgerSettings, LEDGER_FILE_NAME};
pub use summary::{parse_since, run_summary, summarize, BillingRow, ModelRow, Summary, Totals};
pub use time::Timestamp;
pub use verify::{run_verify, verify, Problem, VerifyReport};
pub use writer::{Ledger, LedgerError, LedgerStatus};

#[cfg(test)]
mod tests;
