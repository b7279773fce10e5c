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

use common::{replay::*, *};
use facilitator::{protocol::Reason, replay::Summary, store::State};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_crash_after_the_write_ahead_is_finished_with_the_same_bytes_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let mining = MiningStopped::start().await;
    let (id, hash) = broadcast_unmined(&payment).await;

    // What a crash between the write-ahead and the broadcast leaves: the record `signed` with its
    // bytes, the node knowing nothing of them. (The worker does not record its send, so the
    // record is `signed` either way: only the node's pool differs.)
    drop_from_pool(hash).await;
    assert_eq!(payment_record(&id).await.state, State::Signed);

    let first = replay().await;
    assert!(first.submitted >= 1, "{first:?}");
    let sent = payment_record(&id).await;
    assert_eq!(sent.state, State::Submitted);
    assert_eq!(sent.tx_hash, Some(hash), "the same transaction");
    assert!(
        transaction(hash).await.is_some(),
        "the stored bytes are back in the pool"
    );
    assert_eq!(balances(&payment).await, before, "not mined yet");

    mine().await;
    drop(mining);
    let second = replay().await;
    assert!(second.settled >= 1, "{second:?}");
    let settled = payment_record(&id).await;
    assert_eq!(settled.state, State::Settled);
    assert_eq!(settled.tx_hash, Some(hash));
    assert!(settled.open_shard.is_none(), "it left replay's index");
    moved_once(before, balances(&payment).await, payment.value);

    let third = replay().await;
    assert_eq!(payment_record(&id).await, settled, "{third:?}");
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
    let waiting = payment_record(&id).await;
    let first = replay().await;
    assert!(first.pending >= 1, "{first:?}");
    assert_eq!(payment_record(&id).await, waiting);

    // Dropped: the worker's `signed` record is sent again and marked `submitted`.
    drop_from_pool(hash).await;
    let second = replay().await;
    assert!(second.submitted >= 1, "{second:?}");
    assert_eq!(payment_record(&id).await.state, State::Submitted);
    assert!(
        transaction(hash).await.is_some(),
        "the same bytes (same hash) are back in the pool"
    );

    // Dropped again, now `submitted`: the same bytes once more, and the record stays as it is.
    drop_from_pool(hash).await;
    let third = replay().await;
    assert!(third.rebroadcast >= 1, "{third:?}");
    assert_eq!(payment_record(&id).await.state, State::Submitted);
    assert!(transaction(hash).await.is_some(), "back in the pool");

    mine().await;
    drop(mining);
    let fourth = replay().await;
    assert!(fourth.settled >= 1, "{fourth:?}");
    let settled = payment_record(&id).await;
    assert_eq!(
        (settled.state, settled.tx_hash),
        (State::Settled, Some(hash))
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
    let expired = payment_record(&id).await;
    assert_eq!(expired.state, State::Expired);
    assert_eq!(expired.reason, Some(Reason::ValidBefore));
    assert!(expired.open_shard.is_none());
    assert!(expired.raw_tx.is_none(), "nothing was signed");
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
    wait_sent(&id).await;
    let finished = replay().await;
    assert!(finished.settled >= 1, "{finished:?}");
    assert_eq!(payment_record(&id).await.state, State::Settled);
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
    assert_eq!(payment_record(&id).await.state, State::Expired);
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
    assert_eq!(payment_record(&id).await.state, State::Expired);
}
