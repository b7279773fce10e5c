//! `POST /settle` for `exact` Permit2 payments on the local stack: the same record, queue, KMS
//! lanes, follower and replay as EIP-3009 payments, with the transaction calling the x402 exact
//! Permit2 proxy (docs/settlement.md, "Permit2"). Payers are fresh keys that approve Permit2
//! themselves: the shared payers 0–3 never get a Permit2 allowance (the interop tests rely on it).
//! Tests here run one at a time: they compare balances and block numbers, and crash a worker.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::{replay::*, *};
use facilitator::{
    queue::SettlementMessage,
    store::State,
    worker::{Step, Worker},
};
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The answer given to a Permit2 payment whose nonce is used (or whose success was answered).
fn invalid_nonce() -> (Value, Value, Value) {
    (json!(false), json!("permit2_invalid_nonce"), json!(""))
}

/// The transaction named by a success: mined, successful, sent by a lane to the exact proxy.
async fn assert_through_the_proxy(hash: &str) {
    assert_through_the_proxy_within(hash, 150_000).await
}

/// [`assert_through_the_proxy`], signed within `cap` (a `settleWithPermit` gets the larger cap).
async fn assert_through_the_proxy_within(hash: &str, cap: u64) {
    let mined = receipt(hash.parse().unwrap())
        .await
        .unwrap_or_else(|| panic!("{hash} is not mined"));
    assert!(mined.status(), "{mined:?}");
    assert_eq!(mined.to, Some(EXACT_PERMIT2_PROXY), "{mined:?}");
    println!(
        "{hash}: {} gas through the exact Permit2 proxy",
        mined.gas_used
    );
    // Signed with the estimate and a fifth more: room for that under `maxGas`'s default
    // (150,000), with no cap in the way (docs/settlement.md, "Permit2").
    assert!(mined.gas_used * 6 / 5 <= cap, "{mined:?}");
    assert!(
        stack().lanes.iter().any(|l| l.address == mined.from),
        "sent by {}, not by a KMS lane",
        mined.from
    );
}

#[tokio::test]
async fn a_permit2_payment_settles_once_through_the_proxy_and_moves_exactly_the_amount() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::new(approved_payer().await).sign();
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    let before = permit_balances(&payment).await;

    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["network"], NETWORK);
    assert!(answer["payer"]
        .as_str()
        .unwrap()
        .eq_ignore_ascii_case(&payment.from.to_string()));
    let hash = answer["transaction"].as_str().unwrap().to_owned();
    assert_through_the_proxy(&hash).await;
    moved_once(before, permit_balances(&payment).await, payment.permitted);

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled);
    assert_eq!(record.target, Some(EXACT_PERMIT2_PROXY));
    assert_eq!(format!("{:#x}", record.tx_hash.unwrap()), hash);

    // Settling again is not a second success (DESIGN I2), and nothing moves.
    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(outcome(&again), invalid_nonce(), "{again}");
    moved_once(before, permit_balances(&payment).await, payment.permitted);
}

#[tokio::test]
async fn the_same_permit2_payment_settled_twice_at_once_succeeds_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::new(approved_payer().await).sign();
    let before = permit_balances(&payment).await;

    let body = payment.body();
    let (a, b) = tokio::join!(settle_to_the_end(&body), settle_to_the_end(&body));
    let successes: Vec<&Value> = [&a, &b]
        .into_iter()
        .filter(|answer| answer["success"] == true)
        .collect();
    assert_eq!(successes.len(), 1, "{a} {b}");
    assert_through_the_proxy(successes[0]["transaction"].as_str().unwrap()).await;
    let other = if a["success"] == true { &b } else { &a };
    assert_eq!(outcome(other), invalid_nonce(), "{other}");
    moved_once(before, permit_balances(&payment).await, payment.permitted);
}

#[tokio::test]
async fn a_second_permit_under_the_same_nonce_is_never_told_success() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payer = approved_payer().await;

    // One after the other: the second permit finds the first's record (another digest).
    let first = Permit2Builder::new(payer.clone()).sign();
    let second = first.clone().edit(|p| p.deadline += 60).sign();
    assert_eq!(
        first.record_id(),
        second.record_id(),
        "the same Permit2 nonce"
    );
    let before = permit_balances(&first).await;
    let answer = settle_to_the_end(&first.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    let answer = settle_to_the_end(&second.body()).await;
    assert_eq!(outcome(&answer), invalid_nonce(), "{answer}");
    moved_once(before, permit_balances(&first).await, first.permitted);

    // At once: whichever is recorded first is the payment; the other is never told success.
    let first = Permit2Builder::new(payer).sign();
    let second = first.clone().edit(|p| p.valid_after -= 1).sign();
    let before = permit_balances(&first).await;
    let bodies = (first.body(), second.body());
    let (a, b) = tokio::join!(settle_to_the_end(&bodies.0), settle_to_the_end(&bodies.1));
    let successes = [&a, &b]
        .into_iter()
        .filter(|answer| answer["success"] == true)
        .count();
    assert_eq!(successes, 1, "{a} {b}");
    let loser = if a["success"] == true { &b } else { &a };
    assert_eq!(outcome(loser), invalid_nonce(), "{loser}");
    moved_once(before, permit_balances(&first).await, first.permitted);
}

#[tokio::test]
async fn a_permit2_nonce_used_on_chain_is_refused_with_nothing_recorded_or_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let payment = Permit2Builder::new(approved_payer().await).sign();
    // Someone else settles it through the proxy first (anyone may call the exact proxy).
    send_from_anvil_account(
        s.deployer.address,
        EXACT_PERMIT2_PROXY,
        payment.settle_calldata(),
    )
    .await;
    let before = permit_balances(&payment).await;
    let block = block_number().await;

    let answer = settle(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(outcome(&answer.json), invalid_nonce(), "{:?}", answer.json);
    // Without an event to attribute the use by, no record is made (docs/settlement.md).
    assert_nothing_recorded_or_sent(&payment, before, block).await;
}

#[tokio::test]
async fn a_payer_without_a_permit2_allowance_is_refused_with_nothing_recorded_or_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A fresh payer holding the token, that never approved Permit2.
    let payment = Permit2Builder::new(permit2_payer(U256::ZERO).await).sign();
    let (before, block) = (permit_balances(&payment).await, block_number().await);
    let answer = settle(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(
        outcome(&answer.json),
        (json!(false), json!("permit2_allowance_required"), json!("")),
        "{:?}",
        answer.json
    );
    assert_nothing_recorded_or_sent(&payment, before, block).await;
}

// ---- a worker crash at each step, then replay: settled exactly once ----

/// Records a Permit2 payment, crashes the worker after `step`, then runs replay until the record
/// is final: it must be settled once through the proxy, and `/settle` then answers its success.
async fn crash_then_replay_settles_once(step: Step) {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::new(approved_payer().await).sign();
    let before = permit_balances(&payment).await;
    let id = record_permit2_payment(&payment).await;

    crash_worker_after(step, &id).await;
    let left = payment_record(&id).await;
    match step {
        Step::Signed => assert_eq!(left.state, State::Queued, "nothing written: {left:?}"),
        _ => assert_eq!(left.state, State::Signed, "{left:?}"),
    }

    // Then the payer's resource server asks: the record answers, with the same transaction.
    let (hash, _) = replay_until_settled_once(&id, &payment, before, payment.permitted).await;
    assert_through_the_proxy(&hash).await;
}

#[tokio::test]
async fn crash_after_signing_then_replay_settles_a_permit2_payment_once() {
    crash_then_replay_settles_once(Step::Signed).await;
}

#[tokio::test]
async fn crash_after_the_write_ahead_then_replay_settles_a_permit2_payment_once() {
    crash_then_replay_settles_once(Step::WrittenAhead).await;
}

#[tokio::test]
async fn crash_after_the_broadcast_then_replay_settles_a_permit2_payment_once() {
    crash_then_replay_settles_once(Step::Broadcast).await;
}

/// A Permit2 settlement that would use more gas than the network's cap fails in Permit2's own
/// words (`permit2_simulation_failed`, as verify would say it), before any lane nonce is taken.
#[tokio::test]
async fn a_permit2_settlement_over_the_gas_cap_fails_in_permit2s_words_and_spends_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The proxy call uses about 84 thousand gas here; a cap of 30 000 makes it too costly.
    let mut config = config();
    config.networks[0].gas_caps.eoa = 30_000;
    let payment = Permit2Builder::new(approved_payer().await).sign();
    let before = permit_balances(&payment).await;
    let id = record_permit2_payment(&payment).await;
    let (lanes, block) = (lanes_table().await, block_number().await);

    let message = SettlementMessage {
        id: id.clone(),
        replace: None,
        created: None,
        simulated: None,
    };
    Worker::from_config(&config, &aws().await)
        .process(&message)
        .await
        .unwrap();
    let failed = payment_record(&id).await;
    println!("over the cap: {:?} {:?}", failed.reason, failed.message);
    assert_eq!(failed.state, State::Failed, "{failed:?}");
    assert_eq!(
        failed.reason,
        Some(facilitator::protocol::Reason::Permit2SimulationFailed)
    );
    assert!(failed.raw_tx.is_none(), "nothing was signed");
    assert_eq!(lanes_table().await, lanes, "no lane nonce was taken");
    assert_eq!(block_number().await, block, "nothing was sent");
    assert_eq!(permit_balances(&payment).await, before);
}

// ---- the eip2612GasSponsoring extension ----

#[tokio::test]
async fn a_payer_without_an_allowance_settles_once_with_a_sponsoring_permit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::new(permit2_payer(U256::ZERO).await)
        .sign()
        .sponsored(|_| {});
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    let before = permit_balances(&payment).await;

    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    let hash = answer["transaction"].as_str().unwrap().to_owned();
    assert_through_the_proxy_within(&hash, 300_000).await;
    moved_once(before, permit_balances(&payment).await, payment.permitted);
    // The permit gave Permit2 exactly the amount, and the transfer used all of it.
    assert_eq!(permit2_allowance(payment.from).await, U256::ZERO);

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled);
    assert_eq!(record.target, Some(EXACT_PERMIT2_PROXY));
    assert_eq!(
        record.calldata[..4],
        alloy::primitives::keccak256(
            "settleWithPermit((uint256,uint256,bytes32,bytes32,uint8),((address,uint256),uint256,uint256),address,(address,uint256),bytes)"
        )[..4],
        "the proxy's settleWithPermit"
    );

    // Again, with the same permit or without it: never a second success, nothing moves.
    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(outcome(&again), invalid_nonce(), "{again}");
    let mut bare = payment.clone();
    bare.sponsor = None;
    let again = settle_to_the_end(&bare.body()).await;
    assert_eq!(outcome(&again), invalid_nonce(), "{again}");
    moved_once(before, permit_balances(&payment).await, payment.permitted);
}

#[tokio::test]
async fn a_bad_sponsoring_permit_is_refused_with_nothing_recorded_or_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payer = permit2_payer(U256::ZERO).await;
    let stranger = alloy::primitives::Address::repeat_byte(0x77);
    let cases: [(&str, SponsorEdit); 3] = [
        (
            "eip2612_spender_not_permit2",
            Box::new(|s| s.spender = EXACT_PERMIT2_PROXY),
        ),
        (
            "eip2612_deadline_expired",
            Box::new(|s| s.deadline = now() - 1),
        ),
        (
            "eip2612_from_mismatch",
            Box::new(move |s| s.from = stranger),
        ),
    ];
    for (expected, edit) in cases {
        let payment = Permit2Builder::new(payer.clone()).sign().sponsored(edit);
        let (before, block) = (permit_balances(&payment).await, block_number().await);
        let answer = settle(&payment.body()).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        assert_eq!(
            outcome(&answer.json),
            (json!(false), json!(expected), json!("")),
            "{:?}",
            answer.json
        );
        assert_nothing_recorded_or_sent(&payment, before, block).await;
        assert_eq!(permit2_allowance(payment.from).await, U256::ZERO);
    }
}
