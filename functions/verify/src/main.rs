//! The verify Lambda: `POST /verify` behind the HTTP API. Glue only; the work is in `facilitator`.

use facilitator::{
    auth,
    http::{self, PaymentRoute},
    telemetry, Config, Facilitator,
};
use lambda_http::{request::RequestContext, run, service_fn, Error, Request, RequestExt};

// One thread: Lambda hands an instance one request at a time, and each waits on the chain far
// longer than it computes, so a second scheduler thread only adds hand-offs (a futex wake and a
// context switch each) to every request's CPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let config = Config::from_env()?;
    let aws = facilitator::aws_config().await;
    let facilitator = Facilitator::new(&config, &aws);
    let limiter = http::key_limiter(&config, &aws, |var| std::env::var(var).ok());
    let (facilitator, limiter) = (&facilitator, limiter.as_ref());
    run(service_fn(move |request: Request| async move {
        let caller = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(auth::caller_from_authorizer),
            _ => None,
        };
        if let Some(refusal) =
            http::over_limit(limiter, caller.as_ref(), PaymentRoute::Verify).await
        {
            return Ok(refusal);
        }
        Ok::<_, Error>(http::verify(facilitator, request.body(), config.max_body_bytes).await)
    }))
    .await
}
