//! What the replay and fault tests share: payment records written as `/settle` writes them, the
//! replay function in this process, balance checks, a payment broadcast but held unmined, and what
//! a crash then replay must leave of a Permit2 payment.

use std::time::Duration;

use alloy::primitives::{B256, U256};
use facilitator::{
    clock::now_ms,
    queue::Queue,
    replay::{Replayer, Summary},
    store::{Created, NewPayment, PaymentId, PaymentRecord, State},
};
use serde_json::{json, Value};

use super::*;

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

/// Records a signed payment as `/settle` would, `age_ms` old, on the first lane; not queued.
pub async fn record_payment(payment: &PaymentBuilder, age_ms: u64) -> String {
    let body = serde_json::to_vec(&payment.body()).unwrap();
    let request = facilitator::protocol::parse_request(&body).unwrap();
    let facilitator = facilitator::Facilitator::new(&config(), &aws().await);
    let scheme = facilitator.route(&request).unwrap();
    let checked = scheme.check_terms(&request).unwrap();
    let id = PaymentId::new(NETWORK, payment.asset, payment.from, payment.nonce);
    // As /settle builds it: an ERC-6492 wallet's payment from an allowed factory goes through
    // Multicall3, any other to the token.
    let calldata = checked.settle_calldata();
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
        target: checked.settle_target(),
        digest: checked.digest(NETWORK),
        lane: &lane,
    };
    let record = PaymentRecord::queued(&new, now_ms() - age_ms);
    assert_eq!(store().await.create(&record).await.unwrap(), Created::New);
    id.to_string()
}

/// Records a signed Permit2 payment as `/settle` would, not queued: an `exact` one on the first
/// lane, an `upto` one (charged `payment.charge`) on the lane its witness names.
pub async fn record_permit2_payment(payment: &Permit2Builder) -> String {
    let body = serde_json::to_vec(&payment.body()).unwrap();
    let request = facilitator::protocol::parse_request(&body).unwrap();
    let facilitator = facilitator::Facilitator::new(&config(), &aws().await);
    let scheme = facilitator.route(&request).unwrap();
    let checked = scheme.check_permit2_terms(&request).unwrap();
    let id = payment.payment_id();
    let calldata = checked.settle_calldata();
    let lane = match payment.facilitator {
        None => config().lane_keys[0].clone(),
        Some(named) => stack()
            .lanes
            .iter()
            .find(|l| l.address == named)
            .expect("the witness names a lane")
            .key_id
            .clone(),
    };
    let new = NewPayment {
        id: &id,
        network: NETWORK,
        asset: payment.asset,
        payer: payment.from,
        pay_to: payment.pay_to,
        value: checked.transfer().value,
        valid_before: payment.deadline,
        calldata: &calldata,
        target: Some(checked.payment.proxy()),
        digest: checked.digest(NETWORK),
        lane: &lane,
    };
    let record = PaymentRecord::queued(&new, now_ms());
    assert_eq!(store().await.create(&record).await.unwrap(), Created::New);
    id.to_string()
}

/// Runs a worker in this process that stops after `step` as if its process died there.
pub async fn crash_worker_after(step: facilitator::worker::Step, id: &str) {
    let message = facilitator::queue::SettlementMessage {
        id: id.to_owned(),
        replace: None,
        created: None,
        simulated: None,
    };
    let outcome = facilitator::worker::Worker::from_config(&config(), &aws().await)
        .stop_after(step)
        .process(&message)
        .await;
    assert!(
        outcome.is_err(),
        "the worker stopped after {step:?}: {outcome:?}"
    );
}

/// What a crash then replay must leave of a recorded Permit2 payment (`exact` or `upto`): runs
/// replay until record `id` is final (at most 20 runs, half a second apart), then asserts it
/// settled, `value` moved once from `payment`'s payer, and `/settle` answers from the record with
/// the same transaction, moving nothing again. Returns the transaction's hash and that answer, for
/// the checks that differ by scheme (the proxy and lane, an `upto` payment's charge).
pub async fn replay_until_settled_once(
    id: &str,
    payment: &Permit2Builder,
    before: (U256, U256),
    value: U256,
) -> (String, Value) {
    let mut record = payment_record(id).await;
    for _ in 0..20 {
        replay().await;
        record = payment_record(id).await;
        if record.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(record.state, State::Settled, "{record:?}");
    let hash = format!("{:#x}", record.tx_hash.unwrap());
    moved_once(before, permit_balances(payment).await, value);
    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        outcome(&answer),
        (json!(true), Value::Null, json!(hash)),
        "{answer}"
    );
    moved_once(before, permit_balances(payment).await, value);
    (hash, answer)
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

/// With mining stopped: records and queues a payment and lets the real worker sign and broadcast
/// it. Returns its id and transaction hash, the transaction sitting in anvil's pool.
pub async fn broadcast_unmined(payment: &PaymentBuilder) -> (String, B256) {
    let id = record_payment(payment, 0).await;
    let queue = Queue::new(
        aws_sdk_sqs::Client::new(&aws().await),
        config().require_settle_queue().unwrap().to_owned(),
    );
    queue.enqueue(&id, &config().lane_keys[0]).await.unwrap();
    let sent = wait_sent(&id).await;
    assert_eq!(
        sent.state,
        State::Signed,
        "the worker does not record its send"
    );
    let hash = sent.tx_hash.expect("a sent record names its transaction");
    assert!(receipt(hash).await.is_none());
    (id, hash)
}
