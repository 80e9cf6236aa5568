//! The ledger's files on disk: opening, torn-tail repair, rotation, and listing for readers.
//!
//! Rotation shifts names like logrotate: the live file `ledger.jsonl` becomes
//! `ledger.jsonl.1`, `.1` becomes `.2`, and so on; what would go past `.{keep}` is
//! deleted. So `.1` is always the newest rotated file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `path` with `.n` appended: the n-th newest rotated file.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens the live file for appending, creating missing directories (0700) and the file
/// (0640; directories 0750, so a shipper in the sidecar's group can read). Existing directories and files keep their modes.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Group-readable: a log shipper in the sidecar's group tails it (records hold no secret).
        DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// Truncates a regular file after its last `\n`, dropping a torn record left by a crash
/// in the middle of a write. Returns how many bytes were dropped.
pub fn repair_torn_tail(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = file.metadata()?;
    // Devices and pipes (e.g. /dev/stdout) have no tail to repair, and reading them may block.
    if !meta.is_file() || meta.len() == 0 {
        return Ok(0);
    }
    let len = meta.len();
    let keep = end_of_last_line(&mut file, len)?;
    if keep == len {
        return Ok(0);
    }
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(len - keep)
}

/// The offset just after the last `\n` in the first `len` bytes (0 when there is none).
fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Rotates the live file: deletes rotated files numbered `keep` and above (also those
/// left by a larger `keep` before), shifts `.n` to `.n+1`, renames the live file to `.1`.
/// With `keep == 0` the live file is deleted. Stops at the first failure, so no rename
/// ever replaces a file that was not moved away first.
pub fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    for (n, old) in rotated_files(path) {
        if n >= keep as u64 {
            remove_if_exists(&old)?;
        }
    }
    if keep == 0 {
        return remove_if_exists(path);
    }
    for n in (1..keep).rev() {
        rename_if_exists(&rotated_path(path, n), &rotated_path(path, n + 1))?;
    }
    fs::rename(path, rotated_path(path, 1))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes renames and new files in `path`'s directory durable.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The ledger's files, oldest first: rotated files by descending number, then the live
/// file. Files that do not exist are left out.
pub fn ledger_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(path).into_iter().map(|(_, p)| p).collect();
    match fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(files)
}

/// The rotated files beside `path` (`<name>.<number>`), highest number (oldest) first.
fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let mut rotated = Vec::new();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let (Some(name), Ok(entries)) = (name, fs::read_dir(dir)) {
        let prefix = format!("{name}.");
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let number = file_name
                .strip_prefix(&prefix)
                .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|rest| rest.parse::<u64>().ok());
            if let Some(n) = number {
                rotated.push((n, dir.join(&file_name)));
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    rotated
}

/// One line of a ledger file, as readers see it.
pub struct Line<'a> {
    /// 1-based line number in its file.
    pub number: usize,
    /// The line without its `\n`.
    pub bytes: &'a [u8],
    /// False for a last line that has no `\n` (a torn write, or one still in progress).
    pub terminated: bool,
}

/// Calls `f` for each line of `path`, streaming (ledger files can be large).
pub fn for_each_line(path: &Path, mut f: impl FnMut(Line<'_>)) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let terminated = buf.last() == Some(&b'\n');
        let bytes = if terminated {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        f(Line {
            number,
            bytes,
            terminated,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_directories_0700_and_file_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/ledger.jsonl");
        open_append(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("a")), 0o750);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o750);
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn repairs_a_torn_last_line_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l");
        fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        assert_eq!(repair_torn_tail(&path).unwrap(), 5);
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(repair_torn_tail(&path).unwrap(), 0);

        fs::write(&path, b"no newline at all").unwrap();
        assert_eq!(repair_torn_tail(&path).unwrap(), 17);
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn repair_scans_back_across_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l");
        let mut content = b"first\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', 200_000));
        fs::write(&path, &content).unwrap();
        assert_eq!(repair_torn_tail(&path).unwrap(), 200_000);
        assert_eq!(fs::read(&path).unwrap(), b"first\n");
    }

    #[test]
    fn rotation_shifts_names_and_keeps_at_most_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger.jsonl");
        for i in 0..5 {
            fs::write(&path, format!("{i}\n")).unwrap();
            rotate(&path, 3).unwrap();
        }
        assert!(!path.exists());
        assert_eq!(fs::read_to_string(rotated_path(&path, 1)).unwrap(), "4\n");
        assert_eq!(fs::read_to_string(rotated_path(&path, 2)).unwrap(), "3\n");
        assert_eq!(fs::read_to_string(rotated_path(&path, 3)).unwrap(), "2\n");
        assert!(!rotated_path(&path, 4).exists());
        fs::write(&path, "5\n").unwrap();
        let files = ledger_files(&path).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ledger.jsonl.3",
                "ledger.jsonl.2",
                "ledger.jsonl.1",
                "ledger.jsonl"
            ]
        );
    }

    #[test]
    fn rotation_removes_files_beyond_a_smaller_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger.jsonl");
        for n in 1..=5 {
            fs::write(rotated_path(&path, n), format!("{n}\n")).unwrap();
        }
        fs::write(&path, "live\n").unwrap();
        rotate(&path, 2).unwrap();
        assert_eq!(
            ledger_files(&path).unwrap(),
            vec![rotated_path(&path, 2), rotated_path(&path, 1)]
        );
        assert_eq!(fs::read_to_string(rotated_path(&path, 2)).unwrap(), "1\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1)).unwrap(),
            "live\n"
        );
    }

    #[test]
    fn listing_ignores_unrelated_names() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ledger.jsonl");
        for name in [
            "ledger.jsonl.bak",
            "ledger.jsonl.",
            "other.jsonl.1",
            "ledger.jsonl.12",
        ] {
            fs::write(tmp.path().join(name), "").unwrap();
        }
        let files = ledger_files(&path).unwrap();
        assert_eq!(files, vec![tmp.path().join("ledger.jsonl.12")]);
    }
}
