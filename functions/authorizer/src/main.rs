//! The authorizer Lambda: the HTTP API's Lambda authorizer for `POST /verify` and `POST /settle`
//! (payload format 2.0, simple responses). It accepts `Authorization: Bearer <key>` when the key's
//! SHA-256 is an enabled item of the API keys table. Glue only; the check is `facilitator::auth`.
//!
//! Needs only `X402_API_KEYS_TABLE` (default `x402-api-keys`): not the networks, not the lanes.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use facilitator::{auth, config, telemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    lambda_runtime::spawn_graceful_shutdown_handler(telemetry::on_shutdown).await;
    let table = config::api_keys_table(|var| std::env::var(var).ok())
        .unwrap_or_else(|| auth::DEFAULT_TABLE.to_owned());
    let aws = facilitator::aws_config().await;
    let keys = auth::ApiKeys::new(aws_sdk_dynamodb::Client::new(&aws), table);
    let keys = &keys;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
            // A table that cannot be read is an error (API Gateway answers 500), not a refusal:
            // an outage must not look like every client's key being wrong.
            Ok::<ApiGatewayV2CustomAuthorizerSimpleResponse, Error>(
                keys.authorize(&event.payload).await?,
            )
        },
    ))
    .await
}
