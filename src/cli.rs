//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "codex-sidecar",
    version,
    about = "The Codex agent's local model endpoint: right credential, right upstream, exact billing ledger"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file (TOML). Default: $CODEX_SIDECAR_CONFIG, else the embedded defaults.
    #[arg(long, value_name = "FILE", env = "CODEX_SIDECAR_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent's endpoint (overrides server.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// The admin endpoint (overrides server.admin_listen).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
    },
    /// Validate config and credential files; print the effective config (secrets redacted).
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the running sidecar's state.
    Status {
        /// Admin base URL (default: from server.admin_listen of the config, http://127.0.0.1:7801).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Print the raw /status JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Exit 0 when the running sidecar's /healthz answers ok (container health checks).
    Health {
        /// Admin base URL (default: from server.admin_listen of the config, http://127.0.0.1:7801).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Connect a ChatGPT account: device-code sign-in, writes the ChatGPT credential file.
    Login {
        /// Sign in with a code typed into a browser (the only method).
        #[arg(long, required = true)]
        device: bool,
        /// Where to write the credential (default: chatgpt.auth_file of the config).
        #[arg(long, value_name = "F")]
        auth_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Read the billing ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Tokens and requests per billing source and model.
    Summary {
        /// Ledger file (default: the configured ledger.path).
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        /// Only records since this time (RFC 3339) or this long ago ("24h").
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check that every record parses and ids are unique.
    Verify {
        /// Ledger file (default: the configured ledger.path).
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}
