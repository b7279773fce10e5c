//! API keys in front of `/verify` and `/settle` (docs/security.md): the Lambda authorizer under
//! cargo-lambda's emulator with its sample events, and a local server started with
//! `X402_API_KEYS_TABLE`, which runs the same check as the authorizer and answers as API Gateway
//! does (401 without a key, 403 with one it refuses). Keys are created in the local stack's
//! `x402-api-keys` table (moto) the way infra/deploy/api-keys.py creates them: SHA-256 only.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use facilitator::auth::{key_hash, DEFAULT_TABLE};
use serde_json::{json, Value};

/// The key in events/authorizer-valid-key.json (public: it is in the repository).
const SAMPLE_KEY: &str = "x402_local-stack-sample-key-never-use-in-aws-0000";

/// Stores a key's hash as infra/deploy/api-keys.py does.
async fn store_key(key: &str, name: &str, enabled: bool) {
    dynamodb()
        .await
        .put_item()
        .table_name(DEFAULT_TABLE)
        .item("key_hash", AttributeValue::S(key_hash(key)))
        .item("name", AttributeValue::S(name.to_owned()))
        .item("enabled", AttributeValue::Bool(enabled))
        .item("created_at", AttributeValue::N(now().to_string()))
        .send()
        .await
        .unwrap();
}

/// A key no other test (or earlier run on the same stack) has made.
fn fresh_key() -> String {
    format!("x402_test-{}", random_nonce())
}

fn authorize(event: &str) -> Value {
    let answer = invoke("authorizer", event);
    assert!(answer["isAuthorized"].is_boolean(), "{answer}");
    answer
}

#[test]
fn authorizer_refuses_a_request_without_a_key() {
    assert_eq!(
        authorize("events/authorizer-no-key.json")["isAuthorized"],
        false
    );
}

#[test]
fn authorizer_refuses_a_key_it_never_issued() {
    assert_eq!(
        authorize("events/authorizer-wrong-key.json")["isAuthorized"],
        false
    );
}

#[tokio::test]
async fn authorizer_accepts_an_enabled_key_and_names_its_holder() {
    store_key(SAMPLE_KEY, "sample resource server", true).await;
    let answer = tokio::task::spawn_blocking(|| authorize("events/authorizer-valid-key.json"))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"isAuthorized": true, "context": {"keyName": "sample resource server"}})
    );
}

async fn post_with_key(url: &str, key: Option<&str>, body: &Value) -> Answer {
    let mut request = http()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    if let Some(key) = key {
        request = request.header("authorization", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    Answer { status, json }
}

#[tokio::test]
async fn local_server_with_keys_refuses_like_api_gateway_and_serves_a_valid_key() {
    let (_server, base) = start_local_server(&[("X402_API_KEYS_TABLE", DEFAULT_TABLE)]).await;
    let (good, revoked) = (fresh_key(), fresh_key());
    store_key(&good, "shop", true).await;
    store_key(&revoked, "old shop", false).await;
    let payment = PaymentBuilder::new(1).sign();
    let verify = format!("{base}/verify");

    let answer = post_with_key(&verify, None, &payment.body()).await;
    assert_eq!(
        (answer.status, answer.json),
        (401, json!({"message": "Unauthorized"}))
    );
    for refused in [
        format!("Bearer {}", fresh_key()),
        format!("Bearer {revoked}"),
        good.clone(),
        format!("Basic {good}"),
        "Bearer short".to_owned(),
        format!("Bearer {}", "k".repeat(5000)),
    ] {
        let answer = post_with_key(&verify, Some(&refused), &payment.body()).await;
        assert_eq!(
            (answer.status, answer.json),
            (403, json!({"message": "Forbidden"})),
            "{refused:.40}"
        );
        let answer =
            post_with_key(&format!("{base}/settle"), Some(&refused), &payment.body()).await;
        assert_eq!(answer.status, 403, "{refused:.40}");
    }

    let answer = post_with_key(&verify, Some(&format!("Bearer {good}")), &payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);

    // The public routes need no key.
    for path in ["/supported", "/health"] {
        let status = http()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn a_refused_settle_changes_nothing() {
    let (_server, base) = start_local_server(&[("X402_API_KEYS_TABLE", DEFAULT_TABLE)]).await;
    let payment = PaymentBuilder::new(3).sign();
    let answer = post_with_key(&format!("{base}/settle"), None, &payment.body()).await;
    assert_eq!(answer.status, 401);
    let record = find_payment_record(&payment.record_id()).await;
    assert!(record.is_none(), "a refused /settle recorded {record:?}");
}
