//! Log capture for a test binary: one global subscriber writing into one buffer, so a test can
//! assert on everything the operator logged (no secret material, no 403).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The captured output of every tracing event of this binary.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
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

impl LogBuffer {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Installs (once per binary) a global subscriber with `filter` (an `EnvFilter` directive) and
/// returns its buffer; later calls return the same buffer whatever their filter.
pub fn capture(filter: &str) -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        // Another subscriber may already be global (a test that set its own): keep it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
    .clone()
}
