//! The verify Lambda: `POST /verify` behind the HTTP API. Glue only; the work is in `facilitator`.

use facilitator::{http, telemetry, Config, Facilitator};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let facilitator = Facilitator::new(&config, &facilitator::aws_config().await);
    let facilitator = &facilitator;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(http::verify(facilitator, request.body(), config.max_body_bytes).await)
    }))
    .await
}
