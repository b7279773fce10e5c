//! Logging: JSON lines on stdout, which Lambda ships to CloudWatch as they are.
//! `RUST_LOG` sets the filter (default `info`).
//!
//! Every line carries the request it belongs to: lambda_runtime wraps each invocation in a span
//! with the Lambda `requestId` (and the X-Ray trace id when tracing is on), the local server wraps
//! each request in one with its own `requestId`, and the span list is printed with every event
//! (`spans[0].requestId` in Logs Insights). Metrics are separate lines in the same stream
//! (CloudWatch Embedded Metric Format, [`crate::metrics`]).

use tracing_subscriber::{fmt, EnvFilter};

/// What a function does when Lambda stops its instance (SIGTERM, through `lambda_runtime`'s
/// graceful-shutdown hook): says so, and flushes stdout. Every line is already written as it
/// happens (stdout is line-buffered and each log line and metric is one line), so the flush is
/// insurance for a line cut short, not a buffer being saved.
pub async fn on_shutdown() {
    use std::io::Write;
    tracing::info!("instance shutting down");
    let _ = std::io::stdout().flush();
}

/// Installs the global subscriber. Safe to call twice (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .try_init();
}
