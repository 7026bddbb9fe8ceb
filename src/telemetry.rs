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
//! A reload switches `log_format`: both formats are installed, each records
//! every span's fields in its own form, and a flag says which one writes the
//! events. (Swapping one layer for the other through `tracing_subscriber::reload`
//! does not work: a span opened before the swap has no fields in the new
//! format, and the JSON layer panics on it.)
//!
//! Values that come from requests (a cloud name in a query, a path) may hold
//! control characters; in the text format a newline would forge a log line. So
//! every field of the text format is written with control characters escaped
//! (`\n`, `\u{1b}`); the JSON format escapes them by itself.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogFormat;

/// Whether events are written as JSON (else as text); a reload flips it.
static JSON: AtomicBool = AtomicBool::new(false);
/// Whether [`init`] installed our subscriber (not so inside a test process).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// What the text layer sits on.
type Filtered = Layered<EnvFilter, Registry>;

pub(crate) fn init(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = subscriber(filter, std::io::stderr, stderr_is_the_journal()).try_init();
    INSTALLED.store(installed.is_ok(), Ordering::Relaxed);
}

/// The subscriber: `filter`, then a text and a JSON layer writing to `writer`,
/// of which [`JSON`] picks the one that writes events.
fn subscriber<W>(filter: EnvFilter, writer: W, journal: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    let text = text_layer(writer.clone(), journal)
        .with_filter(dynamic_filter_fn(|meta, _| writes(meta, false)));
    let json = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_filter(dynamic_filter_fn(|meta, _| writes(meta, true)));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
}

/// Whether the layer of the JSON format (`json`) or the text one sees `meta`:
/// both see every span (each keeps the span's fields in its own format, so a
/// span opened before a switch prints in either), only one writes events.
fn writes(meta: &Metadata<'_>, json: bool) -> bool {
    meta.is_span() || JSON.load(Ordering::Relaxed) == json
}

/// Puts `format` in force for the lines that follow (a reload). False when
/// [`init`] did not install the subscriber (a daemon inside a test process).
pub(crate) fn set_format(format: LogFormat) -> bool {
    if !INSTALLED.load(Ordering::Relaxed) {
        return false;
    }
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    true
}

/// The text format: for the journal (priority prefix, no timestamp, no colours)
/// or a terminal.
fn text_layer<W>(writer: W, journal: bool) -> Box<dyn Layer<Filtered> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if journal {
        layer
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .boxed()
    } else {
        layer.fmt_fields(escaped_fields()).boxed()
    }
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
    fn a_switch_to_json_writes_the_next_lines_as_json_even_inside_an_older_span() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(EnvFilter::new("info"), move || writer.clone(), false);
        JSON.store(false, Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", path = "/v1/status");
            let _in = span.enter();
            tracing::info!("as text");
            JSON.store(true, Ordering::Relaxed);
            tracing::info!(keys = 2, "as json");
            JSON.store(false, Ordering::Relaxed);
            tracing::info!("as text again");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("as text") && !lines[0].starts_with('{'),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(lines[1]).expect("a JSON line");
        assert_eq!(json["message"], "as json");
        assert_eq!(json["keys"], 2);
        assert_eq!(json["span"]["path"], "/v1/status");
        assert!(
            lines[2].contains("as text again") && !lines[2].starts_with('{'),
            "{text}"
        );
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
