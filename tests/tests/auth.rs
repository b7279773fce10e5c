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
        json!({"isAuthorized": true, "context": {
            "keyName": "sample resource server",
            "keyId": key_hash(SAMPLE_KEY),
        }})
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

/// Stores a key with its own rate limit, as `api-keys.py create --rate --burst` does.
async fn store_limited_key(key: &str, name: &str, per_second: u32, burst: u32) {
    store_key(key, name, true).await;
    dynamodb()
        .await
        .update_item()
        .table_name(DEFAULT_TABLE)
        .key("key_hash", AttributeValue::S(key_hash(key)))
        .update_expression("SET rate_per_second = :r, burst = :b")
        .expression_attribute_values(":r", AttributeValue::N(per_second.to_string()))
        .expression_attribute_values(":b", AttributeValue::N(burst.to_string()))
        .send()
        .await
        .unwrap();
}

/// Per-key limits (docs/security.md, "Limits per key"): of 20 requests at once from a key limited
/// to one a second, one is served for each second the burst took to arrive (and the first), the
/// rest get 429 with `Retry-After` in the route's refusal shape; 20 at once from a key on the
/// default limit (20 a second, bursts of 40) all go through. The bound is the algorithm's, however
/// slow the machine: a busy one only lets a few more through.
#[tokio::test]
async fn one_key_over_its_limit_gets_429_while_another_key_is_served() {
    let (_server, base) = start_local_server(&[("X402_API_KEYS_TABLE", DEFAULT_TABLE)]).await;
    let (slow, busy) = (fresh_key(), fresh_key());
    store_limited_key(&slow, "one a second", 1, 1).await;
    store_key(&busy, "default limit", true).await;
    let body = PaymentBuilder::new(1).sign().body();
    let verify = format!("{base}/verify");

    let burst = |key: String| {
        let (verify, body) = (verify.clone(), body.clone());
        async move {
            let requests = (0..20).map(|_| {
                let (verify, body, key) = (verify.clone(), body.clone(), key.clone());
                tokio::spawn(async move {
                    let response = http()
                        .post(&verify)
                        .header("authorization", format!("Bearer {key}"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let status = response.status().as_u16();
                    (status, retry_after, response.json::<Value>().await.unwrap())
                })
            });
            let mut answers = Vec::new();
            for request in requests.collect::<Vec<_>>() {
                answers.push(request.await.unwrap());
            }
            answers
        }
    };

    let started = std::time::Instant::now();
    let limited = burst(slow).await;
    let took = started.elapsed().as_secs() as usize;
    let refused: Vec<_> = limited
        .iter()
        .filter(|(status, ..)| *status == 429)
        .collect();
    let served = limited.iter().filter(|(status, ..)| *status == 200).count();
    println!(
        "key limited to 1/s: {served} served, {} refused with 429, in {took} s",
        refused.len()
    );
    assert_eq!(served + refused.len(), 20, "{limited:?}");
    assert!(
        (1..=2 + took).contains(&served),
        "{served} served in {took} s: {limited:?}"
    );
    let (_, retry_after, body) = refused[0];
    let retry_after: u64 = retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(body["isValid"], false);
    assert_eq!(body["invalidReason"], "unexpected_verify_error");
    let message = body["invalidMessage"].as_str().unwrap();
    assert!(
        message.contains("over its limit of 1 requests a second"),
        "{message}"
    );

    let unlimited = burst(busy).await;
    assert!(
        unlimited.iter().all(|(status, ..)| *status == 200),
        "the other key is not limited by the first one's budget: {unlimited:?}"
    );
}
