//! The settle Lambda: `POST /settle` behind the HTTP API. Records and queues payments and follows
//! them to an answer; it never signs (no `kms:Sign`). Glue only; the work is in `facilitator`.

use facilitator::{http, settle::Settler, telemetry, Config};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let settler = Settler::from_config(&config, &facilitator::aws_config().await)?;
    let settler = &settler;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(http::settle(settler, request.body(), config.max_body_bytes).await)
    }))
    .await
}
