//! The tracing subscriber: one function, text or JSON, level from `RUST_LOG`
//! (default `info`), to stderr (journald takes it from there).
//!
//! Values that come from requests (a cloud name in a query, a path) may hold
//! control characters; in the text format a newline would forge a log line. So
//! every field of the text format is written with control characters escaped
//! (`\n`, `\u{1b}`); the JSON format escapes them by itself.

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The text format's fields, `name=value` separated by spaces (the message
/// first, bare), with control characters escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static
{
    debug_fn(
        |writer: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() != "message" {
                write!(writer, "{field}=")?;
            }
            write_escaped(writer, &text)
        },
    )
    .delimited(" ")
}

fn write_escaped(out: &mut impl std::fmt::Write, text: &str) -> std::fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_default())?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_value_from_a_request_cannot_forge_a_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .finish();
        let hostile = "nowhere\n2026-11-30T00:00:00Z  INFO forged: all is well\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(cloud = %hostile, "request refused: {hostile}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r"cloud=nowhere\n2026"), "{text}");
        assert!(text.contains(r"\u{1b}[2J"), "{text}");
        assert!(text.contains("request refused: nowhere"), "{text}");
    }
}
