//! The x402 facilitator's shared library.
//!
//! - [`protocol`]: x402 wire types (v1 and v2) and request parsing.
//! - [`evm`]: the `exact` scheme on EVM chains (EIP-3009): checks, EIP-712, signatures, chain access.
//! - [`facilitator`]: routing a payment to its scheme; what `/supported` lists.
//! - [`config`]: the environment variables, read once at cold start.
//! - [`settle`]: `POST /settle`: record, sign here or queue, follow to an honest answer.
//! - [`worker`]: the settlement queue's consumer, and the only code that signs (`/settle` signs
//!   through it).
//! - [`replay`]: the scheduled reconciliation.
//! - [`lifecycle`]: the payment record's shared steps, used by the three above.
//! - [`store`] (DynamoDB) and [`queue`] (SQS).
//! - [`signer`]: the KMS signer lanes.
//! - [`http`]: HTTP requests in, HTTP responses out, shared by the Lambda functions and the local server.
//! - [`auth`]: API keys for `/verify` and `/settle` (the Lambda authorizer and the local server).
//! - [`metrics`]: CloudWatch Embedded Metric Format lines, one function per metric.
//! - [`telemetry`]: JSON logs.
//! - [`clock`]: the time, from one place.
//!
//! Lambda entry points in `functions/` are glue around this crate.

pub mod auth;
pub mod clock;
pub mod config;
pub mod evm;
pub mod facilitator;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod protocol;
pub mod queue;
pub mod replay;
pub mod settle;
pub mod signer;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use config::Config;
pub use facilitator::Facilitator;

/// Loads the AWS SDK configuration the standard way (environment, then the Lambda role).
/// `AWS_ENDPOINT_URL` points every client at a local emulator, which is how the local stack works.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
