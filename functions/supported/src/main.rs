//! The supported Lambda: the HTTP API's public routes, `GET /supported` and `GET /health` (the
//! process is up; it asks nothing of the chain or KMS). Glue only; the work is in `facilitator`.

use facilitator::{http, telemetry, Config, Facilitator};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let config = Config::from_env()?;
    let facilitator = Facilitator::new(&config, &facilitator::aws_config().await);
    let facilitator = &facilitator;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(match request.uri().path() {
            "/health" => http::health(),
            _ => http::supported(facilitator).await,
        })
    }))
    .await
}
