//! Process signals: SIGTERM/SIGINT drain (a second one exits at once), SIGHUP reloads.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Overrides};
use crate::run::Sidecar;
use crate::telemetry::LogReload;

/// Runs until the first SIGTERM or SIGINT, reloading on SIGHUP; then starts
/// the drain and arms the second signal to end it at once.
pub async fn handle(
    sidecar: &mut Sidecar,
    file: Option<&Path>,
    flags: &Overrides,
    log: Option<&LogReload>,
) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the sidecar with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let env = |k: &str| std::env::var(k).ok();
                match config::load(file, &env, flags) {
                    Ok(new) => {
                        let not_applied = sidecar.reload(&new, log);
                        if not_applied.is_empty() {
                            tracing::info!("configuration reloaded");
                        } else {
                            tracing::warn!(not_applied = %not_applied.join(", "),
                                "configuration reloaded; these changes need a restart and were not applied");
                        }
                    }
                    Err(problems) => tracing::error!(problems = %problems.join("; "),
                        "configuration reload failed; the running configuration stays"),
                }
            }
        }
    }
    tracing::info!("shutdown signal received");
    sidecar.shutdown();
    if let Some(force) = sidecar.take_force() {
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = force.send(());
        });
    }
}
