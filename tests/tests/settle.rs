//! `POST /settle` end to end on the local stack: the settle handler records and queues, the local
//! SQS event source mapping feeds the settle-worker Lambda, which signs through KMS (moto) and
//! broadcasts to anvil. Tests here run one at a time: they compare balances and lane nonces.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use alloy::{
    eips::BlockId,
    primitives::{Address, U256},
};
use common::*;
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lane_addresses() -> HashSet<Address> {
    stack().lanes.iter().map(|l| l.address).collect()
}

/// The sender of a mined transaction, and whether it succeeded (its receipt status).
async fn mined_by(hash: &str) -> (Address, bool) {
    let receipt = receipt(hash.parse().unwrap()).await;
    let receipt = receipt.unwrap_or_else(|| panic!("{hash} is not mined"));
    (receipt.from, receipt.status())
}

/// Each lane's next nonce as the lanes table has it (0 for a lane never used).
async fn table_nonces() -> Vec<u64> {
    let store = store().await;
    let mut nonces = Vec::new();
    for lane in &stack().lanes {
        let network = &config().networks[0].network;
        nonces.push(
            store
                .lane_next_nonce(&lane.key_id, network.caip2())
                .await
                .unwrap(),
        );
    }
    nonces
}

async fn chain_nonces() -> Vec<u64> {
    let mut nonces = Vec::new();
    for lane in &stack().lanes {
        nonces.push(chain_nonce(lane.address, BlockId::pending()).await);
    }
    nonces
}

/// Settles, and when the answer is `settlement_pending` asks again, as the resource servers do.
async fn settle_to_the_end(body: &Value) -> Value {
    settle_to_the_end_at(&base_url(), body).await
}

/// [`settle_to_the_end`] against the front end at `base`.
async fn settle_to_the_end_at(base: &str, body: &Value) -> Value {
    for _ in 0..5 {
        let answer = post_json(base, "/settle", body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        if answer.json["errorReason"] != "settlement_pending" {
            return answer.json;
        }
    }
    panic!(
        "still pending after five tries: {body}\n{}",
        why_pending(body).await
    );
}

/// What the stack says of a payment `/settle` keeps calling pending: its record (state, lane,
/// nonce, hash), whether the node has its transaction, and its lane's nonces on the chain and in
/// the table. So that a failure in CI says where the payment stopped, not only that it did.
async fn why_pending(body: &Value) -> String {
    let authorization = &body["paymentPayload"]["payload"]["authorization"];
    let field = |v: &Value| v.as_str().unwrap_or_default().to_ascii_lowercase();
    let id = format!(
        "{}#{}#{}#{}",
        field(&body["paymentRequirements"]["network"]),
        field(&body["paymentRequirements"]["asset"]),
        field(&authorization["from"]),
        field(&authorization["nonce"]),
    );
    let Some(record) = find_payment_record(&id).await else {
        return format!("no record {id}");
    };
    let mut said = format!(
        "record {id}: {:?} on lane {} at nonce {:?}, tx {:?}, replaced {:?}, updated_at {}",
        record.state,
        record.lane,
        record.lane_nonce,
        record.tx_hash,
        record.replaced,
        record.updated_at
    );
    if let Some(hash) = record.tx_hash {
        let known = transaction(hash).await.is_some();
        let mined = receipt(hash).await.is_some();
        said += &format!("; the node knows the tx: {known}, mined: {mined}");
    }
    if let Some(sender) = record.sender {
        said += &format!(
            "; the lane's chain nonce {} (pending {})",
            chain_nonce(sender, BlockId::latest()).await,
            chain_nonce(sender, BlockId::pending()).await
        );
    }
    said + &format!("; the table's nonces {:?}", table_nonces().await)
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
    let (sender, succeeded) = mined_by(hash).await;
    assert!(succeeded, "{hash} reverted");
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

    // Settling again is not a second success (DESIGN I2): the success was answered once. Nothing
    // moves, and nothing is named.
    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        (
            again["success"].clone(),
            again["errorReason"].clone(),
            again["transaction"].clone()
        ),
        (
            json!(false),
            json!("invalid_exact_evm_nonce_already_used"),
            json!("")
        ),
        "{again}"
    );
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before.0 - amount
    );
}

/// Twenty callers with the same payment at once, with every core kept busy (a race that shows
/// only under load is still a race): exactly one is told `success`, the nineteen others the
/// used-nonce failure with no transaction named, and one transfer happens. Through the local
/// server and through the Lambda functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_payment_settled_twenty_times_at_once_pays_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    for (front_end, base) in front_ends() {
        let payment = PaymentBuilder::new(1).sign();
        let before = token_balance(s.token, payment.from).await;
        let busy = BusyMachine::start();
        let answers = settle_all_at_once_at(&base, vec![payment.body(); 20]).await;
        drop(busy);
        let successes: Vec<&Value> = answers.iter().filter(|a| a["success"] == true).collect();
        assert_eq!(successes.len(), 1, "{front_end}: one success: {answers:?}");
        let hash = successes[0]["transaction"].as_str().unwrap();
        assert!(mined_by(hash).await.1, "{front_end}");
        for other in answers.iter().filter(|a| a["success"] != true) {
            assert_eq!(
                (other["errorReason"].clone(), other["transaction"].clone()),
                (json!("invalid_exact_evm_nonce_already_used"), json!("")),
                "{front_end}: {other}"
            );
        }
        assert_eq!(
            token_balance(s.token, payment.from).await,
            before - U256::from(1_000_000u64),
            "{front_end}: paid exactly once"
        );
    }
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
        let (sender, succeeded) = mined_by(hash).await;
        assert!(succeeded, "{hash} reverted");
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

/// A lanes table behind the chain (restored from a backup, or a lane key used elsewhere): the
/// worker signs at the table's nonce without asking the chain, so the node refuses the first
/// transaction as "nonce too low". The worker raises the table to the chain's count and signs
/// that payment again at once; it settles once, at the chain's nonce, and the lane goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_chain_nonce_moved_on_without_the_table_settles_at_the_chains_nonce() {
    use alloy::providers::ext::AnvilApi;
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let network = config().networks[0].network.caip2().to_owned();
    let store = store().await;
    let mut moved_to = std::collections::HashMap::new();
    for lane in &s.lanes {
        // The table holds a nonce for the lane (as after its first payment), and the chain then
        // moves 3 past it.
        let pending = chain_nonce(lane.address, BlockId::pending()).await;
        store
            .raise_lane_nonce(&lane.key_id, &network, pending)
            .await
            .unwrap();
        assert_eq!(
            store.lane_nonce(&lane.key_id, &network).await.unwrap(),
            Some(pending),
            "the table must not be ahead of a quiet chain"
        );
        anvil()
            .anvil_set_nonce(lane.address, pending + 3)
            .await
            .unwrap();
        moved_to.insert(lane.address, pending + 3);
    }

    // Payments until each lane has carried one (lanes are chosen by payment id).
    let mut first_on_lane = std::collections::HashMap::new();
    for i in 0..24 {
        let payment = PaymentBuilder::new(i % 4).sign();
        let answer = settle_to_the_end(&payment.body()).await;
        assert_eq!(answer["success"], true, "{answer}");
        let (sender, succeeded) = mined_by(answer["transaction"].as_str().unwrap()).await;
        assert!(succeeded);
        let record = payment_record(&payment.record_id()).await;
        first_on_lane.entry(sender).or_insert(record);
        if first_on_lane.len() == s.lanes.len() {
            break;
        }
    }
    assert_eq!(
        first_on_lane.len(),
        s.lanes.len(),
        "every lane carried a payment"
    );
    for (sender, record) in &first_on_lane {
        assert_eq!(
            record.lane_nonce,
            Some(moved_to[sender]),
            "{sender}'s first payment was signed again at the chain's nonce: {record:?}"
        );
        assert_eq!(
            record.replaced.len(),
            1,
            "the refused transaction is kept among those replaced: {record:?}"
        );
        println!(
            "lane {sender}: refused at the table's nonce, settled at the chain's ({}) by {:#x}",
            moved_to[sender],
            record.tx_hash.unwrap()
        );
    }
    assert_eq!(
        table_nonces().await,
        chain_nonces().await,
        "the lanes table agrees with the chain again"
    );
}

#[tokio::test]
async fn refused_settlements_send_nothing_and_take_no_nonce() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let t = now();
    // Somebody used this authorization nonce with another authorization (paying someone else): the
    // payment under it can never settle, and is not told the other one's outcome.
    let used = PaymentBuilder::new(3).sign();
    let other = used
        .clone()
        .edit(|p| {
            p.to = s.payers[0].address;
            p.pay_to = s.payers[0].address;
        })
        .sign();
    send_from_anvil_account(s.deployer.address, s.token, other.transfer_calldata()).await;
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
    settle_all_at_once_at(&base_url(), bodies).await
}

/// [`settle_all_at_once`] against the front end at `base`.
async fn settle_all_at_once_at(base: &str, bodies: Vec<Value>) -> Vec<Value> {
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let base = base.to_owned();
            tokio::spawn(async move { settle_to_the_end_at(&base, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}
