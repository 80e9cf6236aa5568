//! The top-level members of a JSON object, found without building them.
//!
//! The reader needs a few members of an answer or event (`usage`, `status`, `model`...) and
//! none of the bulk around them (`output`, `instructions`, `tools`, encrypted reasoning).
//! Deserializing the whole object walked every byte of that bulk through serde
//! (`benches/PROFILE.md`: 14 % of the CPU per non-streamed request); this walk skips strings
//! with `memchr` and hands back raw slices, of which the reader parses only the few it wants.
//!
//! It checks the structure as it goes (brackets matched, keys quoted, members separated,
//! nothing after the object, nesting at most serde_json's 127 levels): what it cannot walk,
//! it rejects, as the parser did. It does not check the inside of what it skips (escapes,
//! number syntax), which the reader never looks at.

/// serde_json's recursion limit (its 128, exclusive), counting the outer object.
const MAX_DEPTH: usize = 127;

/// Calls `each(key, value)` for every member of the object `data` holds, in order, with the
/// raw bytes of the key (between its quotes, escapes left as they are) and of the value.
/// `None` when `data` is not one whole object (values seen before the fault were still
/// passed to `each`: the caller discards what it built).
pub(super) fn members<'a>(data: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> Option<()> {
    let mut c = Cursor { data, at: 0 };
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.eat(b'}').is_none() {
        loop {
            c.ws();
            c.eat(b'"')?;
            let key_start = c.at;
            c.string_rest()?;
            let key = &data[key_start..c.at - 1];
            c.ws();
            c.eat(b':')?;
            c.ws();
            let value_start = c.at;
            c.value()?;
            each(key, &data[value_start..c.at]);
            c.ws();
            match *data.get(c.at)? {
                b',' => c.at += 1,
                b'}' => {
                    c.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    c.ws();
    (c.at == data.len()).then_some(())
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.data.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (*self.data.get(self.at)? == byte).then(|| self.at += 1)
    }

    /// From just after an opening quote to just after the closing one.
    fn string_rest(&mut self) -> Option<()> {
        loop {
            let rest = self.data.get(self.at..)?;
            let i = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[i] == b'"' {
                self.at += i + 1;
                return Some(());
            }
            // A backslash and the byte it escapes (`\"` must not end the string).
            self.at += i + 2;
        }
    }

    fn value(&mut self) -> Option<()> {
        match *self.data.get(self.at)? {
            b'"' => {
                self.at += 1;
                self.string_rest()
            }
            b'{' | b'[' => self.container(),
            _ => self.scalar(),
        }
    }

    /// An object or array, to just after its closing bracket.
    fn container(&mut self) -> Option<()> {
        // The open brackets, one bit each (1 for `{`); the outer object is one level.
        let mut open: u128 = 0;
        let mut depth = 1;
        loop {
            let byte = *self.data.get(self.at)?;
            self.at += 1;
            match byte {
                b'"' => self.string_rest()?,
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    open = open << 1 | u128::from(byte == b'{');
                    depth += 1;
                }
                b'}' | b']' => {
                    if (open & 1 == 1) != (byte == b'}') {
                        return None;
                    }
                    open >>= 1;
                    depth -= 1;
                    if depth == 1 {
                        return Some(());
                    }
                }
                _ => {}
            }
        }
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<()> {
        let rest = &self.data[self.at..];
        let len = rest
            .iter()
            .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        let number = word
            .first()
            .is_some_and(|b| matches!(b, b'-' | b'0'..=b'9'))
            && word
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
        (number || matches!(word, b"true" | b"false" | b"null")).then(|| self.at += len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all(data: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        members(data.as_bytes(), |k, v| {
            out.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })?;
        Some(out)
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect())
    }

    #[test]
    fn members_and_their_raw_values() {
        let data = r#" { "a" : 1 , "b":"x\"}y\\", "c":{"d":[1,{"e":"]"}],"f":null},"g":[] ,
            "h\"k":true, "i":-1.5e+3 }
        "#;
        assert_eq!(
            all(data),
            pairs(&[
                ("a", "1"),
                ("b", r#""x\"}y\\""#),
                ("c", r#"{"d":[1,{"e":"]"}],"f":null}"#),
                ("g", "[]"),
                (r#"h\"k"#, "true"),
                ("i", "-1.5e+3"),
            ])
        );
        assert_eq!(all("{}"), pairs(&[]));
        assert_eq!(all(" {\n}\n"), pairs(&[]));
    }

    #[test]
    fn what_is_not_one_whole_object_is_rejected() {
        for bad in [
            "",
            "[]",
            "null",
            "{",
            "{\"a\":1",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":[1}",
            "{\"a\":{]}",
            "{\"a\":\"unterminated}",
            "{\"a\":\"ends in a backslash\\",
            "{\"a\":}",
            "{\"a\":nul}",
            "{\"a\":tru}",
            "{\"a\":abc}",
            "{\"a\":1 2}",
            "{\"a\":[1]]}",
            "{\"a\":1,,\"b\":2}",
        ] {
            assert_eq!(all(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        let nested = |levels: usize| {
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(all(&nested(MAX_DEPTH)).is_some());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(all(&nested(MAX_DEPTH + 1)), None);
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH + 1)).is_err());
        // Deep, unbalanced input ends quickly and without a stack overflow.
        assert_eq!(all(&format!("{{\"a\":{}", "[".repeat(100_000))), None);
    }
}
