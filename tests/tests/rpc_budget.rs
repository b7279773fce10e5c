//! How many chain RPC requests a verify and a settle cost, counted by the proxy in front of anvil.
//! This binary runs alone (cargo runs test binaries one after another), and its tests one at a
//! time, so the counts are each test's own.
//! These are counts, not timings: they are exact and belong in tests.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn rpc_requests_per_verify() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// A Permit2 payment is verified in one round trip too: the proxy, balance, allowance and nonce
/// reads and the proxy's `settle` simulation travel in one Multicall3 `eth_call`, whether the
/// payment is valid or refused for its allowance.
#[tokio::test]
async fn rpc_requests_per_permit2_verify() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The payer's set-up goes straight to anvil, not through the counting proxy.
    let payer = permit2_payer(alloy::primitives::U256::MAX).await;
    let warm = Permit2Builder::new(payer.clone()).sign();
    assert_eq!(verify(&warm.body()).await.json["isValid"], true);

    reset_rpc_counts().await;
    let payment = Permit2Builder::new(payer).sign();
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
    let counts = rpc_counts().await;
    assert_eq!(
        counts["rpc_requests"], 1,
        "a valid Permit2 verify is one eth_call: {counts}"
    );
    assert_eq!(counts["methods"], json!({"eth_call": 1}), "{counts}");

    reset_rpc_counts().await;
    let unapproved = Permit2Builder::from_payer(0).sign();
    assert_eq!(
        verify(&unapproved.body()).await.json["invalidReason"],
        "permit2_allowance_required"
    );
    let counts = rpc_counts().await;
    assert_eq!(
        counts["methods"],
        json!({"eth_call": 1}),
        "the diagnosis is in the same call: {counts}"
    );
}

/// An `upto` payment costs two `eth_call`s, sent at the same time (one round trip of latency):
/// the batch of reads, and the upto proxy's `settle` from the facilitator's address, which the
/// upto proxy requires of its caller and Multicall3 cannot be (docs/protocol-choices.md, "upto").
#[tokio::test]
async fn rpc_requests_per_upto_verify() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payer = permit2_payer(alloy::primitives::U256::MAX).await;
    let warm = Permit2Builder::upto(payer.clone()).sign();
    assert_eq!(verify(&warm.body()).await.json["isValid"], true);

    reset_rpc_counts().await;
    let payment = Permit2Builder::upto(payer).sign();
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
    let counts = rpc_counts().await;
    assert_eq!(counts["methods"], json!({"eth_call": 2}), "{counts}");
}

/// A settlement on a lane already in use: one simulation (/settle's `eth_estimateGas` from the
/// lane, whose gas the worker signs with), the broadcast and the receipt lookups, or, for a
/// payment `/settle` signs itself, the broadcast that waits for its receipt. The lane's nonce
/// comes from the lanes table, not from `eth_getTransactionCount`; fees come from a cache in each
/// function (an `eth_feeHistory` from each whose cache ran out).
#[tokio::test]
async fn rpc_requests_per_settle() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Until both lanes have settled one (lanes are chosen by payment id): both then have a nonce
    // in the table, and the worker knows it.
    let mut senders = std::collections::HashSet::new();
    for i in 0..24 {
        let answer = settle(&PaymentBuilder::new(i % 4).sign().body()).await;
        assert_eq!(answer.json["success"], true, "{:?}", answer.json);
        let hash = answer.json["transaction"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        senders.insert(receipt(hash).await.unwrap().from);
        if senders.len() == stack().lanes.len() {
            break;
        }
    }
    assert_eq!(senders.len(), stack().lanes.len(), "every lane settled one");

    for i in 0..4 {
        reset_rpc_counts().await;
        let answer = settle(&PaymentBuilder::new(i).sign().body()).await;
        assert_eq!(answer.json["success"], true, "{:?}", answer.json);
        let counts = rpc_counts().await;
        let methods = counts["methods"].as_object().unwrap();
        let count = |m: &str| methods.get(m).and_then(|n| n.as_u64()).unwrap_or(0);
        assert_eq!(
            count("eth_getTransactionCount"),
            0,
            "the nonce is the table's: {counts}"
        );
        assert_eq!(
            (count("eth_call"), count("eth_estimateGas")),
            (0, 1),
            "one simulation, /settle's from the lane, whose gas the worker signs with: {counts}"
        );
        // Signed in /settle, the send waits for the receipt in the same request; through the
        // queue, the worker sends and /settle's follower looks the receipt up.
        let (sync, plain) = (
            count("eth_sendRawTransactionSync"),
            count("eth_sendRawTransaction"),
        );
        assert_eq!(sync + plain, 1, "one send: {counts}");
        match sync {
            1 => assert_eq!(count("eth_getTransactionReceipt"), 0, "{counts}"),
            _ => assert!(count("eth_getTransactionReceipt") >= 1, "{counts}"),
        }
        // /settle and the worker each keep fees for X402_FEE_CACHE_MS.
        assert!(count("eth_feeHistory") <= 2, "{counts}");
        let known = [
            "eth_call",
            "eth_estimateGas",
            "eth_sendRawTransaction",
            "eth_sendRawTransactionSync",
            "eth_getTransactionReceipt",
            "eth_feeHistory",
            "eth_getBlockByNumber",
        ];
        assert!(
            methods.keys().all(|m| known.contains(&m.as_str())),
            "nothing else: {counts}"
        );
        println!("settle {i}: {counts}");
    }
}

/// Callers that find the fee estimate stale together share one fetch: one `eth_feeHistory` for
/// sixteen of them. When the node fails it, they share the failure too: one request in all, not
/// one per caller, each waiting for the one before it.
#[tokio::test]
async fn callers_who_find_the_fees_stale_together_share_one_fetch() {
    use facilitator::{config::RpcSource, evm::chain::Chain};
    use std::time::Duration;
    let _one = ONE_AT_A_TIME.lock().await;
    let chain = || {
        Chain::new(
            RpcSource::url(stack().rpc_proxy_url.clone()),
            None,
            Duration::from_secs(5),
        )
        .with_fee_cache(Duration::from_secs(60))
    };
    let fee_requests = || async {
        rpc_counts().await["methods"]["eth_feeHistory"]
            .as_u64()
            .unwrap_or(0)
    };

    let shared = chain();
    reset_rpc_counts().await;
    let answers = futures_util::future::join_all((0..16).map(|_| shared.fees())).await;
    assert_eq!(fee_requests().await, 1, "{}", rpc_counts().await);
    let first = answers[0].clone().unwrap();
    assert!(answers.iter().all(|a| a == &Ok(first)), "{answers:?}");

    let failing = RpcFault::set("error", &["eth_feeHistory"]).await;
    reset_rpc_counts().await;
    assert!(chain().fees().await.is_err());
    let one_caller = fee_requests().await;
    let shared = chain();
    reset_rpc_counts().await;
    let answers = futures_util::future::join_all((0..16).map(|_| shared.fees())).await;
    let sixteen_callers = fee_requests().await;
    drop(failing);
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    assert!(one_caller >= 1, "the fault was reached");
    assert_eq!(
        sixteen_callers, one_caller,
        "a failed fetch is shared by those who waited on it"
    );
}
