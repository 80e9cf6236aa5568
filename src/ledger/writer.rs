//! The durable append path: one `write(2)` per record, fsync policy, rotation, health.
//!
//! `append` is synchronous and short: it serializes the record, takes a std mutex, and
//! hands the whole line to the kernel in one `write` on an `O_APPEND` file, so a record
//! is never split or interleaved with another and survives the process being killed
//! right after. Forcing it to disk is the fsync policy's job: `Always` here, `Every`
//! in the background syncer.

use super::files;
use super::record::Record;
use super::settings::{FsyncPolicy, LedgerSettings};
use crate::billing::Billing;
use serde::Serialize;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often an unwritable ledger is checked again when asked whether it is writable.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Space the writability probe reserves at the end of the file (kept for later records).
const PROBE_BYTES: u64 = 64 * 1024;
/// At most one error log line this often; the others are counted and reported with it.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the ledger could not take a record.
#[derive(Debug)]
pub enum LedgerError {
    /// The file (or its directory) could not be opened or created.
    Open { path: PathBuf, source: io::Error },
    /// The record could not be written; it is not in the file.
    Write(io::Error),
    /// The record was written but could not be forced to disk (`fsync = "always"`).
    Sync(io::Error),
    /// Rotating made a fresh file necessary and it could not be created.
    Rotate(io::Error),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Open { path, source } => {
                write!(f, "cannot open ledger file {}: {source}", path.display())
            }
            LedgerError::Write(e) => write!(f, "cannot write ledger record: {e}"),
            LedgerError::Sync(e) => write!(f, "cannot fsync ledger file: {e}"),
            LedgerError::Rotate(e) => write!(f, "cannot rotate ledger file: {e}"),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Open { source, .. } => Some(source),
            LedgerError::Write(e) | LedgerError::Sync(e) | LedgerError::Rotate(e) => Some(e),
        }
    }
}

/// The ledger's part of `/status` (no secrets: a path, counters, an I/O error message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerStatus {
    pub path: String,
    /// Records written since start.
    pub records: u64,
    /// Write and fsync errors since start.
    pub errors: u64,
    /// False after an error until a later write (or a probe) succeeds.
    pub writable: bool,
    pub last_error: Option<String>,
}

/// The append-only ledger; share it as `Arc<Ledger>`.
pub struct Ledger {
    pub(super) settings: LedgerSettings,
    pub(super) file: Mutex<FileState>,
    /// Something was written since the last fsync.
    pub(super) dirty: AtomicBool,
    healthy: AtomicBool,
    records: AtomicU64,
    errors: AtomicU64,
    pub(super) syncs: AtomicU64,
    last_error: Mutex<Option<String>>,
    error_log: Mutex<ErrorLog>,
    last_probe: Mutex<Option<Instant>>,
    probe_interval: Duration,
    /// Tells the background syncer to flush and stop.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
}

pub(super) struct FileState {
    /// `None` after the file could not be (re)opened: the next append tries again.
    /// An `Arc` so the syncer can fsync without holding the lock.
    pub(super) file: Option<Arc<File>>,
    /// Bytes in the live file, as far as this process knows (for rotation).
    size: u64,
    /// A regular file (rotation and repair apply), not a device or pipe.
    regular: bool,
    /// A failed write left a partial line that could not be cut off: start the next
    /// record on a fresh line.
    needs_newline: bool,
}

#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-updated in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// Opens (creating if needed) the ledger file and repairs a torn last line.
    pub fn open(settings: LedgerSettings) -> Result<Ledger, LedgerError> {
        let state = open_state(&settings.path)?;
        Ok(Self::with_state(settings, Some(state)))
    }

    /// Like [`Ledger::open`], but a ledger that cannot be opened now is still returned:
    /// every append (and `writable`) tries to open it again. For `required = false`,
    /// where the sidecar serves on and counts the errors.
    pub fn open_lenient(settings: LedgerSettings) -> (Ledger, Option<LedgerError>) {
        match open_state(&settings.path) {
            Ok(state) => (Self::with_state(settings, Some(state)), None),
            Err(e) => {
                let ledger = Self::with_state(settings, None);
                ledger.fail(&e);
                (ledger, Some(e))
            }
        }
    }

    fn with_state(settings: LedgerSettings, state: Option<FileState>) -> Ledger {
        let healthy = state.is_some();
        Ledger {
            settings,
            file: Mutex::new(state.unwrap_or(FileState {
                file: None,
                size: 0,
                regular: true,
                needs_newline: false,
            })),
            dirty: AtomicBool::new(false),
            healthy: AtomicBool::new(healthy),
            records: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_error: Mutex::new(None),
            error_log: Mutex::new(ErrorLog::default()),
            last_probe: Mutex::new(None),
            probe_interval: PROBE_INTERVAL,
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// The settings the ledger was opened with.
    pub fn settings(&self) -> &LedgerSettings {
        &self.settings
    }

    /// Writes one record: one `write(2)` of the whole line before returning, plus an
    /// fsync when the policy is `Always`. Never panics; errors are counted and logged.
    pub fn append(&self, rec: &Record) -> Result<(), LedgerError> {
        let line = rec.to_line();
        let result = {
            let mut st = lock(&self.file);
            self.write_line(&mut st, &line, rec.billing)
        };
        match result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn write_line(
        &self,
        st: &mut FileState,
        line: &[u8],
        billing: Billing,
    ) -> Result<(), LedgerError> {
        if st.file.is_none() {
            *st = open_state(&self.settings.path)?;
        }
        let extra = u64::from(st.needs_newline);
        let len = line.len() as u64 + extra;
        let limit = self.settings.rotate_bytes;
        if st.regular && limit > 0 && st.size > 0 && st.size + len > limit {
            self.rotate(st)?;
        }
        let Some(file) = st.file.clone() else {
            return Err(LedgerError::Write(io::Error::other(
                "ledger file is not open",
            )));
        };
        let prefixed;
        let buf: &[u8] = if st.needs_newline {
            prefixed = [b"\n".as_slice(), line].concat();
            &prefixed
        } else {
            line
        };
        let size_before = st.size;
        let (written, error) = write_once(&file, buf);
        st.size += written as u64;
        if let Some(e) = error {
            if written > 0 {
                self.undo_partial(st, &file, size_before);
            }
            return Err(LedgerError::Write(e));
        }
        st.needs_newline = false;
        self.records.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("codex_sidecar_ledger_records_total", "billing" => billing.as_str())
            .increment(1);
        match self.settings.fsync {
            FsyncPolicy::Always => {
                file.sync_data().map_err(LedgerError::Sync)?;
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            FsyncPolicy::Every(_) => self.dirty.store(true, Ordering::Release),
        }
        Ok(())
    }

    /// After a partial write, cut the fragment off again; when that is not possible
    /// (another writer, a device), make the next record start on a fresh line.
    fn undo_partial(&self, st: &mut FileState, file: &File, size_before: u64) {
        let cut = st.regular
            && file.metadata().is_ok_and(|m| m.len() == st.size)
            && file.set_len(size_before).is_ok();
        if cut {
            st.size = size_before;
        } else {
            st.needs_newline = true;
        }
    }

    /// Moves the live file aside and opens a fresh one. If moving fails the current file
    /// is kept (oversized beats losing records); only a missing fresh file is an error.
    fn rotate(&self, st: &mut FileState) -> Result<(), LedgerError> {
        let path = &self.settings.path;
        if let Some(file) = &st.file {
            // The rotated file should be complete on disk before it is renamed away.
            if let Err(e) = file.sync_data() {
                self.fail(&LedgerError::Sync(e));
            }
        }
        if let Err(e) = files::rotate(path, self.settings.keep) {
            self.fail(&LedgerError::Rotate(e));
            return Ok(());
        }
        st.file = None;
        let file = files::open_append(path).map_err(LedgerError::Rotate)?;
        if let Err(e) = files::sync_parent_dir(path) {
            tracing::warn!(path = %path.display(), error = %e, "ledger: cannot fsync the directory after rotation");
        }
        *st = FileState {
            file: Some(Arc::new(file)),
            size: 0,
            regular: true,
            needs_newline: false,
        };
        tracing::info!(path = %path.display(), keep = self.settings.keep, "ledger: rotated");
        Ok(())
    }

    /// Whether a record can be written now. Cheap while healthy; after an error it checks
    /// again at most once a second (reopening the file, and on a regular file reserving
    /// space at its end so a full disk is noticed without writing a record).
    pub fn writable(&self) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return true;
        }
        let Ok(mut last) = self.last_probe.try_lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < self.probe_interval) {
            return false;
        }
        *last = Some(Instant::now());
        let ok = self.probe();
        if ok {
            self.healthy.store(true, Ordering::Release);
        }
        ok
    }

    fn probe(&self) -> bool {
        let mut st = lock(&self.file);
        let fresh = match open_state(&self.settings.path) {
            Ok(fresh) => fresh,
            Err(e) => {
                self.note_error(&e);
                return false;
            }
        };
        let Some(file) = fresh.file.clone() else {
            return false;
        };
        if !fresh.regular {
            // A device or pipe cannot be checked without writing to it: wait for a
            // real write to succeed (with `required`, that means a restart).
            return false;
        }
        let reserve = rustix::fs::fallocate(
            &*file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            fresh.size,
            PROBE_BYTES,
        );
        match reserve {
            Ok(()) => {}
            // The filesystem cannot reserve space: the reopen is all we can check.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => {
                self.note_error(&LedgerError::Write(e.into()));
                return false;
            }
        }
        *st = fresh;
        true
    }

    /// Forces written records to disk now (at shutdown, or from the syncer).
    pub fn flush(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = lock(&self.file).file.clone();
        let Some(file) = file else {
            return;
        };
        match file.sync_data() {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                self.fail(&LedgerError::Sync(e));
            }
        }
    }

    /// The ledger's part of `/status`.
    pub fn status(&self) -> LedgerStatus {
        LedgerStatus {
            path: self.settings.path.display().to_string(),
            records: self.records.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            writable: self.healthy.load(Ordering::Acquire),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Counts, remembers and (rate-limited) logs an error, and marks the ledger unwritable.
    fn fail(&self, e: &LedgerError) {
        self.healthy.store(false, Ordering::Release);
        self.note_error(e);
    }

    fn note_error(&self, e: &LedgerError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("codex_sidecar_ledger_write_errors_total").increment(1);
        let message = e.to_string();
        let mut log = lock(&self.error_log);
        let due = log.last.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if due {
            tracing::error!(
                path = %self.settings.path.display(),
                suppressed = log.suppressed,
                required = self.settings.required,
                "ledger: {message}"
            );
            log.last = Some(Instant::now());
            log.suppressed = 0;
        } else {
            log.suppressed += 1;
        }
        drop(log);
        *lock(&self.last_error) = Some(message);
    }

    #[cfg(test)]
    pub(super) fn set_probe_interval(&mut self, d: Duration) {
        self.probe_interval = d;
    }
}

/// Opens the live file, repairing a torn tail left by a crash.
fn open_state(path: &std::path::Path) -> Result<FileState, LedgerError> {
    let open_err = |source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = files::open_append(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let regular = meta.is_file();
    let mut size = meta.len();
    if regular {
        let dropped = files::repair_torn_tail(path).map_err(open_err)?;
        if dropped > 0 {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = dropped,
                "ledger: dropped a torn last line (a write cut short by a crash)"
            );
            size -= dropped;
        }
    }
    Ok(FileState {
        file: Some(Arc::new(file)),
        size,
        regular,
        needs_newline: false,
    })
}

/// Hands `buf` to the kernel, normally in one `write(2)`; continues after a short write
/// or EINTR. Returns the bytes written and the error that stopped it, if any.
fn write_once(mut file: &File, buf: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < buf.len() {
        match file.write(&buf[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}
