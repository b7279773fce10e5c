//! The verify and supported functions as real Lambda functions, run by cargo-lambda's runtime
//! emulator (`cargo lambda watch`, started by infra/test.sh), invoked with the events in `events/`.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn verify_lambda_accepts_the_sample_event() {
    // events/verify.json carries a payment signed by viem (an independent EIP-712 implementation)
    // for the local stack's token, valid until 2100.
    let response = invoke("verify", "events/verify.json");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body = body_of(&response);
    assert_eq!(body["isValid"], true, "{body}");
    assert_eq!(
        body["payer"].as_str().unwrap().to_lowercase(),
        stack().payers[0].address.to_string().to_lowercase()
    );
}

#[test]
fn verify_lambda_refuses_a_bad_event_with_its_reason() {
    let response = invoke("verify", "events/verify-invalid.json");
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(
        body_of(&response)["invalidReason"],
        "invalid_exact_evm_recipient_mismatch"
    );
    let response = invoke("verify", "events/verify-malformed.json");
    assert_eq!(response["statusCode"], 400, "{response}");
}

#[test]
fn supported_lambda_lists_the_configured_kinds() {
    let response = invoke("supported", "events/supported.json");
    assert_eq!(response["statusCode"], 200, "{response}");
    let body = body_of(&response);
    assert_eq!(
        body["kinds"][0],
        json!({"x402Version":2,"scheme":"exact","network":"eip155:84532"})
    );
    assert_eq!(
        body["signers"]["eip155:*"].as_array().unwrap().len(),
        stack().lane_addresses.split(',').count()
    );
}

#[tokio::test]
async fn verify_lambda_over_its_function_url() {
    let payment = PaymentBuilder::new(1).sign();
    let url = format!("http://127.0.0.1:{}/lambda-url/verify/", lambda_port());
    let answer = post_raw(&url, serde_json::to_vec(&payment.body()).unwrap()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
}
