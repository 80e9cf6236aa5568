//! A wrapper for credentials: redacted in Debug and Display, zeroed on drop.

use zeroize::Zeroize;

/// A secret string (API key, access or refresh token, client token).
///
/// It never prints its value: `Debug` and `Display` show `[redacted]`. The
/// bytes are overwritten when the value is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. Surrounding whitespace (a trailing newline in a key file) is removed.
    pub fn new(mut value: String) -> Self {
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            let t = trimmed.to_owned();
            value.zeroize();
            value = t;
        }
        Secret(value)
    }

    /// The secret itself: only for building the outgoing header or file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-live-abc123\n".into());
        assert_eq!(s.expose(), "sk-live-abc123");
        assert!(!format!("{s:?}").contains("abc123"));
        assert!(!format!("{s}").contains("abc123"));
    }
}
