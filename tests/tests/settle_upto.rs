//! `POST /settle` for `upto` payments on the local stack: the resource server sends the actual
//! charge as the requirements' `amount`; the facilitator transfers exactly that through the upto
//! Permit2 proxy, from the KMS lane whose address the payer's witness names (docs/protocol-choices.md,
//! "upto"). One permit settles once, whatever amounts its settles ask for, one after the other or
//! at once; every refusal records and sends nothing. Tests run one at a time: they compare balances
//! and block numbers.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::{replay::*, *};
use facilitator::{
    store::{LaneState, State},
    worker::Step,
};
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn refused(reason: &str) -> (Value, Value, Value) {
    (json!(false), json!(reason), json!(""))
}

/// A third of a token: what the tests charge of the 1-token maximum.
fn a_third() -> U256 {
    one_permit_token() / U256::from(3)
}

/// The success's transaction: mined, successful, to the upto proxy, sent by the upto lane.
async fn assert_settled_by_the_upto_lane(hash: &str) {
    let mined = receipt(hash.parse().unwrap())
        .await
        .unwrap_or_else(|| panic!("{hash} is not mined"));
    assert!(mined.status(), "{mined:?}");
    assert_eq!(mined.to, Some(UPTO_PERMIT2_PROXY), "{mined:?}");
    assert_eq!(mined.from, upto_facilitator(), "sent by the witness's lane");
    println!("{hash}: {} gas through the upto proxy", mined.gas_used);
}

#[tokio::test]
async fn an_upto_payment_settled_below_its_maximum_moves_exactly_the_charge_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::upto(approved_payer().await).sign();
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    let before = permit_balances(&payment).await;

    let charged = payment.clone().charging(a_third());
    let answer = settle_to_the_end(&charged.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["amount"], a_third().to_string(), "{answer}");
    assert_eq!(answer["network"], NETWORK);
    let hash = answer["transaction"].as_str().unwrap().to_owned();
    assert_settled_by_the_upto_lane(&hash).await;
    moved_once(before, permit_balances(&payment).await, a_third());

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled);
    assert_eq!(record.target, Some(UPTO_PERMIT2_PROXY));
    assert_eq!(record.value, a_third(), "the record holds the charge");
    let upto_lane = stack()
        .lanes
        .iter()
        .find(|l| l.address == upto_facilitator())
        .unwrap();
    assert_eq!(record.lane, upto_lane.key_id);

    // The same settle again is not a second success (DESIGN I2); nothing moves.
    let again = settle_to_the_end(&charged.body()).await;
    assert_eq!(outcome(&again), refused("permit2_invalid_nonce"), "{again}");
    // Nor is the same permit charged another amount: the record is the first charge's.
    let more = payment.clone().charging(a_third() * U256::from(2));
    let answer = settle_to_the_end(&more.body()).await;
    assert_eq!(
        outcome(&answer),
        refused("permit2_invalid_nonce"),
        "{answer}"
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains(&a_third().to_string()),
        "{answer}"
    );
    moved_once(before, permit_balances(&payment).await, a_third());
}

#[tokio::test]
async fn the_same_permit_settled_at_once_for_the_same_or_different_amounts_pays_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    for amounts in [[a_third(), a_third()], [a_third(), one_permit_token()]] {
        let payment = Permit2Builder::upto(approved_payer().await).sign();
        let before = permit_balances(&payment).await;
        let bodies = amounts.map(|a| payment.clone().charging(a).body());
        let (a, b) = tokio::join!(settle_to_the_end(&bodies[0]), settle_to_the_end(&bodies[1]));
        let winners: Vec<usize> = [&a, &b]
            .iter()
            .enumerate()
            .filter(|(_, answer)| answer["success"] == true)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "{a} {b}");
        let (winner, loser) = match winners[0] {
            0 => (&a, &b),
            _ => (&b, &a),
        };
        assert_eq!(winner["amount"], amounts[winners[0]].to_string());
        assert_settled_by_the_upto_lane(winner["transaction"].as_str().unwrap()).await;
        assert_eq!(outcome(loser), refused("permit2_invalid_nonce"), "{loser}");
        moved_once(before, permit_balances(&payment).await, amounts[winners[0]]);
    }
}

#[tokio::test]
async fn a_zero_charge_succeeds_with_no_transaction_and_leaves_the_permit_unused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::upto(approved_payer().await).sign();
    let (before, block) = (permit_balances(&payment).await, block_number().await);

    let zero = payment.clone().charging(U256::ZERO);
    let answer = settle(&zero.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(
        (
            &answer.json["success"],
            &answer.json["transaction"],
            &answer.json["amount"]
        ),
        (&json!(true), &json!(""), &json!("0")),
        "{:?}",
        answer.json
    );
    assert_nothing_recorded_or_sent(&payment, before, block).await;

    // Nothing was consumed: the permit can still be charged, once.
    let charged = payment.clone().charging(a_third());
    let answer = settle_to_the_end(&charged.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    moved_once(before, permit_balances(&payment).await, a_third());
    // Once charged, a zero settle of it is no longer a success.
    let answer = settle(&zero.body()).await.json;
    assert_eq!(
        outcome(&answer),
        refused("permit2_invalid_nonce"),
        "{answer}"
    );
    moved_once(before, permit_balances(&payment).await, a_third());
}

#[tokio::test]
async fn refused_upto_settlements_record_and_send_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payer = approved_payer().await;
    let other_lane = stack()
        .lanes
        .iter()
        .map(|l| l.address)
        .find(|a| *a != upto_facilitator())
        .unwrap();
    let cases: Vec<(&str, Permit2Builder, &str)> = vec![
        (
            "a charge over the signed maximum",
            Permit2Builder::upto(payer.clone())
                .sign()
                .charging(one_permit_token() + U256::from(1)),
            "invalid_upto_evm_payload_settlement_exceeds_amount",
        ),
        (
            "the exact proxy as spender",
            Permit2Builder::upto(payer.clone())
                .edit(|p| p.spender = EXACT_PERMIT2_PROXY)
                .sign()
                .charging(a_third()),
            "invalid_permit2_spender",
        ),
        (
            "a witness paying someone else",
            Permit2Builder::upto(payer.clone())
                .edit(|p| p.to = stack().payers[3].address)
                .sign()
                .charging(a_third()),
            "invalid_permit2_recipient_mismatch",
        ),
        (
            "a witness naming another of our lanes",
            Permit2Builder::upto(payer.clone())
                .edit(|p| p.facilitator = Some(other_lane))
                .sign()
                .charging(a_third()),
            "upto_facilitator_mismatch",
        ),
        (
            "an expired deadline",
            Permit2Builder::upto(payer.clone())
                .edit(|p| p.deadline = now() + 3)
                .sign()
                .charging(a_third()),
            "permit2_deadline_expired",
        ),
    ];
    for (what, payment, reason) in cases {
        let (before, block) = (permit_balances(&payment).await, block_number().await);
        let answer = settle(&payment.body()).await;
        assert_eq!(answer.status, 200, "{what}: {:?}", answer.json);
        assert_eq!(
            outcome(&answer.json),
            refused(reason),
            "{what}: {:?}",
            answer.json
        );
        assert!(answer.json.get("amount").is_none(), "{what}: no charge");
        assert_nothing_recorded_or_sent(&payment, before, block).await;
    }
}

#[tokio::test]
async fn a_short_allowance_is_refused_with_nothing_recorded_or_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Enough for the charge, not the maximum: the charge is what is simulated and would move,
    // so it is the charge the allowance must cover; below it, refused.
    let payer = permit2_payer(a_third() - U256::from(1)).await;
    let payment = Permit2Builder::upto(payer).sign().charging(a_third());
    let (before, block) = (permit_balances(&payment).await, block_number().await);
    let answer = settle(&payment.body()).await.json;
    assert_eq!(
        outcome(&answer),
        refused("permit2_allowance_required"),
        "{answer}"
    );
    assert_nothing_recorded_or_sent(&payment, before, block).await;
}

#[tokio::test]
async fn a_permit2_nonce_used_elsewhere_is_refused_with_nothing_recorded_or_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::upto(approved_payer().await)
        .sign()
        .charging(a_third());
    // The same Permit2 nonce, spent by an exact payment someone settled through the exact proxy.
    use_up_nonce_with_exact(&payment).await;
    let (before, block) = (permit_balances(&payment).await, block_number().await);
    let answer = settle(&payment.body()).await.json;
    assert_eq!(
        outcome(&answer),
        refused("permit2_invalid_nonce"),
        "{answer}"
    );
    assert_nothing_recorded_or_sent(&payment, before, block).await;
}

/// Records an `upto` payment charged a third of its maximum, crashes the worker after `step`, then
/// runs replay until the record is final: settled once, for the charge, by the witness's lane;
/// `/settle` then answers from the record with the same transaction and the charge.
async fn crash_then_replay_settles_the_charge_once(step: Step) {
    let _one = ONE_AT_A_TIME.lock().await;
    let payment = Permit2Builder::upto(approved_payer().await)
        .sign()
        .charging(a_third());
    let before = permit_balances(&payment).await;
    let id = record_permit2_payment(&payment).await;
    crash_worker_after(step, &id).await;
    assert_eq!(payment_record(&id).await.state, State::Signed);
    let (hash, answer) = replay_until_settled_once(&id, &payment, before, a_third()).await;
    assert_settled_by_the_upto_lane(&hash).await;
    assert_eq!(answer["amount"], a_third().to_string());
}

#[tokio::test]
async fn crash_after_the_write_ahead_then_replay_settles_an_upto_charge_once() {
    crash_then_replay_settles_the_charge_once(Step::WrittenAhead).await;
}

#[tokio::test]
async fn crash_after_the_broadcast_then_replay_settles_an_upto_charge_once() {
    crash_then_replay_settles_the_charge_once(Step::Broadcast).await;
}

/// Only the lane the witness names can settle an upto payment: while that lane is draining, a
/// new upto payment is refused with nothing recorded or sent, not put on another lane (whose call
/// the upto proxy would refuse); active again, it settles there.
#[tokio::test]
async fn an_upto_payment_waits_for_no_other_lane_than_its_own() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_server, base) = start_local_server(&[("X402_LANE_STATE_TTL_MS", "0")]).await;
    let upto_lane = stack()
        .lanes
        .iter()
        .find(|l| l.address == upto_facilitator())
        .unwrap()
        .key_id
        .clone();
    let store = store().await;
    let payment = Permit2Builder::upto(approved_payer().await)
        .sign()
        .charging(a_third());
    let (before, block) = (permit_balances(&payment).await, block_number().await);
    assert!(store
        .set_lane_state(&upto_lane, &[LaneState::Active], LaneState::Draining)
        .await
        .unwrap());
    let answer = post_json(&base, "/settle", &payment.body()).await.json;
    assert!(store
        .set_lane_state(&upto_lane, &[LaneState::Draining], LaneState::Active)
        .await
        .unwrap());
    assert_eq!(
        outcome(&answer),
        refused("unexpected_settle_error"),
        "{answer}"
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not active"),
        "{answer}"
    );
    assert_nothing_recorded_or_sent(&payment, before, block).await;

    let answer = post_json(&base, "/settle", &payment.body()).await.json;
    assert_eq!(answer["success"], true, "{answer}");
    assert_settled_by_the_upto_lane(answer["transaction"].as_str().unwrap()).await;
    moved_once(before, permit_balances(&payment).await, a_third());
}
