//! The process's log subscriber: text or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`, with symphonia at `warn`). JSON lines carry the current span's fields
//! (`rpc`, `request_id`, `items`).

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How the server writes its logs (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, span fields inline.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (request_id, rpc, ...).
    Json,
}

/// Installs the global subscriber; a second call (or one after another subscriber) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        // symphonia logs every Ogg stream it opens at info.
        .unwrap_or_else(|_| EnvFilter::new("info,symphonia=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
