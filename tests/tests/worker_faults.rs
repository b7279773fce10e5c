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

use alloy::primitives::U256;
use aws_sdk_dynamodb::types::AttributeValue;
use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{settle::lane_for, worker::Worker};
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

    // The worker's simulation (eth_estimateGas) fails for 7 s: longer than its in-process retries
    // (5 s), far shorter than the local queue's visibility timeout (60 s). /settle's own checks
    // use eth_call and pass.
    let fault = RpcFault::set("error", &["eth_estimateGas"]).await;
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
            states.push(text(&item(id).await, "state"));
        }
        if good_done_at.is_none() && states.iter().all(|s| s == "submitted") {
            good_done_at = Some(turns);
        }
        if text(&item(&poison).await, "state") != "queued" {
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
    let cancelled = item(&poison).await;
    assert_eq!(text(&cancelled, "state"), "cancelled", "{cancelled:?}");
    assert_eq!(text(&cancelled, "reason"), "unexpected_settle_error");
    assert!(
        text(&cancelled, "message").contains("failed 3 times"),
        "{cancelled:?}"
    );
    assert!(queue.dead_letters().await.is_empty());
    assert_eq!(queue.depth().await, 0, "no message is left behind");

    // The others settle once.
    // The others settle once: each payer paid once, the payee (theirs in common) got both.
    assert!(replay().await.settled >= 2);
    let mut paid = U256::ZERO;
    for ((id, payment), before) in good_ids.iter().zip(&good).zip(before) {
        assert_eq!(text(&item(id).await, "state"), "settled");
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
