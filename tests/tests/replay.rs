//! Replay (DESIGN I6) on the local stack: a crash after the write-ahead, a transaction dropped from
//! the pool, an expired and a forgotten `queued` record are finished, each exactly once; a second
//! run changes nothing; and the replay function runs as a Lambda under cargo-lambda's emulator with
//! the scheduled event in `events/`.
//!
//! Records are put in DynamoDB the way `/settle` writes them (that is what a crash leaves behind);
//! the signing is the real worker's, fed from the real queue. The tests here run one at a time:
//! they stop anvil's mining, compare balances and scan the whole payments table.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use alloy::primitives::U256;
use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use facilitator::{
    queue::Queue,
    replay::{Replayer, Summary},
    store::{now_ms, Created, PaymentId, PaymentRecord, State, Store},
    Config,
};
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Item = HashMap<String, AttributeValue>;

fn config() -> Config {
    Config::from_env()
        .expect("the facilitator's configuration is in the environment (infra/test.sh)")
}

async fn aws() -> aws_config::SdkConfig {
    facilitator::aws_config().await
}

/// A replayer on the stack's configuration that leaves nothing to the live path (no grace period).
async fn replayer() -> Replayer {
    let mut config = config();
    config.replay_min_age = Duration::ZERO;
    Replayer::from_config(&config, &aws().await).unwrap()
}

async fn replay() -> Summary {
    replayer()
        .await
        .run()
        .await
        .expect("replay reads its index")
}

async fn store() -> Store {
    facilitator::settle::store_from(&config(), &aws().await)
}

/// Records a signed payment as `/settle` would, `age_ms` old, on the first lane; not queued.
async fn record_payment(payment: &PaymentBuilder, age_ms: u64) -> String {
    let id = PaymentId::new(NETWORK, payment.asset, payment.from, payment.nonce).to_string();
    let at = now_ms() - age_ms;
    let record = PaymentRecord {
        id: id.clone(),
        state: State::Queued,
        network: NETWORK.to_owned(),
        asset: format!("{:#x}", payment.asset),
        payer: format!("{:#x}", payment.from),
        pay_to: format!("{:#x}", payment.pay_to),
        value: payment.value.to_string(),
        valid_before: payment.valid_before,
        calldata: payment.transfer_calldata().to_string(),
        lane: config().lane_keys[0].clone(),
        lane_nonce: None,
        raw_tx: None,
        tx_hash: None,
        reason: None,
        message: None,
        created_at: at,
        updated_at: at,
        open_shard: Some("open".to_owned()),
        expires_at: payment.valid_before + 7 * 24 * 3600,
    };
    assert_eq!(store().await.create(&record).await.unwrap(), Created::New);
    id
}

async fn item(id: &str) -> Item {
    payment_record(id).await
}

fn text(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// The whole payments table, by id.
async fn all_records() -> Vec<Item> {
    let client = dynamodb().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&stack().payments_table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    items.sort_by_key(|i| text(i, "id"));
    items
}

/// Waits until the record is in one of `states`.
async fn wait_for(id: &str, states: &[&str]) -> Item {
    for _ in 0..300 {
        let item = item(id).await;
        if states.contains(&text(&item, "state").as_str()) {
            return item;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} never reached {states:?}: {:?}", item(id).await);
}

async fn balances(payment: &PaymentBuilder) -> (U256, U256) {
    let s = stack();
    (
        token_balance(s.token, payment.from).await,
        token_balance(s.token, payment.pay_to).await,
    )
}

fn moved_once(before: (U256, U256), after: (U256, U256), value: U256) {
    assert_eq!(after, (before.0 - value, before.1 + value), "one transfer");
}

/// Stops anvil's automine; mining resumes (and whatever is pending is mined) however the test
/// ends, so later tests see a mining chain.
struct MiningStopped;

impl MiningStopped {
    async fn start() -> Self {
        rpc("evm_setAutomine", json!([false])).await;
        MiningStopped
    }
}

impl Drop for MiningStopped {
    fn drop(&mut self) {
        let url = stack().anvil_url.clone();
        // Drop cannot await, and the test's runtime may be unwinding: a thread with its own runtime
        // and client does it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = reqwest::Client::new();
                for (method, params) in
                    [("evm_setAutomine", json!([true])), ("evm_mine", json!([]))]
                {
                    let _ = client
                        .post(&url)
                        .json(&json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}))
                        .send()
                        .await;
                }
            });
        })
        .join();
    }
}

/// With mining stopped: records and queues a payment and lets the real worker sign and broadcast
/// it. Returns its id and transaction hash, the transaction sitting in anvil's pool.
async fn broadcast_unmined(payment: &PaymentBuilder) -> (String, String) {
    let id = record_payment(payment, 0).await;
    let queue = Queue::new(
        aws_sdk_sqs::Client::new(&aws().await),
        config().require_settle_queue().unwrap().to_owned(),
    );
    queue.enqueue(&id, &config().lane_keys[0]).await.unwrap();
    let submitted = wait_for(&id, &["submitted"]).await;
    let hash = text(&submitted, "tx_hash");
    assert!(
        !rpc("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "the worker's transaction is in the pool"
    );
    assert!(rpc("eth_getTransactionReceipt", json!([hash]))
        .await
        .is_null());
    (id, hash)
}

async fn drop_from_pool(hash: &str) {
    rpc("anvil_dropTransaction", json!([hash])).await;
    assert!(
        rpc("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "{hash} is gone from the pool"
    );
}

#[tokio::test]
async fn a_crash_after_the_write_ahead_is_finished_with_the_same_bytes_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let mining = MiningStopped::start().await;
    let (id, hash) = broadcast_unmined(&payment).await;

    // What a crash between the write-ahead and the broadcast leaves: the record `signed` with its
    // bytes, the node knowing nothing of them.
    drop_from_pool(&hash).await;
    dynamodb()
        .await
        .update_item()
        .table_name(&stack().payments_table)
        .key("id", AttributeValue::S(id.clone()))
        .update_expression("SET #s = :signed")
        .condition_expression("#s = :submitted")
        .expression_attribute_names("#s", "state")
        .expression_attribute_values(":signed", AttributeValue::S("signed".into()))
        .expression_attribute_values(":submitted", AttributeValue::S("submitted".into()))
        .send()
        .await
        .unwrap();

    let first = replay().await;
    assert!(first.submitted >= 1, "{first:?}");
    let sent = item(&id).await;
    assert_eq!(text(&sent, "state"), "submitted");
    assert_eq!(text(&sent, "tx_hash"), hash, "the same transaction");
    assert!(
        !rpc("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "the stored bytes are back in the pool"
    );
    assert_eq!(balances(&payment).await, before, "not mined yet");

    rpc("evm_mine", json!([])).await;
    drop(mining);
    let second = replay().await;
    assert!(second.settled >= 1, "{second:?}");
    let settled = item(&id).await;
    assert_eq!(text(&settled, "state"), "settled");
    assert_eq!(text(&settled, "tx_hash"), hash);
    assert!(
        !settled.contains_key("open_shard"),
        "it left replay's index"
    );
    moved_once(before, balances(&payment).await, payment.value);

    let third = replay().await;
    assert_eq!(item(&id).await, settled, "{third:?}");
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test]
async fn a_transaction_dropped_from_the_pool_is_sent_again_and_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(1).sign();
    let before = balances(&payment).await;
    let mining = MiningStopped::start().await;
    let (id, hash) = broadcast_unmined(&payment).await;

    // Still in the pool: replay waits for it and changes nothing.
    let waiting = item(&id).await;
    let first = replay().await;
    assert!(first.pending >= 1, "{first:?}");
    assert_eq!(item(&id).await, waiting);

    drop_from_pool(&hash).await;
    let second = replay().await;
    assert!(second.rebroadcast >= 1, "{second:?}");
    assert_eq!(text(&item(&id).await, "state"), "submitted");
    assert!(
        !rpc("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "the same bytes (same hash) are back in the pool"
    );

    rpc("evm_mine", json!([])).await;
    drop(mining);
    let third = replay().await;
    assert!(third.settled >= 1, "{third:?}");
    let settled = item(&id).await;
    assert_eq!(
        (text(&settled, "state"), text(&settled, "tx_hash")),
        ("settled".to_owned(), hash)
    );
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test]
async fn a_queued_payment_past_valid_before_expires_without_a_transfer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(2)
        .edit(|p| p.valid_before = now() - 5)
        .sign();
    let id = record_payment(&payment, 120_000).await;
    let (before, block) = (balances(&payment).await, block_number().await);

    let summary = replay().await;
    assert!(summary.expired >= 1, "{summary:?}");
    let expired = item(&id).await;
    assert_eq!(text(&expired, "state"), "expired");
    assert_eq!(
        text(&expired, "reason"),
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    assert!(!expired.contains_key("open_shard"));
    assert!(!expired.contains_key("raw_tx"), "nothing was signed");
    assert_eq!(balances(&payment).await, before);
    assert_eq!(block_number().await, block, "nothing was broadcast");
}

#[tokio::test]
async fn a_forgotten_queued_payment_is_queued_again_and_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Recorded but never queued (the settle function died between the two): only replay knows.
    let payment = PaymentBuilder::new(3).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 120_000).await;

    let summary = replay().await;
    assert!(summary.requeued >= 1, "{summary:?}");
    // The worker signs and broadcasts it; anvil mines it at once; the next replay finishes it.
    wait_for(&id, &["submitted"]).await;
    let finished = replay().await;
    assert!(finished.settled >= 1, "{finished:?}");
    assert_eq!(text(&item(&id).await, "state"), "settled");
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test]
async fn replaying_twice_in_a_row_changes_nothing_the_second_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(2)
        .edit(|p| p.valid_before = now() - 5)
        .sign();
    let id = record_payment(&payment, 120_000).await;

    let first = replay().await;
    assert!(first.expired >= 1, "{first:?}");
    assert_eq!(text(&item(&id).await, "state"), "expired");
    let table = all_records().await;
    let block = block_number().await;

    let second = replay().await;
    assert_eq!(second, Summary::default(), "nothing left to do");
    assert_eq!(all_records().await, table, "no record changed");
    assert_eq!(block_number().await, block, "nothing was sent");
}

#[tokio::test]
async fn the_replay_lambda_runs_on_its_schedule_event() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Older than the function's default grace period (60 s), so the deployed configuration acts on it.
    let payment = PaymentBuilder::new(3)
        .edit(|p| p.valid_before = now() - 5)
        .sign();
    let id = record_payment(&payment, 120_000).await;

    let summary = tokio::task::spawn_blocking(|| invoke("replay", "events/replay-schedule.json"))
        .await
        .unwrap();
    assert!(summary["expired"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(text(&item(&id).await, "state"), "expired");
}
