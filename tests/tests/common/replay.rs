//! What the replay and fault tests share: payment records written as `/settle` writes them, the
//! replay function in this process, and ways to hold the chain still.

use std::{collections::HashMap, time::Duration};

use alloy::primitives::U256;
use aws_sdk_dynamodb::types::AttributeValue;
use facilitator::{
    clock::now_ms,
    queue::Queue,
    replay::{Replayer, Summary},
    store::{Created, NewPayment, PaymentId, PaymentRecord, Store},
    Config,
};
use serde_json::json;

use super::*;

pub type Item = HashMap<String, AttributeValue>;

pub fn config() -> Config {
    Config::from_env()
        .expect("the facilitator's configuration is in the environment (infra/test.sh)")
}

pub async fn aws() -> aws_config::SdkConfig {
    facilitator::aws_config().await
}

/// A replayer on the stack's configuration that leaves nothing to the live path (no grace period).
pub async fn replayer() -> Replayer {
    let mut config = config();
    config.replay_min_age = Duration::ZERO;
    Replayer::from_config(&config, &aws().await).unwrap()
}

pub async fn replay() -> Summary {
    replayer()
        .await
        .run(None)
        .await
        .expect("replay reads its index")
}

/// A replay run that takes any transaction still in the pool for stuck (no wait before a bump).
pub async fn replay_impatiently() -> Summary {
    let mut config = config();
    config.replay_min_age = Duration::ZERO;
    config.replay_bump_after = Duration::ZERO;
    Replayer::from_config(&config, &aws().await)
        .unwrap()
        .run(None)
        .await
        .expect("replay reads its index")
}

pub async fn store() -> Store {
    facilitator::settle::store_from(&config(), &aws().await)
}

/// Records a signed payment as `/settle` would, `age_ms` old, on the first lane; not queued.
pub async fn record_payment(payment: &PaymentBuilder, age_ms: u64) -> String {
    let body = serde_json::to_vec(&payment.body()).unwrap();
    let request = facilitator::protocol::parse_request(&body).unwrap();
    let facilitator = facilitator::Facilitator::new(&config(), &aws().await);
    let scheme = facilitator.route(&request).unwrap();
    let checked = scheme.check_terms(&request).unwrap();
    let id = PaymentId::new(NETWORK, payment.asset, payment.from, payment.nonce);
    let calldata = checked.transfer_calldata();
    let lane = config().lane_keys[0].clone();
    let new = NewPayment {
        id: &id,
        network: NETWORK,
        asset: payment.asset,
        payer: payment.from,
        pay_to: payment.pay_to,
        value: payment.value,
        valid_before: payment.valid_before,
        calldata: &calldata,
        digest: checked.digest(NETWORK),
        lane: &lane,
    };
    let record = PaymentRecord::queued(&new, now_ms() - age_ms);
    assert_eq!(store().await.create(&record).await.unwrap(), Created::New);
    id.to_string()
}

pub async fn item(id: &str) -> Item {
    payment_record(id).await
}

pub fn text(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// The whole payments table, by id.
pub async fn all_records() -> Vec<Item> {
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
pub async fn wait_for(id: &str, states: &[&str]) -> Item {
    for _ in 0..300 {
        let item = item(id).await;
        if states.contains(&text(&item, "state").as_str()) {
            return item;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} never reached {states:?}: {:?}", item(id).await);
}

pub async fn balances(payment: &PaymentBuilder) -> (U256, U256) {
    let s = stack();
    (
        token_balance(s.token, payment.from).await,
        token_balance(s.token, payment.pay_to).await,
    )
}

pub fn moved_once(before: (U256, U256), after: (U256, U256), value: U256) {
    assert_eq!(after, (before.0 - value, before.1 + value), "one transfer");
}

/// Stops anvil's automine; mining resumes (and whatever is pending is mined) however the test
/// ends, so later tests see a mining chain.
pub struct MiningStopped;

impl MiningStopped {
    pub async fn start() -> Self {
        rpc("evm_setAutomine", json!([false])).await;
        MiningStopped
    }
}

impl Drop for MiningStopped {
    fn drop(&mut self) {
        let url = stack().anvil_url.clone();
        finish_detached(async move {
            let client = reqwest::Client::new();
            for (method, params) in [("evm_setAutomine", json!([true])), ("evm_mine", json!([]))] {
                let _ = client
                    .post(&url)
                    .json(&json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}))
                    .send()
                    .await;
            }
        });
    }
}

/// With mining stopped: records and queues a payment and lets the real worker sign and broadcast
/// it. Returns its id and transaction hash, the transaction sitting in anvil's pool.
pub async fn broadcast_unmined(payment: &PaymentBuilder) -> (String, String) {
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

pub async fn drop_from_pool(hash: &str) {
    rpc("anvil_dropTransaction", json!([hash])).await;
    assert!(
        rpc("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "{hash} is gone from the pool"
    );
}
