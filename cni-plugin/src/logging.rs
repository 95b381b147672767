//! Logging for one plugin run: to stderr and, when `log_file_path` is set, appended to that
//! file. Never to stdout, which carries only the CNI result or error.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::spec::LogLevel;

/// Installs the global subscriber. Safe to call more than once (later calls are ignored),
/// which keeps library callers and tests from tripping over each other.
pub fn init(level: LogLevel, file: Option<&Path>) {
    let max = match level {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    };
    let mut file_error = None;
    let writer = match file.map(|p| OpenOptions::new().create(true).append(true).open(p)) {
        Some(Ok(f)) => BoxMakeWriter::new(std::io::stderr.and(Arc::new(f))),
        Some(Err(e)) => {
            file_error = Some(e);
            BoxMakeWriter::new(std::io::stderr)
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // tabby's own crates at the chosen level; the gRPC and HTTP/2 stack underneath only
    // when it warns, or a debug log would be mostly frames.
    let filter = Targets::new()
        .with_target("cni_plugin", max)
        .with_target("tabby", max)
        .with_target("tabby_ipam", max)
        .with_target("ipam", max)
        .with_target("datastore", max)
        .with_default(Level::WARN.min(max));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer)
        .with_filter(filter);
    let installed = tracing_subscriber::registry().with(layer).try_init().is_ok();
    if let (true, Some(e), Some(path)) = (installed, file_error, file) {
        tracing::warn!(path = %path.display(), error = %e, "cannot open log file; logging to stderr only");
    }
}
