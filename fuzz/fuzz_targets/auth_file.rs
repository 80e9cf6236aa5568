//! The credential-file parser (src/credentials/auth_file.rs) on arbitrary
//! text: it never panics, and its error never repeats the file's content.
#![no_main]

use codex_sidecar::credentials::auth_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = auth_file::parse(text) {
        // A secret-looking token of the input must not come back in the message.
        for word in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_') {
            if word.len() >= 24 {
                assert!(!e.contains(word), "the error repeats input: {e}");
            }
        }
    }
    for part in text.split_whitespace() {
        let _ = auth_file::jwt_payload(part);
    }
});
