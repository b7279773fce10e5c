//! Every function runs under cargo-lambda's runtime emulator with its sample event in `events/`
//! (the verify and supported samples are in lambda.rs, the replay schedule in replay.rs, the
//! authorizer's in auth.rs).

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn health_is_served_by_the_public_function() {
    let response = invoke("supported", "events/health.json");
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(body_of(&response), json!({"status": "ok"}));
}

#[test]
fn settle_lambda_pays_the_sample_payment() {
    // events/settle.json: payer #1, its own nonce, valid until 2100. The settle function queues it,
    // the SQS poller hands it to the settle-worker function, and settle answers once it is mined;
    // a second run on the same stack answers the same transaction.
    let response = invoke("settle", "events/settle.json");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body = body_of(&response);
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["network"], NETWORK);
    assert_eq!(body["transaction"].as_str().unwrap().len(), 66, "{body}");
}

#[test]
fn settle_worker_lambda_takes_the_sample_batch() {
    // The sample message names a payment with no record: nothing to do, and nothing to retry.
    let response = invoke("settle-worker", "events/settle-worker-sqs.json");
    assert_eq!(response, json!({"batchItemFailures": []}));
}
