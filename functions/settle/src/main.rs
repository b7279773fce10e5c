//! The settle Lambda: `POST /settle` behind the HTTP API. Records payments, signs and sends one
//! itself when its lane is free (`X402_SETTLE_SIGNS`) or queues it, and follows it to an answer.
//! Glue only; the work is in `facilitator`.

use facilitator::{
    auth,
    http::{self, PaymentRoute},
    settle::Settler,
    telemetry, Config,
};
use lambda_http::{request::RequestContext, run, service_fn, Error, Request, RequestExt};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let config = Config::from_env()?;
    let aws = facilitator::aws_config().await;
    let settler = Settler::from_config(&config, &aws)?;
    let limiter = http::key_limiter(&config, &aws, |var| std::env::var(var).ok());
    let (settler, limiter) = (&settler, limiter.as_ref());
    run(service_fn(move |request: Request| async move {
        let caller = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(auth::caller_from_authorizer),
            _ => None,
        };
        if let Some(refusal) =
            http::over_limit(limiter, caller.as_ref(), PaymentRoute::Settle).await
        {
            return Ok(refusal);
        }
        Ok::<_, Error>(http::settle(settler, request.body(), config.max_body_bytes).await)
    }))
    .await
}
