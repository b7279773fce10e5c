//! The settlement worker Lambda: consumes the settlement SQS FIFO queue (one message group per
//! signer lane) with partial batch failures, and is the only function that may call `kms:Sign`.
//! Glue only; the work is in `facilitator::worker`.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use facilitator::{telemetry, worker::Worker, Config};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let config = Config::from_env()?;
    let worker = Worker::from_config(&config, &facilitator::aws_config().await);
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<SqsBatchResponse, Error>(worker.handle_invocation(event.payload, deadline).await)
    }))
    .await
}
