//! The `upto` scheme's local checks and what a settlement of it is built from, on payloads signed
//! here with a test key: the witness's facilitator, the charge against the signed maximum, and
//! the charge bound into the record's digest and the proxy's calldata.

use alloy::{
    primitives::{address, Address, U256},
    sol_types::SolCall,
};
use serde_json::{json, Value};

use super::{eip712, payload::Permit2Payment, Permit2Checked};
use crate::{
    evm::{
        abi::{IX402UptoPermit2Proxy, EXACT_PERMIT2_PROXY, UPTO_PERMIT2_PROXY},
        test_keys::{address_of, key, offline_scheme, sign_digest},
        ExactEvm,
    },
    protocol::{parse_request, Payment, Reason},
};

const NOW: u64 = 1_800_000_000;
const TOKEN: Address = address!("0x2612261226122612261226122612261226122612");
const PAYEE: Address = address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc");
const OURS: Address = address!("0x8E872a02C297bF522313d36e9d00fC6b2FF4Ff13");
const CHAIN_ID: u64 = 84532;
const MAXIMUM: u64 = 1_000_000;

fn scheme() -> ExactEvm {
    offline_scheme(CHAIN_ID, vec![TOKEN]).with_upto(Some(OURS))
}

/// An `upto` payment of at most [`MAXIMUM`] to PAYEE, for `facilitator`, whose requirements ask
/// `amount` (the maximum at /verify, the charge at /settle), signed by the payer.
fn payment(facilitator: Address, amount: u64) -> Payment {
    let requirements = |amount: u64| {
        json!({"scheme":"upto","network":"eip155:84532","amount":amount.to_string(),
            "asset":TOKEN,"payTo":PAYEE,"maxTimeoutSeconds":60,
            "extra":{"facilitatorAddress":facilitator}})
    };
    let authorization = json!({"from":address_of(&key(0x11)),
        "permitted":{"token":TOKEN,"amount":MAXIMUM.to_string()},
        "spender":UPTO_PERMIT2_PROXY,"nonce":"77","deadline":(NOW + 60).to_string(),
        "witness":{"to":PAYEE,"facilitator":facilitator,"validAfter":(NOW - 600).to_string()}});
    let body = |signature: &str| -> Payment {
        let body: Value = json!({"x402Version":2,"paymentPayload":{"x402Version":2,
            "accepted":requirements(MAXIMUM),
            "payload":{"signature":signature,"permit2Authorization":authorization}},
            "paymentRequirements":requirements(amount)});
        parse_request(&serde_json::to_vec(&body).unwrap()).unwrap()
    };
    let typed = Permit2Payment::parse_upto(&body("0x"), CHAIN_ID).unwrap();
    let signature = sign_digest(eip712::signing_digest(&typed), &key(0x11)).to_string();
    body(&signature)
}

fn reason_at_verify(payment: &Payment) -> Option<Reason> {
    scheme().check_permit2(payment, NOW).err().map(|r| r.reason)
}

fn settled(charge: u64) -> Permit2Checked {
    scheme()
        .check_permit2_terms(&payment(OURS, charge))
        .unwrap()
}

#[test]
fn an_upto_payment_for_our_signer_passes_every_local_check() {
    let checked = scheme()
        .check_permit2(&payment(OURS, MAXIMUM), NOW)
        .unwrap();
    assert!(checked.payment.is_upto());
    assert_eq!(checked.payment.proxy(), UPTO_PERMIT2_PROXY);
    assert_eq!(checked.payment.authorization.facilitator, Some(OURS));
}

#[test]
fn a_witness_naming_another_facilitator_is_upto_facilitator_mismatch() {
    let other = address!("0xC72934d420d3cbCB2D4Bb781cCB68D91e837e9a3");
    assert_eq!(
        reason_at_verify(&payment(other, MAXIMUM)),
        Some(Reason::UptoFacilitatorMismatch)
    );
    // A network that serves no upto has no signer for it.
    let unserved = offline_scheme(CHAIN_ID, vec![TOKEN]);
    let refused = unserved
        .check_permit2(&payment(OURS, MAXIMUM), NOW)
        .unwrap_err();
    assert_eq!(refused.reason, Reason::UptoFacilitatorMismatch);
}

#[test]
fn at_verify_the_requirements_must_ask_the_signed_maximum() {
    assert_eq!(
        reason_at_verify(&payment(OURS, MAXIMUM - 1)),
        Some(Reason::Permit2AmountMismatch)
    );
}

#[test]
fn at_settle_the_charge_may_be_anything_up_to_the_maximum() {
    for charge in [0, 1, MAXIMUM / 3, MAXIMUM] {
        assert_eq!(settled(charge).transfer().value, U256::from(charge));
    }
    let over = scheme()
        .check_permit2_terms(&payment(OURS, MAXIMUM + 1))
        .unwrap_err();
    assert_eq!(over.reason, Reason::UptoSettlementExceedsAmount);
    assert_eq!(
        over.reason.as_str(),
        "invalid_upto_evm_payload_settlement_exceeds_amount"
    );
}

#[test]
fn the_charge_is_part_of_the_payments_identity_and_of_the_proxys_call() {
    let (third, half) = (settled(MAXIMUM / 3), settled(MAXIMUM / 2));
    assert_ne!(third.digest("eip155:84532"), half.digest("eip155:84532"));
    assert_eq!(
        third.digest("eip155:84532"),
        settled(MAXIMUM / 3).digest("eip155:84532")
    );
    let call = IX402UptoPermit2Proxy::settleCall::abi_decode(&third.settle_calldata()).unwrap();
    assert_eq!(call.amount, U256::from(MAXIMUM / 3));
    assert_eq!(call.permit.permitted.amount, U256::from(MAXIMUM));
    assert_eq!(call.witness.facilitator, OURS);
}

#[test]
fn the_upto_payload_is_told_apart_by_its_witness_and_scheme() {
    // An exact-shaped payload (no facilitator) under upto is not an upto payload.
    let mut exact_shaped = payment(OURS, MAXIMUM);
    exact_shaped.payload["permit2Authorization"]["witness"]
        .as_object_mut()
        .unwrap()
        .remove("facilitator");
    let refused = Permit2Payment::parse_upto(&exact_shaped, CHAIN_ID).unwrap_err();
    assert_eq!(refused.reason, Reason::UnsupportedPayloadType);
    // A facilitator written into an exact payment's witness is not what an exact payer signs.
    let mut as_exact = payment(OURS, MAXIMUM);
    as_exact.accepted_scheme = "exact".into();
    as_exact.requirements.scheme = "exact".into();
    let typed = Permit2Payment::parse(&as_exact, CHAIN_ID).unwrap();
    assert_eq!(typed.authorization.facilitator, None);
    assert_eq!(typed.proxy(), EXACT_PERMIT2_PROXY);
    // Under upto, the payload must say upto too.
    let mut mixed = payment(OURS, MAXIMUM);
    mixed.accepted_scheme = "exact".into();
    let refused = Permit2Payment::parse_upto(&mixed, CHAIN_ID).unwrap_err();
    assert_eq!(refused.reason, Reason::UptoInvalidScheme);
    let mut elsewhere = payment(OURS, MAXIMUM);
    elsewhere.accepted_network = "eip155:8453".into();
    let refused = Permit2Payment::parse_upto(&elsewhere, CHAIN_ID).unwrap_err();
    assert_eq!(refused.reason, Reason::UptoNetworkMismatch);
}
