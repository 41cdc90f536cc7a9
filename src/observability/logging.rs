//! Structured logs: text for people, JSON for log collectors; level from `RUST_LOG` (default
//! `info`). Logs go to stderr so stdout stays free for command output.
//!
//! Field names shared by every module so a log search works across them: [`KATACONFIG_FIELD`]
//! for the KataConfig name and [`NODE_FIELD`] for a node name.

use std::io::IsTerminal;

use anyhow::anyhow;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

pub const KATACONFIG_FIELD: &str = "kataconfig";
pub const NODE_FIELD: &str = "node";
/// Filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_FILTER: &str = "info";

/// A span carrying the KataConfig name; events inside it (reconcile steps, per-node work with a
/// `node` field) are attributed to it in both formats.
pub fn kataconfig_span(name: &str) -> tracing::Span {
    tracing::info_span!("kataconfig", kataconfig = %name)
}

/// The filter for a `RUST_LOG` value; unset or empty means [`DEFAULT_FILTER`].
pub fn env_filter(rust_log: Option<&str>) -> anyhow::Result<EnvFilter> {
    let directives = match rust_log.map(str::trim) {
        None | Some("") => DEFAULT_FILTER,
        Some(value) => value,
    };
    EnvFilter::builder().parse(directives).map_err(|e| {
        anyhow!(
            "RUST_LOG={directives:?} is not a valid log filter ({e}); use a level such as \
             RUST_LOG=info or per-target directives such as \
             RUST_LOG=info,sandboxed_containers_operator=debug"
        )
    })
}

/// The subscriber for `format`, writing to `writer` (stderr in production, a buffer in tests).
pub fn dispatch<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => tracing::Dispatch::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => tracing::Dispatch::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Installs the process-wide subscriber (and the `log` bridge for crates using `log`).
/// Fails on an invalid `RUST_LOG` or when called twice.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref())?;
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let dispatch = dispatch(format, filter, std::io::stderr, ansi);
    use tracing_subscriber::util::SubscriberInitExt;
    dispatch
        .try_init()
        .map_err(|e| anyhow!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8")
        }
    }

    fn capture(format: LogFormat, rust_log: Option<&str>) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let filter = env_filter(rust_log).expect("filter");
        let dispatch = dispatch(format, filter, move || writer.clone(), false);
        tracing::dispatcher::with_default(&dispatch, || {
            let span = kataconfig_span("example-kataconfig");
            let _entered = span.enter();
            tracing::info!(node = "worker-0", "node labelled");
            tracing::debug!(node = "worker-1", "debug detail");
        });
        buffer.text()
    }

    #[test]
    fn json_logs_carry_kataconfig_and_node_fields() {
        let out = capture(LogFormat::Json, None);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "debug is filtered out at the default level: {out}"
        );
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "node labelled");
        assert_eq!(line[NODE_FIELD], "worker-0");
        assert_eq!(line["span"][KATACONFIG_FIELD], "example-kataconfig");
        assert_eq!(line["spans"][0][KATACONFIG_FIELD], "example-kataconfig");
    }

    #[test]
    fn text_logs_carry_kataconfig_and_node_fields() {
        let out = capture(LogFormat::Text, Some("debug"));
        assert!(
            out.contains("kataconfig{kataconfig=example-kataconfig}"),
            "{out}"
        );
        assert!(out.contains("node labelled node=\"worker-0\""), "{out}");
        assert!(
            out.contains("debug detail node=\"worker-1\""),
            "RUST_LOG=debug: {out}"
        );
    }

    #[test]
    fn rust_log_sets_the_level() {
        assert_eq!(capture(LogFormat::Text, Some("warn")), "");
        assert!(capture(LogFormat::Text, Some("")).contains("node labelled"));
    }

    #[test]
    fn invalid_rust_log_is_explained() {
        let err = env_filter(Some("info,foo=loud")).expect_err("invalid level");
        let message = err.to_string();
        assert!(
            message.starts_with("RUST_LOG=\"info,foo=loud\" is not a valid log filter ("),
            "{message}"
        );
        assert!(
            message.contains("use a level such as RUST_LOG=info"),
            "{message}"
        );
    }
}
