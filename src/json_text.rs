//! JSON text written by hand, for the two lines written once per request: the ledger
//! record and the access log line (`benches/PROFILE.md`: serde and `core::fmt` were most
//! of their cost). Strings are escaped exactly as serde_json escapes them, so a ledger line
//! is byte for byte what serde would write.

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string, as serde_json does: `"` and `\`
/// escaped, control characters as `\b \f \n \r \t` or `\u00xx`, everything else (DEL,
/// non-ASCII) as it is.
pub fn push_escaped(out: &mut String, s: &str) {
    // Most strings (ids, names, models) need nothing escaped: one scan, one copy.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes end a run, so every slice ends on a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends `n` in decimal, without the formatting machinery.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Appends `n`, or `null`.
pub fn push_opt_u64(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => push_u64(out, n),
        None => out.push_str("null"),
    }
}

/// Appends `s` as a string literal, or `null`.
pub fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all = String::new();
        for c in (0u32..0x80).filter_map(char::from_u32) {
            all.push(c);
        }
        all.push_str("é ✓ 𝄞 \u{2028}");
        for s in [all.as_str(), "", "plain", "\"", "\\", "a\u{0}b"] {
            let mut ours = String::new();
            push_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn numbers() {
        for n in [0, 1, 9, 10, 99, 100, 1_764_000_000, u64::MAX - 1, u64::MAX] {
            let mut ours = String::new();
            push_u64(&mut ours, n);
            assert_eq!(ours, n.to_string());
        }
        let mut out = String::new();
        push_opt_u64(&mut out, None);
        push_opt_str(&mut out, None);
        push_opt_str(&mut out, Some("x"));
        assert_eq!(out, "nullnull\"x\"");
    }
}
