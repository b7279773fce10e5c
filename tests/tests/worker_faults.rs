//! The worker under faults (issue 14): a fault that outlasts the worker's in-process retries must
//! cost its lane seconds, not the queue's visibility timeout, and a payment that can never be
//! signed must be given up with a reason while the lane's other payments settle.
//!
//! The first test runs the whole path: `/settle` on the local server, the queue, the SQS poller
//! and the settle-worker Lambda under cargo-lambda. Tests here run one at a time: they set the
//! RPC proxy's faults, which every process on the stack sees.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use alloy::{primitives::U256, providers::ext::AnvilApi};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{settle::lane_for, store::State, worker::Worker};
use serde_json::Value;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A signed payment from `payer` that `/settle` routes to `lane`.
fn payment_on_lane(payer: usize, lane: &str) -> PaymentBuilder {
    let lanes = config().lane_keys;
    loop {
        let payment = PaymentBuilder::new(payer).sign();
        if lane_for(&payment.payment_id(), &lanes) == lane {
            return payment;
        }
    }
}

fn succeeded(answer: &Value) -> bool {
    answer["success"] == Value::Bool(true)
}

#[tokio::test]
async fn an_rpc_outage_longer_than_the_workers_retries_costs_the_lane_seconds_not_minutes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lane = config().lane_keys[0].clone();
    let (first, second) = (payment_on_lane(2, &lane), payment_on_lane(3, &lane));

    // The worker's broadcast (eth_sendRawTransaction, its one chain call once /settle has
    // simulated) fails for 7 s: longer than its in-process retries (5 s), far shorter than the
    // local queue's visibility timeout (60 s). /settle's own simulation passes; a payment it signs
    // itself fails its send too (either way of sending), and goes to the worker.
    let fault = RpcFault::set(
        "error",
        &["eth_sendRawTransaction", "eth_sendRawTransactionSync"],
    )
    .await;
    let started = Instant::now();
    let lift = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(7)).await;
        drop(fault);
        Instant::now()
    });
    let bodies = (first.body(), second.body());
    let (a, b) = tokio::join!(settle(&bodies.0), settle(&bodies.1));
    let lifted = lift.await.unwrap();
    let answered = Instant::now();
    println!(
        "both payments on {lane} answered {:.1} s after the outage began, {:.1} s after it ended",
        (answered - started).as_secs_f64(),
        answered.saturating_duration_since(lifted).as_secs_f64()
    );
    // Held for the visibility timeout, both would be cancelled at the settle deadline (25 s).
    for (answer, payment) in [(&a, &first), (&b, &second)] {
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        assert!(
            succeeded(&answer.json),
            "{} {:?}",
            payment.record_id(),
            answer.json
        );
    }
}

/// The state, reason and message of a record as stored, attribute by attribute: for a record the
/// library cannot read (which is the point of the test that uses it).
async fn stored_outcome(id: &str) -> (String, String, String) {
    let item = payment_item(id)
        .await
        .unwrap_or_else(|| panic!("no record {id}"));
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    (text("state"), text("reason"), text("message"))
}

/// Gives the worker's attempts at a payment whose record it cannot read (its amount is not a
/// number): every attempt fails, whatever the worker retries.
async fn unreadable_payment(payer: usize) -> String {
    let id = record_payment(&PaymentBuilder::new(payer).sign(), 0).await;
    dynamodb()
        .await
        .update_item()
        .table_name(&stack().payments_table)
        .key("id", AttributeValue::S(id.clone()))
        .update_expression("SET #v = :garbage")
        .expression_attribute_names("#v", "value")
        .expression_attribute_values(":garbage", AttributeValue::S("not-a-number".into()))
        .send()
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_payment_that_fails_every_attempt_is_given_up_with_a_reason_while_its_lane_goes_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("poison", 10).await;
    let lane = config().lane_keys[0].clone();
    let poison = unreadable_payment(0).await;
    let good: Vec<PaymentBuilder> = (1..3)
        .map(|payer| PaymentBuilder::new(payer).sign())
        .collect();
    let before = [balances(&good[0]).await, balances(&good[1]).await];
    let mut good_ids = Vec::new();
    for payment in &good {
        good_ids.push(record_payment(payment, 0).await);
    }
    // The poison first: FIFO would put everything behind it on the lane.
    for id in std::iter::once(&poison).chain(&good_ids) {
        queue.queue().enqueue(id, &lane).await.unwrap();
    }
    let mut config = config();
    config.worker_max_attempts = 3;
    let worker = Worker::from_config(&config, &aws().await);

    let started = Instant::now();
    let (mut turns, mut good_done_at, mut given_up_at) = (0, None, None);
    while given_up_at.is_none() {
        assert!(turns < 12, "the poison message was never given up");
        let (handed, failed) = queue.deliver_as_lambda(&worker).await;
        assert_eq!(failed, 0, "nothing waits out a visibility timeout");
        turns += usize::from(handed > 0);
        let mut states = Vec::new();
        for id in &good_ids {
            states.push(payment_record(id).await.state);
        }
        // `signed` once the worker is done with them: it sent them and records nothing more.
        if good_done_at.is_none() && states.iter().all(|s| *s == State::Signed) {
            good_done_at = Some(turns);
        }
        if stored_outcome(&poison).await.0 != "queued" {
            given_up_at = Some(turns);
        }
    }
    println!(
        "poison given up after {turns} deliveries, {:.1} s; the lane's other payments were sent at delivery {good_done_at:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        good_done_at.is_some_and(|at| Some(at) <= given_up_at),
        "the payments behind the poison were sent while it was still being tried"
    );
    let (state, reason, message) = stored_outcome(&poison).await;
    assert_eq!(state, "cancelled", "{message}");
    assert_eq!(reason, "unexpected_settle_error");
    assert!(message.contains("failed 3 times"), "{message}");
    assert!(queue.dead_letters().await.is_empty());
    assert_eq!(queue.depth().await, 0, "no message is left behind");

    // The others settle once.
    // The others settle once: each payer paid once, the payee (theirs in common) got both.
    assert!(replay().await.settled >= 2);
    let mut paid = U256::ZERO;
    for ((id, payment), before) in good_ids.iter().zip(&good).zip(before) {
        assert_eq!(payment_record(id).await.state, State::Settled);
        assert_eq!(
            balances(payment).await.0,
            before.0 - payment.value,
            "one transfer"
        );
        paid += payment.value;
    }
    let payee = balances(&good[1]).await.1;
    assert_eq!(payee, before[0].1 + paid, "the payee got each payment once");
}

/// The `maxFeePerGas` of the transaction a record holds now (from its stored bytes: a node may
/// have refused or dropped it).
async fn offered(id: &str) -> u128 {
    let raw = payment_record(id).await.raw_tx.expect("signed");
    facilitator::lifecycle::decode_eip1559(&raw)
        .expect("an EIP-1559 transaction")
        .max_fee_per_gas
}

/// Ends a fee spike however the test ends: the base fee back down, and a replay run, which sends
/// again what the node dropped, so the lane's later nonces are not held behind it.
struct SpikeCleared;

impl Drop for SpikeCleared {
    fn drop(&mut self) {
        finish_detached(async {
            let _ = anvil().anvil_set_next_block_base_fee_per_gas(1).await;
            let _ = anvil().evm_mine(None).await;
            let _ = replayer().await.run(None).await;
            let _ = anvil().evm_mine(None).await;
        });
    }
}

#[tokio::test]
async fn a_fee_spike_bumps_a_priced_out_transaction_up_to_the_cap_and_no_further() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _mining = MiningStopped::start().await;
    let queue = OwnQueue::create("fees", 10).await;
    let lane = config().lane_keys[0].clone();
    // Replay and worker on the test's own queue; bumps only when priced out (the chain-time wait
    // is far away), so what moves the fees here is the spike alone.
    let mut config = config();
    config.settle_queue_url = Some(queue.url.clone());
    config.replay_min_age = Duration::ZERO;
    config.replay_bump_after = Duration::from_secs(3600);
    let payment = PaymentBuilder::new(3).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    queue.queue().enqueue(&id, &lane).await.unwrap();
    let worker = Worker::from_config(&config, &aws().await);
    assert_eq!(queue.deliver_as_lambda(&worker).await, (1, 0));
    assert!(sent_record(&id).await.is_some(), "signed and in the pool");
    let first_fee = offered(&id).await;

    // The cap: twice what the first signature offered. The spike: the next block's base fee at
    // ten times that, so the transaction is priced out (anvil drops it from its pool).
    let cap = first_fee * 2;
    config.networks[0].max_fee_per_gas = cap;
    let worker = Worker::from_config(&config, &aws().await);
    let replayer = facilitator::replay::Replayer::from_config(&config, &aws().await).unwrap();
    let _cleared = SpikeCleared;
    anvil()
        .anvil_set_next_block_base_fee_per_gas(first_fee * 10)
        .await
        .unwrap();
    mine().await;

    let mut fees = vec![first_fee];
    let mut summary = facilitator::replay::Summary::default();
    for round in 0..3 {
        summary = replayer.run(None).await.expect("replay reads its index");
        assert!(
            summary.bumped >= 1,
            "round {round}: priced out, so bumped: {summary:?}"
        );
        while queue.deliver_as_lambda(&worker).await.0 > 0 {}
        fees.push(offered(&id).await);
    }
    println!(
        "maxFeePerGas offered, first signature then each round of the spike: {fees:?} (cap {cap})"
    );
    // "Pending too long" counts from the payment's creation, which the bumps did not move.
    let bumped = payment_record(&id).await;
    assert!(
        bumped.updated_at > bumped.created_at,
        "the bumps changed the record"
    );
    assert!(
        summary
            .oldest_open_created_at
            .is_some_and(|oldest| oldest <= bumped.created_at),
        "{summary:?}"
    );
    assert!(fees[1] > first_fee, "the first bump raised the fee");
    assert!(fees.iter().all(|fee| *fee <= cap), "never above the cap");
    assert_eq!(fees[2], fees[3], "at the cap, no further bump");
    // Still in flight: `signed` when the priced-out node refused every send (anvil does; the worker
    // records no send of its own), `submitted` on a node that took a replacement into its pool.
    let waiting = payment_record(&id).await.state;
    assert!(
        [State::Signed, State::Submitted].contains(&waiting),
        "{waiting:?}"
    );

    // The spike passes: the capped transaction is sent again and mined; the payment settles once.
    anvil()
        .anvil_set_next_block_base_fee_per_gas(1)
        .await
        .unwrap();
    mine().await;
    let resent = replayer.run(None).await.unwrap();
    assert!(resent.rebroadcast + resent.submitted >= 1, "{resent:?}");
    mine().await;
    assert!(replay().await.settled >= 1);
    let settled = payment_record(&id).await;
    assert_eq!(settled.state, State::Settled);
    assert_eq!(settled.reason, None);
    assert_eq!(
        offered(&id).await,
        fees[3],
        "settled by the capped transaction"
    );
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test]
async fn a_settlement_that_would_use_more_gas_than_the_cap_fails_and_spends_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A transfer uses 60-90 thousand gas here; a cap of 30 000 makes any of them too costly.
    let mut config = config();
    config.networks[0].gas_caps.eoa = 30_000;
    let worker = Worker::from_config(&config, &aws().await);
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    let (lanes, block) = (lanes_table().await, block_number().await);

    let message = facilitator::queue::SettlementMessage {
        id: id.clone(),
        replace: None,
        created: None,
        simulated: None,
    };
    worker.process(&message).await.unwrap();
    let failed = payment_record(&id).await;
    assert_eq!(failed.state, State::Failed, "{failed:?}");
    assert_eq!(
        failed.reason,
        Some(facilitator::protocol::Reason::SimulationFailed)
    );
    let message = failed.message.unwrap_or_default();
    assert!(message.contains("(30000)"), "{message}");
    assert!(failed.raw_tx.is_none(), "nothing was signed");
    assert_eq!(lanes_table().await, lanes, "no lane nonce was taken");
    assert_eq!(block_number().await, block, "nothing was sent");
    assert_eq!(balances(&payment).await, before);
}
