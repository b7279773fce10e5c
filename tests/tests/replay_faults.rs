//! Faults, and replay finishing what they leave (DESIGN I3, I6; issue 4).
//!
//! A settlement is stopped at each of its steps, as a crash would stop it: after the record is
//! written, after KMS signed, after the write-ahead, after the broadcast, and after the receipt but
//! before the record moved. Replay then ends every one exactly once: settled while the authorization
//! is valid, expired with no transfer once it ran out. Also: a stuck transaction replaced with
//! higher fees (and the record keeping both hashes), a lane nonce taken by another transaction, the
//! chain RPC down, KMS refusing to sign, and a message that keeps failing until the dead-letter queue.
//!
//! The worker that crashes runs in this process, stopped by `Worker::stop_after` at the step: what
//! it leaves in DynamoDB, SQS and the chain is what a dead process leaves. Everything after that is
//! the real thing: replay in this process, and the worker Lambda under cargo-lambda's emulator fed
//! by the SQS poller. Tests run one at a time: they stop anvil's mining and break the RPC proxy.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use alloy::{
    consensus::Transaction as _,
    eips::BlockId,
    primitives::U256,
    providers::{ext::AnvilApi, Provider},
    rpc::types::TransactionRequest,
};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{
    protocol::Reason,
    queue::SettlementMessage,
    store::{PaymentRecord, State},
    worker::{Step, Worker},
};
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A worker in this process that stops after `step` as if its process died there.
async fn crashing_worker(step: Step) -> Worker {
    Worker::from_config(&config(), &aws().await).stop_after(step)
}

fn message(id: &str) -> SettlementMessage {
    SettlementMessage {
        id: id.to_owned(),
        replace: None,
        created: None,
        simulated: None,
    }
}

/// Runs the crashing worker on a recorded payment and checks that it did stop.
async fn crash(step: Step, id: &str) {
    let outcome = crashing_worker(step).await.process(&message(id)).await;
    assert!(
        outcome.is_err(),
        "the worker stopped after {step:?}: {outcome:?}"
    );
}

/// A payment whose authorization runs out a few seconds from now.
fn short_lived(payer: usize) -> PaymentBuilder {
    PaymentBuilder::new(payer)
        .edit(|p| p.valid_before = now() + 4)
        .sign()
}

/// The record settled, with one transfer, by a mined transaction from its lane.
async fn assert_settled_once(
    id: &str,
    payment: &PaymentBuilder,
    before: (U256, U256),
) -> PaymentRecord {
    let record = payment_record(id).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    let hash = record
        .tx_hash
        .expect("a settled record names its transaction");
    let mined = receipt(hash)
        .await
        .unwrap_or_else(|| panic!("{hash} is not mined"));
    assert!(mined.status(), "{mined:?}");
    assert_eq!(Some(mined.from), record.sender, "sent by the record's lane");
    moved_once(before, balances(payment).await, payment.value);
    record
}

/// The record expired, and nothing was paid.
async fn assert_expired_unpaid(
    id: &str,
    payment: &PaymentBuilder,
    before: (U256, U256),
) -> PaymentRecord {
    let record = payment_record(id).await;
    assert_eq!(record.state, State::Expired, "{record:?}");
    assert_eq!(record.reason, Some(Reason::ValidBefore));
    assert!(record.open_shard.is_none(), "it left replay's index");
    assert_eq!(balances(payment).await, before, "no transfer");
    record
}

/// The lane's nonce in the table agrees with the chain: no gap, nothing taken twice.
async fn assert_lane_in_step(record: &PaymentRecord) {
    let sender = record.sender.expect("the record names its lane's address");
    let chain = chain_nonce(sender, BlockId::latest()).await;
    let lane = &record.lane;
    let row = lanes_table()
        .await
        .into_iter()
        .find(|row| &row.lane == lane)
        .unwrap();
    assert_eq!(
        chain,
        row.next_nonce(&record.network),
        "lane {lane}: chain and table agree"
    );
}

// ---- a crash at each step, while the authorization is valid: settled exactly once ----

#[tokio::test]
async fn crash_after_the_record_is_written_then_replay_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    // Written by /settle, never queued: the function died between the two.
    let id = record_payment(&payment, 0).await;

    assert!(replay().await.requeued >= 1);
    wait_sent(&id).await;
    assert!(replay().await.settled >= 1);
    assert_settled_once(&id, &payment, before).await;
}

#[tokio::test]
async fn crash_after_signing_takes_no_nonce_and_replay_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(1).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    let (lanes, block) = (lanes_table().await, block_number().await);

    crash(Step::Signed, &id).await;
    let left = payment_record(&id).await;
    assert_eq!(left.state, State::Queued, "the signature was never written");
    assert!(left.raw_tx.is_none());
    assert_eq!(lanes_table().await, lanes, "no lane nonce was taken");
    assert_eq!(block_number().await, block, "nothing was sent");

    assert!(replay().await.requeued >= 1);
    wait_sent(&id).await;
    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_lane_in_step(&record).await;
}

#[tokio::test]
async fn crash_after_the_write_ahead_sends_the_stored_bytes_and_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;

    crash(Step::WrittenAhead, &id).await;
    let written = payment_record(&id).await;
    assert_eq!(written.state, State::Signed);
    let hash = written
        .tx_hash
        .expect("the write-ahead names the transaction");
    assert!(transaction(hash).await.is_none());

    assert!(replay().await.submitted >= 1);
    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_eq!(record.tx_hash, Some(hash), "the bytes written ahead");
    assert_lane_in_step(&record).await;
}

#[tokio::test]
async fn crash_after_the_broadcast_is_finished_from_the_receipt_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(3).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;

    // Sent (and mined at once), but the record still says `signed`.
    crash(Step::Broadcast, &id).await;
    let signed = payment_record(&id).await;
    assert_eq!(signed.state, State::Signed);
    let hash = signed
        .tx_hash
        .expect("the write-ahead names the transaction");
    assert!(receipt(hash).await.is_some());

    let summary = replay().await;
    assert!(summary.settled >= 1, "{summary:?}");
    assert_eq!(summary.refused, 0, "a mined transaction is not sent again");
    let record = assert_settled_once(&id, &payment, before).await;
    assert_eq!(record.tx_hash, Some(hash));
    assert_lane_in_step(&record).await;
}

#[tokio::test]
async fn crash_after_the_receipt_before_the_record_moved_then_replay_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;

    // The worker runs to the end; anvil mines; nobody follows the record (the /settle that would
    // have read the receipt is gone).
    Worker::from_config(&config(), &aws().await)
        .process(&message(&id))
        .await
        .unwrap();
    let sent = payment_record(&id).await;
    assert_eq!(
        sent.state,
        State::Signed,
        "the worker does not record its send"
    );
    let hash = sent.tx_hash.expect("a sent record names its transaction");
    assert!(receipt(hash).await.is_some(), "mined");

    assert!(replay().await.settled >= 1);
    assert_settled_once(&id, &payment, before).await;
    assert_eq!(replay().await.settled, 0, "once");
}

// ---- the same crashes once the authorization ran out: expired, nothing paid ----

#[tokio::test]
async fn crash_after_signing_then_expiry_ends_expired_without_a_transfer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = short_lived(1);
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    crash(Step::Signed, &id).await;
    let block = block_number().await;

    until_after(payment.valid_before).await;
    assert!(replay().await.expired >= 1);
    let record = assert_expired_unpaid(&id, &payment, before).await;
    assert!(record.raw_tx.is_none(), "nothing was signed to keep");
    assert_eq!(block_number().await, block, "nothing was sent");
}

#[tokio::test]
async fn crash_after_the_write_ahead_then_expiry_cancels_the_nonce_without_a_transfer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = short_lived(2);
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    crash(Step::WrittenAhead, &id).await;
    let hash = payment_record(&id).await.tx_hash.unwrap();

    until_after(payment.valid_before).await;
    // The stored transfer would only revert now: its lane nonce is used by a zero-value
    // self-transfer instead, signed by the worker Lambda at replay's request.
    let summary = replay().await;
    assert!(summary.cancelling >= 1, "{summary:?}");
    let cancelled = wait_until(&id, "a cancellation sent", |r| {
        r.state == State::Submitted && r.tx_hash != Some(hash)
    })
    .await;
    assert_eq!(cancelled.replaced, vec![hash]);
    let summary = replay().await;
    assert!(summary.expired >= 1, "{summary:?}");
    let record = assert_expired_unpaid(&id, &payment, before).await;
    let cancel = transaction(record.tx_hash.unwrap()).await.unwrap();
    assert_eq!(
        cancel.to(),
        Some(cancel.inner.signer()),
        "a self-transfer: {cancel:?}"
    );
    assert_eq!(cancel.value(), U256::ZERO);
    assert!(receipt(hash).await.is_none());
    assert_lane_in_step(&record).await;
}

#[tokio::test]
async fn crash_after_the_broadcast_then_expiry_replaces_the_transfer_with_a_cancellation() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = short_lived(3);
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    let mining = MiningStopped::start().await;
    crash(Step::Broadcast, &id).await;
    let hash = payment_record(&id).await.tx_hash.unwrap();
    assert!(transaction(hash).await.is_some(), "in the pool");

    until_after(payment.valid_before).await;
    assert!(replay().await.cancelling >= 1);
    let cancelled = wait_until(&id, "a cancellation sent", |r| {
        r.state == State::Submitted && r.tx_hash != Some(hash)
    })
    .await;
    assert_eq!(cancelled.replaced, vec![hash]);
    mine().await;
    drop(mining);

    assert!(replay().await.expired >= 1);
    let record = assert_expired_unpaid(&id, &payment, before).await;
    assert!(
        receipt(hash).await.is_none(),
        "the transfer was never mined"
    );
    assert_lane_in_step(&record).await;
}

// ---- stuck, raced and taken nonces ----

#[tokio::test]
async fn a_stuck_transaction_is_replaced_with_higher_fees_and_the_record_keeps_both() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let mining = MiningStopped::start().await;
    let (id, hash) = broadcast_unmined(&payment).await;
    let original = transaction(hash).await.expect("in the pool");

    // Patient replay leaves it (it was sent just now); impatient replay takes it for stuck.
    assert!(replay().await.pending >= 1);
    let summary = replay_impatiently().await;
    assert!(summary.bumped >= 1, "{summary:?}");
    let bumped = wait_until(&id, "a replacement", |r| r.tx_hash != Some(hash)).await;
    assert_eq!(bumped.state, State::Submitted);
    assert_eq!(bumped.replaced, vec![hash], "both are on record");
    let replacement = transaction(bumped.tx_hash.unwrap()).await.unwrap();
    assert_eq!(replacement.nonce(), original.nonce(), "the same lane nonce");
    assert_eq!(replacement.input(), original.input(), "the same transfer");
    for (fee, was, is) in [
        (
            "maxFeePerGas",
            original.max_fee_per_gas(),
            replacement.max_fee_per_gas(),
        ),
        (
            "maxPriorityFeePerGas",
            original.max_priority_fee_per_gas().unwrap(),
            replacement.max_priority_fee_per_gas().unwrap(),
        ),
    ] {
        assert!(
            is > was * 11 / 10,
            "{fee} rose by more than 10 %: {was} → {is}"
        );
    }
    assert!(
        transaction(hash).await.is_none(),
        "the node dropped the original for its replacement"
    );

    mine().await;
    drop(mining);
    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_eq!(record.tx_hash, bumped.tx_hash);
    assert_lane_in_step(&record).await;
    let table = all_records().await;
    assert_eq!(replay().await.settled, 0);
    assert_eq!(all_records().await, table, "a second run changes nothing");
}

#[tokio::test]
async fn when_the_original_is_mined_instead_of_its_replacement_the_record_names_the_original() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(1).sign();
    let before = balances(&payment).await;
    let mining = MiningStopped::start().await;
    let (id, hash) = broadcast_unmined(&payment).await;
    let original_raw = anvil()
        .get_raw_transaction_by_hash(hash)
        .await
        .unwrap()
        .expect("in the pool");

    assert!(replay_impatiently().await.bumped >= 1);
    let bumped = wait_until(&id, "a replacement", |r| r.tx_hash != Some(hash)).await;
    // Another node kept the original and a block builder took it: here, the replacement is
    // dropped and the original sent back before the block is mined.
    drop_from_pool(bumped.tx_hash.unwrap()).await;
    let _resent = anvil().send_raw_transaction(&original_raw).await.unwrap();
    mine().await;
    drop(mining);

    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_eq!(record.tx_hash, Some(hash), "the transaction that was mined");
    assert_lane_in_step(&record).await;
}

#[tokio::test]
async fn a_lane_nonce_taken_by_another_transaction_is_signed_afresh_and_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    crash(Step::WrittenAhead, &id).await;
    let written = payment_record(&id).await;
    let (hash, sender) = (written.tx_hash.unwrap(), written.sender.unwrap());

    // Someone else (an operator's manual transaction) uses the lane's nonce first.
    anvil().anvil_impersonate_account(sender).await.unwrap();
    let manual = TransactionRequest::default()
        .from(sender)
        .to(sender)
        .value(U256::ZERO);
    send_unlocked(manual).await;
    anvil()
        .anvil_stop_impersonating_account(sender)
        .await
        .unwrap();

    let summary = replay().await;
    assert!(summary.resigned >= 1, "{summary:?}");
    let requeued = payment_record(&id).await;
    assert!(
        [State::Queued, State::Signed, State::Submitted].contains(&requeued.state),
        "{requeued:?}"
    );
    wait_sent(&id).await;
    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_ne!(
        record.tx_hash,
        Some(hash),
        "a new transaction at a new nonce"
    );
    assert_eq!(record.replaced, vec![hash]);
    assert_lane_in_step(&record).await;
}

// ---- the chain RPC down ----

#[tokio::test]
async fn with_the_rpc_down_answers_stay_clear_and_replay_finishes_once_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A settle function that gives up after 3 s, so the test does not wait 15.
    let (_server, base) = start_local_server(&[("X402_SETTLE_DEADLINE_MS", "3000")]).await;
    let settle_at = |body: &Value| {
        let url = format!("{base}/settle");
        let body = serde_json::to_vec(body).unwrap();
        async move { post_raw(&url, body).await }
    };

    // Receipts cannot be read: the transfer is sent and mined, but /settle cannot see it (nor
    // have it with the send's answer: the send that waits for its receipt fails too, and the
    // bytes go the usual way).
    let pending = PaymentBuilder::new(3).sign();
    let before = balances(&pending).await;
    let fault = RpcFault::set(
        "error",
        &["eth_getTransactionReceipt", "eth_sendRawTransactionSync"],
    )
    .await;
    let answer = settle_at(&pending.body()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["success"], false, "{:?}", answer.json);
    assert_eq!(
        answer.json["errorReason"], "settlement_pending",
        "{:?}",
        answer.json
    );
    let hash = answer.json["transaction"].as_str().unwrap().to_owned();
    assert!(
        hash.starts_with("0x") && hash.len() == 66,
        "with its hash: {hash}"
    );

    // The whole RPC down: verify and settle answer with a clear reason, and nothing is recorded.
    set_rpc_fault("error", &[]).await;
    let refused = PaymentBuilder::new(0).sign();
    let verified = post_raw(
        &format!("{base}/verify"),
        serde_json::to_vec(&refused.body()).unwrap(),
    )
    .await;
    assert_eq!(verified.status, 200);
    assert_eq!(verified.json["isValid"], false);
    assert_eq!(verified.json["invalidReason"], "unexpected_verify_error");
    let settled = settle_at(&refused.body()).await;
    assert_eq!(settled.status, 200);
    assert_eq!(settled.json["success"], false);
    assert_eq!(settled.json["errorReason"], "unexpected_settle_error");
    assert_eq!(settled.json["transaction"], "");
    assert!(
        store()
            .await
            .get(&refused.payment_id())
            .await
            .unwrap()
            .is_none(),
        "a settlement that could not be checked is not recorded"
    );

    // Replay while the chain is unreachable: counted as errors, nothing changed.
    let record = payment_record(&pending.record_id()).await;
    let summary = replay().await;
    assert!(summary.errors >= 1, "{summary:?}");
    assert_eq!(payment_record(&pending.record_id()).await, record);

    // Back: replay finishes it, and /settle now reports the final result.
    drop(fault);
    assert!(replay().await.settled >= 1);
    assert_settled_once(&pending.record_id(), &pending, before).await;
    let again = settle_at(&pending.body()).await;
    assert_eq!(
        (
            again.json["success"].clone(),
            again.json["transaction"].clone()
        ),
        (json!(true), json!(hash))
    );
}

// ---- the queue and KMS failing ----

#[tokio::test]
async fn a_message_that_keeps_failing_lands_in_the_dead_letter_queue_and_replay_still_settles() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("dlq", 2).await;

    // A payment queued on a lane that was drained (taken out of X402_LANE_KEYS): every worker
    // refuses to sign with it, so its message fails every time.
    let payment = PaymentBuilder::new(1).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    let retired = "alias/x402-retired-lane";
    dynamodb()
        .await
        .update_item()
        .table_name(&stack().payments_table)
        .key("id", AttributeValue::S(id.clone()))
        .update_expression("SET lane = :retired")
        .expression_attribute_values(":retired", AttributeValue::S(retired.into()))
        .send()
        .await
        .unwrap();
    queue.queue().enqueue(&id, retired).await.unwrap();

    let worker = Worker::from_config(&config(), &aws().await);
    let mut receives = 0;
    let dead = loop {
        let dead = queue.dead_letters().await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(
            receives < 20,
            "the message never reached the dead-letter queue"
        );
        let (handed, failed) = queue.deliver_once(&worker).await;
        assert_eq!(failed, handed, "the worker refuses the drained lane");
        if handed == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        receives += handed;
    };
    assert!(
        receives >= 2,
        "received {receives} times before the redrive"
    );
    assert!(dead[0].body.as_deref().unwrap().contains(&id));
    assert_eq!(
        payment_record(&id).await.state,
        State::Queued,
        "the record is still open"
    );

    // Replay finds the record (not the message): it moves it to a configured lane and queues it on
    // the stack's queue, where the worker Lambda settles it.
    let summary = replay().await;
    assert!(summary.relaned >= 1, "{summary:?}");
    let moved = payment_record(&id).await;
    assert!(config().lane_keys.contains(&moved.lane), "{moved:?}");
    wait_sent(&id).await;
    assert!(replay().await.settled >= 1);
    assert_settled_once(&id, &payment, before).await;
}

/// Disables (or enables) every lane's KMS key; enabled again however the test ends.
struct KeysDisabled(aws_sdk_kms::Client);

impl KeysDisabled {
    async fn start() -> Self {
        let kms = aws_sdk_kms::Client::new(&aws().await);
        for lane in &stack().lanes {
            kms.disable_key().key_id(&lane.key_id).send().await.unwrap();
        }
        KeysDisabled(kms)
    }
}

impl Drop for KeysDisabled {
    fn drop(&mut self) {
        let kms = self.0.clone();
        finish_detached(async move {
            for lane in &stack().lanes {
                let _ = kms.enable_key().key_id(&lane.key_id).send().await;
            }
        });
    }
}

#[tokio::test]
async fn with_kms_refusing_to_sign_nothing_is_spent_and_the_retry_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("kms", 5).await;
    // A worker that has its lane's address already (KMS GetPublicKey at its first message), as a
    // warm Lambda instance would; that first payment is finished by replay below.
    let worker = Worker::from_config(&config(), &aws().await);
    let warm = record_payment(&PaymentBuilder::new(3).sign(), 0).await;
    worker.process(&message(&warm)).await.unwrap();

    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    let id = record_payment(&payment, 0).await;
    queue
        .queue()
        .enqueue(&id, &config().lane_keys[0])
        .await
        .unwrap();

    let (lanes, block) = (lanes_table().await, block_number().await);
    let disabled = KeysDisabled::start().await;
    let mut attempts = 0;
    while attempts < 2 {
        let (handed, failed) = queue.deliver_once(&worker).await;
        assert_eq!(failed, handed, "KMS refuses Sign with a disabled key");
        attempts += handed;
    }
    let left = payment_record(&id).await;
    assert_eq!(left.state, State::Queued, "{left:?}");
    assert!(left.raw_tx.is_none());
    assert_eq!(lanes_table().await, lanes, "no lane nonce was taken");
    assert_eq!(block_number().await, block, "nothing was sent");

    // KMS back: the same message, retried, settles the payment once.
    drop(disabled);
    for _ in 0..20 {
        if queue.deliver_once(&worker).await == (1, 0) {
            break;
        }
    }
    assert!(sent_record(&id).await.is_some(), "sent (and mined)");
    assert!(replay().await.settled >= 1);
    let record = assert_settled_once(&id, &payment, before).await;
    assert_lane_in_step(&record).await;
    assert!(queue.dead_letters().await.is_empty());
}
