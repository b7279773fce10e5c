//! What `/settle` does when nothing is broadcast before its deadline: it cancels the record
//! atomically and says so, and the payment can then never settle unseen (DESIGN I5).
//!
//! A second local server is started with a 1.5 s deadline and a queue nobody consumes (the
//! dead-letter queue), so its payments stay `queued` until the deadline.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use facilitator::store::State;
use serde_json::json;

#[tokio::test]
async fn nothing_broadcast_by_the_deadline_is_cancelled_for_good() {
    let s = stack();
    // A queue nobody consumes (the dead-letter queue), so the payment stays queued.
    let (_server, base) = start_local_server(&[
        ("X402_SETTLE_QUEUE_URL", stack().settle_dlq_url.as_str()),
        ("X402_SETTLE_DEADLINE_MS", "1500"),
    ])
    .await;
    let payment = PaymentBuilder::new(2).sign();
    let balance = token_balance(s.token, payment.from).await;
    let block = block_number().await;

    let answer = post_raw(
        &format!("{base}/settle"),
        serde_json::to_vec(&payment.body()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["success"], false, "{:?}", answer.json);
    assert_eq!(
        answer.json["errorReason"], "unexpected_settle_error",
        "{:?}",
        answer.json
    );
    assert_eq!(answer.json["transaction"], "");

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Cancelled);
    assert!(
        record.open_shard.is_none(),
        "a cancelled record leaves replay's index"
    );

    // The regular facilitator, whose worker runs, follows the cancelled record: it does not revive it.
    let again = settle(&payment.body()).await;
    assert_eq!(
        (
            again.json["success"].clone(),
            again.json["errorReason"].clone()
        ),
        (json!(false), json!("unexpected_settle_error"))
    );
    assert_eq!(block_number().await, block, "nothing was ever broadcast");
    assert_eq!(token_balance(s.token, payment.from).await, balance);
}
