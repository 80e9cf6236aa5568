//! The `codex-sidecar` binary: parse the command line, then hand over to the library.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use codex_sidecar::cli::{Cli, Command, ConfigArg, LedgerCommand};
use codex_sidecar::commands;
use codex_sidecar::config::{self, Overrides};

fn main() -> ExitCode {
    // An empty CODEX_SIDECAR_CONFIG (a template's blank) means "not set", as for
    // every other variable, not "--config with no value". Done before any thread starts.
    if std::env::var_os("CODEX_SIDECAR_CONFIG")
        .is_some_and(|v| v.to_string_lossy().trim().is_empty())
    {
        std::env::remove_var("CODEX_SIDECAR_CONFIG");
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => serve(
            config.config,
            Overrides {
                listen,
                admin_listen,
            },
        ),
        Command::Check { config } => {
            let (out, problems) = commands::check(config.config.as_deref());
            let _ = std::io::stdout().write_all(out.as_bytes());
            for p in &problems {
                eprintln!("problem: {p}");
            }
            if problems.is_empty() {
                commands::OK
            } else {
                commands::PROBLEMS
            }
        }
        Command::Status {
            admin,
            json,
            config,
        } => block_on(async {
            let Some(admin) = admin_url(admin, &config) else {
                return commands::PROBLEMS;
            };
            match commands::admin_get(&admin, "/status").await {
                Ok((200, body)) => {
                    let text = if json {
                        String::from_utf8_lossy(&body).into_owned() + "\n"
                    } else {
                        match serde_json::from_slice(&body) {
                            Ok(v) => commands::render_status(&v),
                            Err(e) => format!("unreadable /status answer: {e}\n"),
                        }
                    };
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    commands::OK
                }
                Ok((s, _)) => {
                    eprintln!("the sidecar answered /status with HTTP {s}");
                    commands::PROBLEMS
                }
                Err(e) => {
                    eprintln!("{e}");
                    commands::PROBLEMS
                }
            }
        }),
        Command::Health { admin, config } => block_on(async {
            let Some(admin) = admin_url(admin, &config) else {
                return commands::PROBLEMS;
            };
            match commands::admin_get(&admin, "/healthz").await {
                Ok((200, _)) => commands::OK,
                Ok((s, _)) => {
                    eprintln!("unhealthy: /healthz answered HTTP {s}");
                    commands::PROBLEMS
                }
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    commands::PROBLEMS
                }
            }
        }),
        Command::Ledger { command } => ledger(command),
        Command::Login {
            device: _,
            auth_file,
            config,
        } => block_on(async {
            let done = codex_sidecar::credentials::device::login_command(
                config.config.as_deref(),
                auth_file,
                &mut std::io::stdout(),
            )
            .await;
            match done {
                Ok(text) => {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    commands::OK
                }
                Err(e) => {
                    eprintln!("login failed: {e}");
                    commands::PROBLEMS
                }
            }
        }),
    };
    ExitCode::from(code)
}

/// `--admin`, else the admin listener of the config (file, environment, defaults).
fn admin_url(flag: Option<String>, config: &ConfigArg) -> Option<String> {
    if let Some(url) = flag {
        return Some(url);
    }
    match commands::load_config(config.config.as_deref()) {
        Ok(c) => Some(commands::admin_url_of(c.server.admin_listen)),
        Err(problems) => {
            for p in problems {
                eprintln!("problem: {p}");
            }
            eprintln!(
                "cannot tell where the admin listener is: fix the config, or pass --admin URL"
            );
            None
        }
    }
}

fn block_on<F: std::future::Future<Output = u8>>(f: F) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            2
        }
    }
}

fn ledger(command: LedgerCommand) -> u8 {
    let (file, cfg_file) = match &command {
        LedgerCommand::Summary { file, config, .. } | LedgerCommand::Verify { file, config } => {
            (file.clone(), config.config.clone())
        }
    };
    let path = match file {
        Some(f) => f,
        None => match commands::load_config(cfg_file.as_deref()) {
            Ok(c) => c.ledger.path,
            Err(problems) => {
                for p in problems {
                    eprintln!("problem: {p}");
                }
                return commands::PROBLEMS;
            }
        },
    };
    let result = match command {
        LedgerCommand::Summary { since, json, .. } => {
            codex_sidecar::ledger::run_summary(&path, since.as_deref(), json)
        }
        LedgerCommand::Verify { .. } => codex_sidecar::ledger::run_verify(&path),
    };
    match result {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
            commands::OK
        }
        Err(e) => {
            eprintln!("{e}");
            commands::PROBLEMS
        }
    }
}

fn serve(file: Option<std::path::PathBuf>, flags: Overrides) -> u8 {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match config::load(file.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("config problem: {p}");
            }
            eprintln!("fix the above (codex-sidecar check shows the effective config)");
            return 2;
        }
    };
    let log = codex_sidecar::telemetry::init_logging(cfg.log.format, &cfg.log.level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 2;
        }
    };
    rt.block_on(async move {
        let mut sidecar =
            match codex_sidecar::run::start(cfg, Box::new(|k: &str| std::env::var(k).ok())).await {
                Ok(s) => s,
                Err(problems) => {
                    for p in problems {
                        tracing::error!("{p}");
                        eprintln!("start-up problem: {p}");
                    }
                    return 2;
                }
            };
        codex_sidecar::signals::handle(&mut sidecar, file.as_deref(), &flags, log.as_ref()).await;
        sidecar.wait().await;
        tracing::info!("stopped");
        0
    })
}
