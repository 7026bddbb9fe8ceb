//! The tracing subscriber: one function, text or JSON, level from `RUST_LOG`
//! (default `info`), to stderr (journald takes it from there).
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) the text format has no
//! timestamp (the journal stamps every line; two would disagree at a glance) and
//! each line starts with its syslog priority (`<3>` error ... `<7>` debug), which
//! journald reads, so `journalctl -p warning` and the colours work. Plain text
//! to stderr rather than `tracing-journald`: it needs no socket the sandbox
//! might hide, keeps the escaping below, and the spans (`request{...}`,
//! `upload{upload_id=.. cloud=.. image=..}`) already put the fields an operator
//! filters on into every line.
//!
//! Values that come from requests (a cloud name in a query, a path) may hold
//! control characters; in the text format a newline would forge a log line. So
//! every field of the text format is written with control characters escaped
//! (`\n`, `\u{1b}`); the JSON format escapes them by itself.

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text if stderr_is_the_journal() => builder
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init(),
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` is
/// `device:inode` of it; a child whose stderr was redirected keeps the variable
/// but not the stream).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()),
        Err(_) => false,
    }
}

/// Prefixes each line with its syslog priority, as journald reads it.
struct JournalPriority<F>(F);

fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
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

    #[test]
    fn journal_lines_have_a_priority_a_span_and_no_timestamp() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("upload", cloud = "a\nb", image = "jammy-x-x64");
            let _in = span.enter();
            tracing::warn!("slow");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with(r#"<4> WARN upload{cloud="a\nb" image="jammy-x-x64"}"#),
            "{text}"
        );
        assert!(!text.contains("20"), "a timestamp in {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
