//! Reading credential files safely: owner-only permissions, clear messages.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::secret::Secret;

/// Why a credential file could not be used. Messages name the file and the fix
/// and never contain the file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileProblem {
    Missing,
    Unreadable(String),
    Insecure(String),
    Invalid(String),
}

impl FileProblem {
    pub fn message(&self) -> &str {
        match self {
            FileProblem::Missing => "missing",
            FileProblem::Unreadable(m) | FileProblem::Insecure(m) | FileProblem::Invalid(m) => m,
        }
    }
}

/// Reads a credential file after checking it is a regular file owned by this
/// user with no group or other permissions (0600 or 0400).
pub fn read_secret_file(key: &str, path: &Path) -> Result<Secret, FileProblem> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FileProblem::Missing),
        Err(e) => {
            return Err(FileProblem::Unreadable(format!(
                "{key} {}: cannot read it ({e}); make it readable by the sidecar's user",
                path.display()
            )))
        }
    };
    if !meta.is_file() {
        return Err(FileProblem::Unreadable(format!(
            "{key} {}: is not a regular file",
            path.display()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileProblem::Insecure(format!(
            "{key} {}: has mode {mode:04o}, so other users can read the credential; fix: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(FileProblem::Insecure(format!(
            "{key} {}: is owned by uid {}, not by the sidecar's user (uid {me}); fix: chown {me} {}",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        FileProblem::Unreadable(format!("{key} {}: cannot read it ({e})", path.display()))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let mut b = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut b);
        FileProblem::Invalid(format!("{key} {}: is not UTF-8 text", path.display()))
    })?;
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_group_or_world_readable_files_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "sk-test-123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file("org.api_key_file", &p).unwrap_err();
        let FileProblem::Insecure(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("mode 0644") && m.contains("chmod 600") && !m.contains("sk-test"),
            "{m}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file("k", &p).unwrap().expose(), "sk-test-123");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_secret_file("k", &p).is_ok());
    }

    #[test]
    fn missing_is_not_an_error_message() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_secret_file("k", &dir.path().join("nope")).unwrap_err(),
            FileProblem::Missing
        );
    }
}
