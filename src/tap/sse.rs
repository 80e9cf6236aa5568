//! Incremental Server-Sent Events scanner: cuts a byte stream into events, whatever the chunking.
//!
//! Follows the WHATWG event-stream rules for lines (`\n`, `\r\n`, `\r`), fields (`event`,
//! `data`, one optional space after the colon), comments and dispatch on a blank line. It keeps
//! only what it is asked to: the data of events whose name is classified `Skip` is never copied,
//! and every buffer is capped, so a hostile stream costs bounded memory.

use memchr::{memchr, memchr2};

/// Largest data an event may carry before the scanner drops that event.
pub const DATA_CAP: usize = 16 * 1024 * 1024;

/// Longest event name kept; a longer name cannot be one we know.
const NAME_CAP: usize = 256;

/// Buffers grown past this by one large event are released afterwards.
const RETAIN_CAP: usize = 64 * 1024;

/// Whether an event's data is worth keeping, decided from its `event:` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Keep,
    Skip,
}

/// One dispatched event. `name` is `None` when the event had no (or an empty) `event:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Where the scanner stands inside a line that the previous chunk did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Partial {
    /// At the start of a line: nothing pending.
    Line,
    /// The line so far is in `head` (field not yet known, or an `event:` line).
    Head,
    /// Just after `data:`: the optional space has not been seen yet.
    DataStart,
    /// Inside a kept `data:` value: bytes go straight into the event's data.
    Data,
    /// Inside a line nobody needs: bytes are ignored up to the line end.
    Skip,
}

/// The incremental scanner. Feed it chunks; it calls the sink once per dispatched event.
#[derive(Debug)]
pub struct Scanner {
    classify: fn(&[u8]) -> Interest,
    partial: Partial,
    head: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` opening the next one belongs to that line end.
    after_cr: bool,
    name: Vec<u8>,
    data: Vec<u8>,
    /// At least one `data:` line was kept for this event.
    has_data: bool,
    /// The current `event:` name was classified `Skip`.
    skip_name: bool,
    /// Some data of this event was not kept (skipped name or over the cap): never dispatch it.
    dropped: bool,
}

impl Scanner {
    /// A scanner that asks `classify` which named events are worth keeping.
    pub fn new(classify: fn(&[u8]) -> Interest) -> Self {
        Scanner {
            classify,
            partial: Partial::Line,
            head: Vec::new(),
            after_cr: false,
            name: Vec::new(),
            data: Vec::new(),
            has_data: false,
            skip_name: false,
            dropped: false,
        }
    }

    /// Scans one chunk, calling `sink` for every event completed inside it.
    pub fn feed(&mut self, mut chunk: &[u8], sink: &mut impl FnMut(Event<'_>)) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        if self.partial != Partial::Line {
            match memchr2(b'\n', b'\r', chunk) {
                None => {
                    self.extend_partial(chunk);
                    return;
                }
                Some(end) => {
                    self.extend_partial(&chunk[..end]);
                    self.end_partial_line(sink);
                    chunk = self.after_line_end(chunk, end);
                }
            }
        }
        while let Some(end) = memchr2(b'\n', b'\r', chunk) {
            self.line(&chunk[..end], sink);
            chunk = self.after_line_end(chunk, end);
        }
        if !chunk.is_empty() {
            self.head.clear();
            self.partial = Partial::Head;
            self.extend_partial(chunk);
        }
    }

    /// Bytes that make whatever is appended next start a fresh event: they end a
    /// line the stream left open and dispatch the event it left pending (a
    /// client drops or skips that broken event). Empty at an event boundary.
    pub fn resync(&self) -> &'static [u8] {
        let mid_line = self.partial != Partial::Line;
        let mid_event = self.has_data || !self.name.is_empty() || self.dropped || self.skip_name;
        match (mid_line, mid_event, self.after_cr) {
            (true, _, _) => b"\n\n",
            // A `\n` right after a chunk-ending `\r` only completes that line end.
            (false, true, true) => b"\n\n",
            (false, true, false) => b"\n",
            (false, false, _) => b"",
        }
    }

    /// The rest of `chunk` after the line end at `end`, remembering a `\r` that closes the chunk.
    fn after_line_end<'c>(&mut self, chunk: &'c [u8], end: usize) -> &'c [u8] {
        if chunk[end] == b'\r' {
            match chunk.get(end + 1) {
                Some(b'\n') => return &chunk[end + 2..],
                None => self.after_cr = true,
                Some(_) => {}
            }
        }
        &chunk[end + 1..]
    }

    /// One complete line (without its line end).
    fn line(&mut self, line: &[u8], sink: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
            self.dispatch(sink);
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => (&line[..colon], strip_space(&line[colon + 1..])),
            None => (line, &[][..]),
        };
        match field {
            b"data" => self.data_line(value),
            b"event" => self.set_name(value),
            // Comments (empty field), `id`, `retry` and unknown fields teach us nothing.
            _ => {}
        }
    }

    /// Takes bytes of a line whose end is not in this chunk.
    fn extend_partial(&mut self, bytes: &[u8]) {
        match self.partial {
            Partial::Line | Partial::Skip => {}
            Partial::Data => {
                if !self.append_data(bytes) {
                    self.partial = Partial::Skip;
                }
            }
            Partial::DataStart => {
                if let Some((&first, rest)) = bytes.split_first() {
                    let value = if first == b' ' { rest } else { bytes };
                    self.partial = if self.open_data_line() && self.append_data(value) {
                        Partial::Data
                    } else {
                        Partial::Skip
                    };
                }
            }
            Partial::Head => {
                self.head.extend_from_slice(bytes);
                self.resolve_head();
            }
        }
    }

    /// Decides, as early as possible, what a pending line is, so that only short heads are kept.
    fn resolve_head(&mut self) {
        let Some(colon) = memchr(b':', &self.head) else {
            // Without a colon the whole line is the field name: only `data`/`event` matter.
            if self.head.len() > b"event".len() {
                self.partial = Partial::Skip;
            }
            return;
        };
        match &self.head[..colon] {
            b"data" => {
                let value_start = colon + 1;
                if value_start == self.head.len() {
                    self.partial = Partial::DataStart;
                    return;
                }
                let head = std::mem::take(&mut self.head);
                let value = strip_space(&head[value_start..]);
                self.partial = if self.open_data_line() && self.append_data(value) {
                    Partial::Data
                } else {
                    Partial::Skip
                };
                self.head = head;
            }
            b"event" => {
                if self.head.len() > colon + 1 + NAME_CAP {
                    // Too long to be a name we know: keep a prefix and ignore the rest.
                    let head = std::mem::take(&mut self.head);
                    self.set_name(strip_space(&head[colon + 1..]));
                    self.head = head;
                    self.partial = Partial::Skip;
                }
            }
            _ => self.partial = Partial::Skip,
        }
    }

    /// The pending line just ended.
    fn end_partial_line(&mut self, sink: &mut impl FnMut(Event<'_>)) {
        match self.partial {
            Partial::Head => {
                let head = std::mem::take(&mut self.head);
                self.line(&head, sink);
                self.head = head;
                self.head.clear();
                if self.head.capacity() > RETAIN_CAP {
                    self.head = Vec::new();
                }
            }
            Partial::DataStart => {
                // The line was exactly `data:`: an empty value line.
                self.open_data_line();
            }
            Partial::Line | Partial::Data | Partial::Skip => {}
        }
        self.partial = Partial::Line;
    }

    /// A whole `data:` line.
    fn data_line(&mut self, value: &[u8]) {
        if self.open_data_line() {
            self.append_data(value);
        }
    }

    /// Starts a new `data:` line of the current event; false when its value is not kept.
    fn open_data_line(&mut self) -> bool {
        if self.skip_name || self.dropped {
            self.dropped = true;
            return false;
        }
        if self.has_data && !self.append_data(b"\n") {
            return false;
        }
        self.has_data = true;
        true
    }

    /// Appends to the event's data within the cap; past the cap the event is dropped.
    fn append_data(&mut self, bytes: &[u8]) -> bool {
        if self.dropped {
            return false;
        }
        if self.data.len() + bytes.len() > DATA_CAP {
            self.dropped = true;
            self.data = Vec::new();
            return false;
        }
        self.data.extend_from_slice(bytes);
        true
    }

    fn set_name(&mut self, value: &[u8]) {
        self.name.clear();
        self.name
            .extend_from_slice(&value[..value.len().min(NAME_CAP)]);
        self.skip_name = !self.name.is_empty() && (self.classify)(&self.name) == Interest::Skip;
        if self.skip_name && self.has_data {
            self.dropped = true;
            self.data.clear();
        }
    }

    /// A blank line: hand over the event (if it has kept data) and start the next one.
    fn dispatch(&mut self, sink: &mut impl FnMut(Event<'_>)) {
        if self.has_data && !self.dropped && !self.skip_name {
            let name = (!self.name.is_empty()).then_some(&self.name[..]);
            sink(Event {
                name,
                data: &self.data,
            });
        }
        self.data.clear();
        if self.data.capacity() > RETAIN_CAP {
            self.data = Vec::new();
        }
        self.name.clear();
        self.has_data = false;
        self.skip_name = false;
        self.dropped = false;
    }
}

/// Drops the single optional space that may follow a field's colon.
fn strip_space(value: &[u8]) -> &[u8] {
    value.strip_prefix(b" ").unwrap_or(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keep_all(_: &[u8]) -> Interest {
        Interest::Keep
    }

    #[test]
    fn resync_starts_a_fresh_event_wherever_the_stream_stopped() {
        let appended = b"event: x\ndata: {}\n\n";
        for cut in [
            &b""[..],
            b"data: {\"a\":1}\n\n",
            b"data: {\"a\"",
            b"data: {\"a\":1}\n",
            b"event: y\n",
            b"data: 1\r",
            b"data: 1\r\n\r",
            b": comment",
            b"ev",
        ] {
            let mut s = Scanner::new(keep_all);
            let mut names = Vec::new();
            let mut sink = |e: Event<'_>| names.push(e.name.map(<[u8]>::to_vec));
            s.feed(cut, &mut sink);
            let resync = s.resync();
            s.feed(resync, &mut sink);
            s.feed(appended, &mut sink);
            assert_eq!(
                names.last(),
                Some(&Some(b"x".to_vec())),
                "after {:?}",
                String::from_utf8_lossy(cut)
            );
            let mut whole = Scanner::new(keep_all);
            let mut datas = Vec::new();
            whole.feed(&[cut, resync, appended].concat(), &mut |e: Event<'_>| {
                datas.push(e.data.to_vec())
            });
            assert_eq!(
                datas.last(),
                Some(&b"{}".to_vec()),
                "in one piece after {cut:?}"
            );
        }
    }

    fn skip_deltas(name: &[u8]) -> Interest {
        if name.ends_with(b".delta") {
            Interest::Skip
        } else {
            Interest::Keep
        }
    }

    /// (name, data) of every event, with the stream cut into `chunks`.
    fn scan(classify: fn(&[u8]) -> Interest, chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut scanner = Scanner::new(classify);
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, &mut |ev: Event<'_>| {
                out.push((
                    ev.name.map(|n| String::from_utf8_lossy(n).into_owned()),
                    String::from_utf8_lossy(ev.data).into_owned(),
                ))
            });
        }
        out
    }

    fn ev(name: Option<&str>, data: &str) -> (Option<String>, String) {
        (name.map(str::to_owned), data.to_owned())
    }

    /// Every way of cutting `stream` in two, and byte by byte, gives `expected`.
    fn assert_all_splits(
        classify: fn(&[u8]) -> Interest,
        stream: &[u8],
        expected: &[(Option<String>, String)],
    ) {
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(scan(classify, &[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(classify, &bytes), expected, "byte by byte");
    }

    #[test]
    fn fields_comments_and_dispatch() {
        let stream = b": keep-alive\nevent: a\ndata: x\n\ndata:y\nid: 7\nretry: 10\n\n";
        assert_all_splits(keep_all, stream, &[ev(Some("a"), "x"), ev(None, "y")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        let stream = b"event: e\ndata: {\"a\":\ndata:  1}\ndata\ndata:\n\n";
        assert_all_splits(keep_all, stream, &[ev(Some("e"), "{\"a\":\n 1}\n\n")]);
    }

    #[test]
    fn crlf_and_cr_line_ends() {
        let expected = [ev(Some("a"), "1"), ev(Some("b"), "2")];
        assert_all_splits(
            keep_all,
            b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n",
            &expected,
        );
        assert_all_splits(
            keep_all,
            b"event: a\rdata: 1\r\revent: b\rdata: 2\r\r",
            &expected,
        );
        assert_all_splits(
            keep_all,
            b"event: a\rdata: 1\r\n\nevent: b\ndata: 2\r\r",
            &expected,
        );
    }

    #[test]
    fn cr_then_lf_in_the_next_chunk_is_one_line_end() {
        // Split exactly between `\r` and `\n`, and with empty chunks in between.
        let got = scan(
            keep_all,
            &[b"data: 1\r", b"", b"\n\r", b"\ndata: 2\r", b"\r"],
        );
        assert_eq!(got, [ev(None, "1"), ev(None, "2")]);
    }

    #[test]
    fn skipped_names_are_not_dispatched_and_not_buffered() {
        let stream = b"event: x.delta\ndata: aaaa\n\nevent: x.done\ndata: bbbb\n\n";
        assert_all_splits(skip_deltas, stream, &[ev(Some("x.done"), "bbbb")]);
        let mut scanner = Scanner::new(skip_deltas);
        let big = vec![b'a'; 1 << 20];
        scanner.feed(b"event: x.delta\ndata: ", &mut |_| {});
        scanner.feed(&big, &mut |_| {});
        assert_eq!(scanner.data.capacity(), 0);
        assert!(scanner.head.capacity() < 64);
    }

    #[test]
    fn name_after_data_still_decides() {
        assert_eq!(scan(skip_deltas, &[b"data: 1\nevent: x.delta\n\n"]), []);
        assert_eq!(
            scan(skip_deltas, &[b"data: 1\nevent: y\n\n"]),
            [ev(Some("y"), "1")]
        );
        // The last `event:` line wins, but data skipped under an earlier name is lost for good.
        assert_eq!(
            scan(skip_deltas, &[b"event: x.delta\ndata: 1\nevent: y\n\n"]),
            []
        );
        assert_eq!(
            scan(skip_deltas, &[b"event: x.delta\nevent: y\ndata: 1\n\n"]),
            [ev(Some("y"), "1")]
        );
    }

    #[test]
    fn events_without_data_or_unterminated_are_not_dispatched() {
        assert_eq!(
            scan(keep_all, &[b"event: a\n\n: c\n\nevent: b\ndata: 1\n"]),
            []
        );
        assert_eq!(scan(keep_all, &[b"event: a\ndata: 1"]), []);
    }

    #[test]
    fn empty_event_name_means_no_name() {
        assert_eq!(scan(keep_all, &[b"event:\ndata: 1\n\n"]), [ev(None, "1")]);
    }

    #[test]
    fn data_over_the_cap_drops_that_event_only() {
        let mut big = b"event: big\ndata: ".to_vec();
        big.resize(big.len() + DATA_CAP + 1, b'x');
        big.extend_from_slice(b"\n\nevent: small\ndata: ok\n\n");
        let whole = scan(keep_all, &[&big]);
        assert_eq!(whole, [ev(Some("small"), "ok")]);
        let chunked: Vec<&[u8]> = big.chunks(64 * 1024).collect();
        assert_eq!(scan(keep_all, &chunked), whole);
        // Exactly at the cap is still kept.
        let mut exact = b"data: ".to_vec();
        exact.resize(exact.len() + DATA_CAP, b'y');
        exact.extend_from_slice(b"\n\n");
        let mut scanner = Scanner::new(keep_all);
        let mut len = None;
        for chunk in exact.chunks(1 << 20) {
            scanner.feed(chunk, &mut |ev: Event<'_>| len = Some(ev.data.len()));
        }
        assert_eq!(len, Some(DATA_CAP));
        // A large buffer is released once its event is gone.
        assert_eq!(scanner.data.capacity(), 0);
    }

    #[test]
    fn over_long_names_and_unknown_fields_stay_bounded() {
        let mut stream = b"event: ".to_vec();
        stream.extend(std::iter::repeat_n(b'n', 10_000));
        stream.extend_from_slice(b"\ndata: 1\n\n");
        stream.extend(std::iter::repeat_n(b'z', 10_000));
        stream.extend_from_slice(b": v\ndata: 2\n\n");
        let chunked: Vec<&[u8]> = stream.chunks(7).collect();
        let got = scan(keep_all, &chunked);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.as_deref().map(str::len), Some(NAME_CAP));
        assert_eq!(got[1], ev(None, "2"));
    }

    #[test]
    fn binary_noise_does_not_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Plenty of line ends and colons, so every state is visited.
                [b'\n', b'\r', b':', b' ', b'd', (seed >> 24) as u8][(seed % 6) as usize]
            })
            .collect();
        for size in [1, 3, 64, 4096] {
            let chunks: Vec<&[u8]> = noise.chunks(size).collect();
            scan(keep_all, &chunks);
        }
    }
}
