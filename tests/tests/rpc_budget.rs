//! How many chain RPC requests a verify costs, counted by the proxy in front of anvil.
//! This binary runs alone (cargo runs test binaries one after another), so the counts are ours.
//! These are counts, not timings: they are exact and belong in tests.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn rpc_requests_per_verify() {
    // Warm the facilitator first so nothing lazy (provider set-up) is counted.
    let warm = PaymentBuilder::new(0).sign();
    assert_eq!(verify(&warm.body()).await.json["isValid"], true);

    reset_rpc_counts().await;
    let payment = PaymentBuilder::new(0).sign();
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    let counts = rpc_counts().await;
    assert_eq!(
        counts["rpc_requests"], 1,
        "a successful verify is one eth_call: {counts}"
    );
    assert_eq!(counts["methods"], json!({"eth_call": 1}), "{counts}");

    reset_rpc_counts().await;
    let expired = PaymentBuilder::new(0)
        .edit(|p| p.valid_before = now() - 1)
        .sign();
    assert_eq!(verify(&expired.body()).await.json["isValid"], false);
    assert_eq!(
        rpc_counts().await["rpc_requests"],
        0,
        "a payment refused locally costs no RPC request"
    );

    reset_rpc_counts().await;
    let broke =
        PaymentBuilder::with_signer(alloy::signers::local::PrivateKeySigner::random()).sign();
    assert_eq!(
        verify(&broke.body()).await.json["invalidReason"],
        "invalid_exact_evm_insufficient_balance"
    );
    let counts = rpc_counts().await;
    assert_eq!(
        counts["methods"],
        json!({"eth_call": 2}),
        "a failed simulation adds one diagnostic multicall: {counts}"
    );
}
