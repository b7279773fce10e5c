//! `POST /verify` and `GET /supported` for `upto` payments on the local stack: Permit2 payloads
//! signed for the x402 upto Permit2 proxy at its canonical address, whose witness binds the
//! facilitator that may settle them (docs/protocol-choices.md, "upto"). Each refusal asserts the
//! reference's reason string, and that verify sent nothing. `/settle` is in `settle_upto.rs`.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::*;
use serde_json::Value;

/// [`permit2_reason`], after which nothing was recorded (the tests of this binary run side by side,
/// so the block number is not theirs to compare; settle_upto.rs checks that refusals send nothing).
async fn reason(payment: &Permit2Builder) -> Option<String> {
    let reason = permit2_reason(payment).await;
    assert!(find_payment_record(&payment.record_id()).await.is_none());
    reason
}

#[tokio::test]
async fn supported_advertises_upto_with_the_lane_that_settles_it() {
    let answer = get("/supported").await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let upto: Vec<&Value> = answer.json["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["scheme"] == "upto")
        .collect();
    assert_eq!(upto.len(), 1, "{:?}", answer.json);
    assert_eq!(upto[0]["x402Version"], 2);
    assert_eq!(upto[0]["network"], NETWORK);
    let advertised = &upto[0]["extra"]["facilitatorAddress"];
    assert!(same_address(advertised, upto_facilitator()), "{advertised}");
    assert!(
        stack()
            .lanes
            .iter()
            .any(|l| same_address(advertised, l.address)),
        "a lane's address"
    );
}

#[tokio::test]
async fn an_upto_payment_at_its_maximum_is_valid_on_every_front_end() {
    let payment = Permit2Builder::upto(approved_payer().await).sign();
    for (front_end, url) in front_ends() {
        let answer = post_json(&url, "/verify", &payment.body()).await;
        assert_eq!(answer.status, 200, "{front_end}: {:?}", answer.json);
        assert_eq!(
            answer.json["isValid"], true,
            "{front_end}: {:?}",
            answer.json
        );
        assert!(
            same_address(&answer.json["payer"], payment.from),
            "{front_end}"
        );
    }
}

#[tokio::test]
async fn a_spender_other_than_the_upto_proxy_is_invalid_permit2_spender() {
    let payer = approved_payer().await;
    for spender in [EXACT_PERMIT2_PROXY, stack().payee.address] {
        let payment = Permit2Builder::upto(payer.clone())
            .edit(|p| p.spender = spender)
            .sign();
        assert_eq!(
            reason(&payment).await.as_deref(),
            Some("invalid_permit2_spender")
        );
    }
}

#[tokio::test]
async fn a_witness_paying_someone_else_is_invalid_permit2_recipient_mismatch() {
    let payment = Permit2Builder::upto(approved_payer().await)
        .edit(|p| p.to = stack().payers[3].address)
        .sign();
    assert_eq!(
        reason(&payment).await.as_deref(),
        Some("invalid_permit2_recipient_mismatch")
    );
}

#[tokio::test]
async fn a_witness_naming_another_facilitator_is_upto_facilitator_mismatch() {
    let payer = approved_payer().await;
    // Someone else's address, and one of our own lanes that is not the advertised upto signer.
    let other_lane = stack()
        .lanes
        .iter()
        .map(|l| l.address)
        .find(|a| *a != upto_facilitator())
        .expect("the stack has two lanes");
    for facilitator in [stack().payee.address, other_lane] {
        let payment = Permit2Builder::upto(payer.clone())
            .edit(|p| p.facilitator = Some(facilitator))
            .sign();
        assert_eq!(
            reason(&payment).await.as_deref(),
            Some("upto_facilitator_mismatch"),
            "{facilitator}"
        );
    }
}

#[tokio::test]
async fn an_upto_payload_without_a_facilitator_is_unsupported_payload_type() {
    // An exact-shaped Permit2 payload under the upto scheme.
    let mut payment = Permit2Builder::upto(approved_payer().await).sign();
    payment.facilitator = None;
    let mut body = payment.body();
    body["paymentPayload"]["accepted"]["scheme"] = "upto".into();
    body["paymentRequirements"]["scheme"] = "upto".into();
    let answer = verify(&body).await;
    assert_eq!(
        answer.json["invalidReason"], "unsupported_payload_type",
        "{:?}",
        answer.json
    );
}

#[tokio::test]
async fn an_expired_deadline_is_permit2_deadline_expired() {
    let payment = Permit2Builder::upto(approved_payer().await)
        .edit(|p| p.deadline = now() + 3)
        .sign();
    assert_eq!(
        reason(&payment).await.as_deref(),
        Some("permit2_deadline_expired")
    );
}

#[tokio::test]
async fn requirements_above_or_below_the_signed_maximum_are_permit2_amount_mismatch() {
    // At /verify the requirements' amount is the maximum, which the permit must equal.
    let payer = approved_payer().await;
    for amount in [one_permit_token() + U256::from(1), U256::from(1)] {
        let payment = Permit2Builder::upto(payer.clone())
            .edit(|p| p.amount = amount.to_string())
            .sign();
        assert_eq!(
            reason(&payment).await.as_deref(),
            Some("permit2_amount_mismatch"),
            "{amount}"
        );
    }
}

#[tokio::test]
async fn an_allowance_below_the_maximum_is_permit2_allowance_required() {
    let payer = permit2_payer(one_permit_token() - U256::from(1)).await;
    let payment = Permit2Builder::upto(payer).sign();
    assert_eq!(
        reason(&payment).await.as_deref(),
        Some("permit2_allowance_required")
    );
}

#[tokio::test]
async fn a_permit2_nonce_used_by_an_exact_payment_is_permit2_invalid_nonce() {
    // Permit2 has one nonce space per owner, whichever proxy spends it: an exact payment under
    // the same nonce, settled by someone else through the exact proxy, uses it up.
    let payment = Permit2Builder::upto(approved_payer().await).sign();
    use_up_nonce_with_exact(&payment).await;
    assert_eq!(
        reason(&payment).await.as_deref(),
        Some("permit2_invalid_nonce")
    );
}

#[tokio::test]
async fn a_signature_by_another_key_is_invalid_permit2_signature() {
    // Not refused locally (it could be a contract wallet's): the upto simulation, sent from the
    // facilitator, reverts with Permit2's InvalidSigner, as the node reports it.
    let payer = approved_payer().await;
    let payment = Permit2Builder::upto(alloy::signers::local::PrivateKeySigner::random())
        .edit(|p| p.from = payer.address())
        .sign();
    assert_eq!(
        reason(&payment).await.as_deref(),
        Some("invalid_permit2_signature")
    );
}
