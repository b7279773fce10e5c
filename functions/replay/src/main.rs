//! The replay Lambda: run by an EventBridge schedule, it finishes or repairs every payment that is
//! not terminal (DESIGN I6). Glue only; the work is in `facilitator::replay`.
//!
//! The scheduled event carries nothing replay needs, so it is taken as any JSON. The answer is the
//! run's summary (counts per action), also logged as one JSON line.

use facilitator::{metrics, replay::Replayer, telemetry, Config};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let replayer = Replayer::from_config(&config, &facilitator::aws_config().await)?;
    let replayer = &replayer;
    run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let summary = replayer.run().await?;
        metrics::replay_run(&summary);
        Ok::<Value, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
