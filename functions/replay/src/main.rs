//! The replay Lambda: run by an EventBridge schedule, it finishes or repairs every payment that is
//! not terminal (DESIGN I6). Glue only; the work is in `facilitator::replay`.
//!
//! The scheduled event carries nothing replay needs, so it is taken as any JSON. The answer is the
//! run's summary (counts per action), also logged as one JSON line.

use std::time::{Duration, Instant};

use facilitator::{clock::now_ms, metrics, replay::Replayer, telemetry, Config};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let config = Config::from_env()?;
    let replayer = Replayer::from_config(&config, &facilitator::aws_config().await)?;
    let replayer = &replayer;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // The invocation's own deadline bounds the run, so it stops cleanly with `more: true`
        // instead of being cut off mid-record. A deadline already past is no deadline at all (an
        // emulator that does not set one): the record bound still holds.
        let now = now_ms();
        let deadline = (event.context.deadline > now)
            .then(|| Instant::now() + Duration::from_millis(event.context.deadline - now));
        let summary = replayer.run(deadline).await?;
        metrics::replay_run(&summary);
        Ok::<Value, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
