//! Logging: JSON lines on stdout, which Lambda ships to CloudWatch as they are.
//! `RUST_LOG` sets the filter (default `info`).
//!
//! Every line carries the request it belongs to: lambda_runtime wraps each invocation in a span
//! with the Lambda `requestId` (and the X-Ray trace id when tracing is on), the local server wraps
//! each request in one with its own `requestId`, and the span list is printed with every event
//! (`spans[0].requestId` in Logs Insights). Metrics are separate lines in the same stream
//! (CloudWatch Embedded Metric Format, [`crate::metrics`]).

use tracing_subscriber::{filter::LevelFilter, fmt, EnvFilter};

/// alloy's HTTP transport opens an INFO span (`request`, with the JSON-RPC method names) around
/// every RPC request, inside our own span for the same call (`Chain::call` and its siblings). At
/// `info` nothing inside it is ever printed (its events are debug and trace), so it would only
/// cost a span per call: a few microseconds of a verify's CPU. It stays on whenever the filter
/// asks for more than `info` anywhere, or names this target.
const ALLOY_HTTP: &str = "alloy_transport_http";

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
    let filter = filter(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref());
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .try_init();
}

/// The filter `RUST_LOG` gives (`info` when unset or unusable), with alloy's per-request span
/// switched off when nothing asks for more than `info` ([`ALLOY_HTTP`]).
fn filter(given: Option<&str>) -> EnvFilter {
    let filter = given
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let names_alloy = given.is_some_and(|directives| directives.contains(ALLOY_HTTP));
    match filter.max_level_hint() {
        Some(level) if level <= LevelFilter::INFO && !names_alloy => {
            match format!("{ALLOY_HTTP}=warn").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            }
        }
        _ => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloys_request_span_is_off_only_when_nothing_asks_for_more_than_info() {
        let quiet = format!("{ALLOY_HTTP}=warn");
        assert!(filter(None).to_string().contains(&quiet));
        assert!(filter(Some("info")).to_string().contains(&quiet));
        assert!(filter(Some("warn,facilitator=info"))
            .to_string()
            .contains(&quiet));
        assert!(filter(Some("facilitator=loud"))
            .to_string()
            .contains(&quiet));
        assert!(!filter(Some("info,facilitator=debug"))
            .to_string()
            .contains(&quiet));
        assert!(!filter(Some("debug")).to_string().contains(&quiet));
        let named = filter(Some("info,alloy_transport_http=info")).to_string();
        assert!(!named.contains(&quiet), "{named}");
    }
}
