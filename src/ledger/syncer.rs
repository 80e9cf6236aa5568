//! Group commit for `fsync = "<duration>"`: one background fsync per period, when dirty.

use super::settings::FsyncPolicy;
use super::writer::Ledger;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

impl Ledger {
    /// Starts the background syncer when the policy is `Every(d)` (`None` for `Always`,
    /// which syncs in `append`). It fsyncs every `d` if records were written since the
    /// last sync, and on [`Ledger::close`] flushes once more and ends; it also ends when
    /// the ledger is dropped. Await the handle at shutdown.
    pub fn spawn_syncer(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let FsyncPolicy::Every(period) = self.settings.fsync else {
            return None;
        };
        let ledger = Arc::downgrade(self);
        let mut closing = self.closing.subscribe();
        Some(tokio::spawn(async move {
            let mut ticks = interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = closing.wait_for(|closed| *closed) => true,
                };
                let Some(ledger) = ledger.upgrade() else {
                    break;
                };
                // fsync can block for a long time on a busy disk: keep it off the workers.
                let synced = tokio::task::spawn_blocking(move || ledger.flush()).await;
                if stop || synced.is_err() {
                    break;
                }
            }
        }))
    }

    /// Asks the background syncer to flush and stop (at shutdown). Appends still work
    /// afterwards; call [`Ledger::flush`] after the last one.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
