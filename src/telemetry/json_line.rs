//! The JSON log line, written by hand: `{"timestamp":…,"level":…,<fields>,"target":…}`, one
//! object per line, the event's fields at the top level.
//!
//! It replaces tracing-subscriber's JSON formatter, which serializes through serde and an
//! adaptor that checks every small write for UTF-8 (`benches/PROFILE.md`: 15 % of the
//! sidecar's CPU per request went to the access line). The shape is the same as that
//! formatter's with `flatten_event(true)` and no span fields.

use std::fmt::{self, Write};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json_text::{push_escaped, push_str, push_u64};

/// The formatter (`tracing_subscriber::fmt::layer().event_format(JsonLine::new())`).
pub struct JsonLine {
    /// The clock of the `timestamp` field (a fixed one in the tests).
    now: fn() -> SystemTime,
}

impl JsonLine {
    pub fn new() -> Self {
        JsonLine {
            now: SystemTime::now,
        }
    }
}

impl Default for JsonLine {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_line(&mut writer, (self.now)(), event)
    }
}

fn write_line(writer: &mut dyn Write, now: SystemTime, event: &Event<'_>) -> fmt::Result {
    // Built in a local string (static calls, one reservation), handed over in one write.
    let mut line = String::with_capacity(512);
    let meta = event.metadata();
    let _ = write!(
        line,
        "{{\"timestamp\":\"{}\",\"level\":\"{}\"",
        humantime::format_rfc3339_micros(now),
        meta.level()
    );
    event.record(&mut Fields(&mut line));
    line.push_str(",\"target\":");
    push_str(&mut line, meta.target());
    line.push_str("}\n");
    writer.write_str(&line)
}

/// Writes each field as `,"name":value`.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn name(&mut self, field: &Field) -> &mut String {
        self.0.push(',');
        push_str(self.0, field.name());
        self.0.push(':');
        self.0
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let out = self.name(field);
        push_str(out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let out = self.name(field);
        push_u64(out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let out = self.name(field);
        if value < 0 {
            out.push('-');
        }
        push_u64(out, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let out = self.name(field);
        out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let out = self.name(field);
        // JSON has no NaN or infinity: those are written as strings.
        let _ = if value.is_finite() {
            write!(out, "{value}")
        } else {
            write!(out, "\"{value}\"")
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let out = self.name(field);
        out.push('"');
        let _ = write!(Escaped(out), "{value}");
        out.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let out = self.name(field);
        out.push('"');
        let _ = write!(Escaped(out), "{value:?}");
        out.push('"');
    }
}

/// Escapes what is formatted into it for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The lines the formatter writes for what `emit` logs.
    fn lines(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLine::new())
                .with_writer(captured.clone()),
        );
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn access_line_has_every_field_at_the_top() {
        let none: Option<u64> = None;
        let got = lines(|| {
            tracing::info!(target: "codex_sidecar::access", request_id = %"req_1", billing = "org",
                status = 200u16, duration_ms = 12u64, first_byte_ms = none, input_tokens = Some(5u64),
                delta = -3i64, ok = true, ratio = 0.5f64, "request");
        });
        assert_eq!(got.len(), 1);
        let mut line = got[0].clone();
        let ts = line["timestamp"].take();
        let ts = ts.as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(ts.len(), "2026-12-04T04:35:01.123456Z".len(), "{ts}");
        assert_eq!(
            line,
            serde_json::json!({"timestamp": null, "level": "INFO", "request_id": "req_1",
                "billing": "org", "status": 200, "duration_ms": 12, "input_tokens": 5,
                "delta": -3, "ok": true, "ratio": 0.5, "message": "request",
                "target": "codex_sidecar::access"})
        );
    }

    #[test]
    fn strings_are_escaped() {
        let nasty = "quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f} é ✓";
        let err = std::io::Error::other("broken \"pipe\"\n");
        let got = lines(|| {
            tracing::warn!(value = nasty, debug = ?nasty, error = %err, "msg {}", "with \"args\"");
            tracing::error!(
                err = &err as &(dyn std::error::Error + 'static),
                nan = f64::NAN
            );
        });
        assert_eq!(got[0]["value"], nasty);
        assert_eq!(got[0]["debug"], format!("{nasty:?}"));
        assert_eq!(got[0]["error"], "broken \"pipe\"\n");
        assert_eq!(got[0]["message"], "msg with \"args\"");
        assert_eq!(got[0]["level"], "WARN");
        assert_eq!(got[1]["err"], "broken \"pipe\"\n");
        assert_eq!(got[1]["nan"], "NaN");
        assert_eq!(got[1]["level"], "ERROR");
    }

    #[test]
    fn exact_bytes() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLine {
                    now: || UNIX_EPOCH + Duration::from_secs(1_796_358_901),
                })
                .with_writer(captured.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "t", n = 1u64, s = "a\"b", "hi");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"timestamp\":\"2026-12-04T04:35:01.000000Z\",\"level\":\"INFO\",\"message\":\"hi\",\"n\":1,\"s\":\"a\\\"b\",\"target\":\"t\"}\n"
        );
    }
}
