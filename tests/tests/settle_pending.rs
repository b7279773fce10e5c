//! `settlement_pending`: broadcast but not mined by the deadline, `/settle` says so and names the
//! transaction; once it is mined, the same `/settle` reports the final result with the same hash
//! (DESIGN I5). anvil stops mining for the first half of the test.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::*;
use serde_json::json;

#[tokio::test]
async fn pending_names_the_transaction_and_settling_again_gives_the_final_result() {
    let s = stack();
    // The real queue and worker, but a short deadline.
    let (_server, base) = start_local_server(&[("X402_SETTLE_DEADLINE_MS", "2000")]).await;
    let payment = PaymentBuilder::new(3).sign();
    let before = token_balance(s.token, payment.from).await;

    let _mining = MiningStopped::start().await;
    let pending = post_raw(
        &format!("{base}/settle"),
        serde_json::to_vec(&payment.body()).unwrap(),
    )
    .await;
    assert_eq!(pending.status, 200, "{:?}", pending.json);
    assert_eq!(pending.json["success"], false, "{:?}", pending.json);
    assert_eq!(
        pending.json["errorReason"], "settlement_pending",
        "{:?}",
        pending.json
    );
    let hash = pending.json["transaction"].as_str().unwrap().to_owned();
    assert_eq!(
        hash.len(),
        66,
        "the pending answer names the broadcast transaction"
    );
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before,
        "not mined yet"
    );

    resume_mining().await;
    let last = settle(&payment.body()).await;
    assert_eq!(
        (
            last.json["success"].clone(),
            last.json["transaction"].clone()
        ),
        (json!(true), json!(hash)),
        "{:?}",
        last.json
    );
    assert_eq!(
        token_balance(s.token, payment.from).await,
        before - U256::from(1_000_000u64)
    );
}
