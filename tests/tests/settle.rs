//! `POST /settle` end to end on the local stack: the settle handler records and queues, the local
//! SQS event source mapping feeds the settle-worker Lambda, which signs through KMS (moto) and
//! broadcasts to anvil. Tests here run one at a time: they compare balances and lane nonces.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use alloy::primitives::{Address, U256};
use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lane_addresses() -> HashSet<Address> {
    stack().lanes.iter().map(|l| l.address).collect()
}

/// The sender of a mined transaction, and its receipt status.
async fn mined_by(hash: &str) -> (Address, String) {
    let tx = rpc("eth_getTransactionByHash", json!([hash])).await;
    let receipt = rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert!(!receipt.is_null(), "{hash} is not mined");
    (
        tx["from"].as_str().unwrap().parse().unwrap(),
        receipt["status"].as_str().unwrap().to_owned(),
    )
}

async fn chain_nonce(address: Address) -> u64 {
    let n = rpc("eth_getTransactionCount", json!([address, "pending"])).await;
    u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Each lane's next nonce as the lanes table has it (0 for a lane never used).
async fn table_nonces() -> Vec<u64> {
    let client = dynamodb().await;
    let mut nonces = Vec::new();
    for lane in &stack().lanes {
        let item = client
            .get_item()
            .table_name(&stack().lanes_table)
            .key("lane", AttributeValue::S(lane.key_id.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item;
        nonces.push(
            item.and_then(|i| {
                i.get("next_nonce")
                    .and_then(|n| n.as_n().ok())
                    .map(|n| n.parse().unwrap())
            })
            .unwrap_or(0),
        );
    }
    nonces
}

async fn chain_nonces() -> Vec<u64> {
    let mut nonces = Vec::new();
    for lane in &stack().lanes {
        nonces.push(chain_nonce(lane.address).await);
    }
    nonces
}

/// Settles, and when the answer is `settlement_pending` asks again, as the resource servers do.
async fn settle_to_the_end(body: &Value) -> Value {
    for _ in 0..5 {
        let answer = settle(body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        if answer.json["errorReason"] != "settlement_pending" {
            return answer.json;
        }
    }
    panic!("still pending after five tries: {body}");
}

#[tokio::test]
async fn a_verified_payment_settles_from_a_kms_lane() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let payment = PaymentBuilder::new(0).sign();
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    let before = (
        token_balance(s.token, payment.from).await,
        token_balance(s.token, s.payee.address).await,
    );

    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["network"], NETWORK);
    assert!(answer["payer"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&payment.from.to_string()));
    let hash = answer["transaction"].as_str().unwrap();
    let (sender, status) = mined_by(hash).await;
    assert_eq!(status, "0x1");
    assert!(
        lane_addresses().contains(&sender),
        "sent by {sender}, not by a KMS lane"
    );

    let amount = U256::from(1_000_000u64);
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before.0 - amount
    );
    assert_eq!(
        token_balance(s.token, s.payee.address).await,
        before.1 + amount
    );

    // Settling again reports the same transfer; nothing moves.
    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        (again["success"].clone(), again["transaction"].clone()),
        (json!(true), json!(hash))
    );
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before.0 - amount
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_payment_settled_twenty_times_at_once_pays_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let payment = PaymentBuilder::new(1).sign();
    let before = token_balance(s.token, payment.from).await;
    let answers = settle_all_at_once(vec![payment.body(); 20]).await;
    let hashes: HashSet<String> = answers
        .iter()
        .map(|a| a["transaction"].as_str().unwrap().to_owned())
        .collect();
    assert!(answers.iter().all(|a| a["success"] == true), "{answers:?}");
    assert_eq!(
        hashes.len(),
        1,
        "every caller names the one transfer: {hashes:?}"
    );
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before - U256::from(1_000_000u64),
        "paid exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_payments_across_the_lanes_all_settle_and_the_nonces_agree() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let payments: Vec<PaymentBuilder> =
        (0..50).map(|i| PaymentBuilder::new(i % 4).sign()).collect();
    let payee_before = token_balance(s.token, s.payee.address).await;
    let answers = settle_all_at_once(payments.iter().map(PaymentBuilder::body).collect()).await;
    let failures: Vec<&Value> = answers.iter().filter(|a| a["success"] != true).collect();
    assert!(
        failures.is_empty(),
        "{} of 50 failed: {failures:?}",
        failures.len()
    );
    let hashes: HashSet<&str> = answers
        .iter()
        .map(|a| a["transaction"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 50);
    let mut senders = HashSet::new();
    for hash in &hashes {
        let (sender, status) = mined_by(hash).await;
        assert_eq!(status, "0x1");
        senders.insert(sender);
    }
    assert_eq!(senders, lane_addresses(), "both lanes carried payments");
    assert_eq!(
        token_balance(s.token, s.payee.address).await,
        payee_before + U256::from(50_000_000u64)
    );
    assert_eq!(
        table_nonces().await,
        chain_nonces().await,
        "the lanes table agrees with the chain"
    );
}

#[tokio::test]
async fn refused_settlements_send_nothing_and_take_no_nonce() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let t = now();
    let used = PaymentBuilder::new(3).sign();
    send_from_anvil_account(s.deployer.address, s.token, used.transfer_calldata()).await;
    let cases = [
        (
            "expired",
            PaymentBuilder::new(2)
                .edit(|p| p.valid_before = t - 5)
                .sign(),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        (
            "nonce used on chain by someone else",
            used,
            "invalid_exact_evm_nonce_already_used",
        ),
        (
            "insufficient balance",
            PaymentBuilder::with_signer(alloy::signers::local::PrivateKeySigner::random()).sign(),
            "invalid_exact_evm_insufficient_balance",
        ),
        (
            "fails verification",
            PaymentBuilder::new(2)
                .edit(|p| p.to = s.payers[0].address)
                .sign(),
            "invalid_exact_evm_recipient_mismatch",
        ),
    ];
    let block = block_number().await;
    let (tables, chain) = (table_nonces().await, chain_nonces().await);
    for (name, payment, reason) in cases {
        let answer = settle(&payment.body()).await;
        assert_eq!(answer.status, 200, "{name}: {:?}", answer.json);
        assert_eq!(answer.json["success"], false, "{name}: {:?}", answer.json);
        assert_eq!(
            answer.json["errorReason"], reason,
            "{name}: {:?}",
            answer.json
        );
        assert_eq!(
            answer.json["transaction"], "",
            "{name}: nothing was broadcast"
        );
    }
    // An unusable body: 400 in settle's own shape, which the official clients read as a typed error.
    let malformed = post_raw(
        &format!("{}/settle", base_url()),
        b"{\"x402Version\":2,".to_vec(),
    )
    .await;
    assert_eq!(malformed.status, 400, "{:?}", malformed.json);
    assert_eq!(
        (
            malformed.json["success"].clone(),
            malformed.json["errorReason"].clone(),
            malformed.json["transaction"].clone()
        ),
        (json!(false), json!("invalid_payload"), json!(""))
    );
    assert_eq!(block_number().await, block, "no transaction was sent");
    assert_eq!(
        (table_nonces().await, chain_nonces().await),
        (tables, chain),
        "no lane nonce was consumed"
    );
}

/// Settles every body at once, each on its own task; answers in the order given.
async fn settle_all_at_once(bodies: Vec<Value>) -> Vec<Value> {
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| tokio::spawn(async move { settle_to_the_end(&body).await }))
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}
