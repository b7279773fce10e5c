//! `POST /verify` for `exact` payments through Permit2 (`permit2Authorization` payloads), against
//! the local stack: anvil with Permit2, the x402 exact Permit2 proxy and the EIP-2612 test token
//! at their addresses (infra/README.md, "The Permit2 contracts"). Each refusal asserts the
//! reference's reason string. `/settle` of these payments is tested in `settle_permit2.rs`.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::*;

#[tokio::test]
async fn a_permit2_payment_from_an_approved_payer_is_valid_on_every_front_end() {
    let payment = Permit2Builder::new(approved_payer().await).sign();
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
        assert!(answer.json.get("invalidReason").is_none(), "{front_end}");
    }
}

#[tokio::test]
async fn a_spender_other_than_the_exact_proxy_is_invalid_permit2_spender() {
    let payer = approved_payer().await;
    for spender in [UPTO_PERMIT2_PROXY, stack().payee.address] {
        let payment = Permit2Builder::new(payer.clone())
            .edit(|p| p.spender = spender)
            .sign();
        assert_eq!(
            permit2_reason(&payment).await.as_deref(),
            Some("invalid_permit2_spender")
        );
    }
}

#[tokio::test]
async fn a_witness_paying_someone_else_is_invalid_permit2_recipient_mismatch() {
    let payment = Permit2Builder::new(approved_payer().await)
        .edit(|p| p.to = stack().payers[3].address)
        .sign();
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("invalid_permit2_recipient_mismatch")
    );
}

#[tokio::test]
async fn an_expired_deadline_is_permit2_deadline_expired() {
    let payer = approved_payer().await;
    // Passed, and inside the 6 s the settlement needs to be mined.
    for deadline in [now() - 1, now() + 3] {
        let payment = Permit2Builder::new(payer.clone())
            .edit(|p| p.deadline = deadline)
            .sign();
        assert_eq!(
            permit2_reason(&payment).await.as_deref(),
            Some("permit2_deadline_expired")
        );
    }
}

#[tokio::test]
async fn a_valid_after_in_the_future_is_permit2_not_yet_valid() {
    let payment = Permit2Builder::new(approved_payer().await)
        .edit(|p| p.valid_after = now() + 120)
        .sign();
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("permit2_not_yet_valid")
    );
}

#[tokio::test]
async fn a_permitted_amount_other_than_the_price_is_permit2_amount_mismatch() {
    let payer = approved_payer().await;
    for permitted in [
        one_permit_token() - U256::from(1),
        one_permit_token() * U256::from(2),
    ] {
        let payment = Permit2Builder::new(payer.clone())
            .edit(|p| p.permitted = permitted)
            .sign();
        assert_eq!(
            permit2_reason(&payment).await.as_deref(),
            Some("permit2_amount_mismatch")
        );
    }
}

#[tokio::test]
async fn a_changed_field_after_signing_is_invalid_permit2_signature() {
    let payment = Permit2Builder::new(approved_payer().await)
        .sign()
        .edit(|p| p.deadline += 1);
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("invalid_permit2_signature")
    );
}

#[tokio::test]
async fn a_payer_without_a_permit2_allowance_is_permit2_allowance_required() {
    // The stack's payers hold the token but have never approved Permit2.
    let unapproved = Permit2Builder::from_payer(0).sign();
    assert_eq!(
        permit2_reason(&unapproved).await.as_deref(),
        Some("permit2_allowance_required")
    );
    // An allowance below the price is no better.
    let short = permit2_payer(one_permit_token() - U256::from(1)).await;
    let payment = Permit2Builder::new(short).sign();
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("permit2_allowance_required")
    );
}

#[tokio::test]
async fn a_payer_without_the_tokens_is_permit2_insufficient_balance() {
    let payment = Permit2Builder::new(approved_payer().await)
        .edit(|p| {
            p.permitted = one_permit_token() * U256::from(1001);
            p.amount = p.permitted.to_string();
        })
        .sign();
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("permit2_insufficient_balance")
    );
}

#[tokio::test]
async fn a_used_permit2_nonce_is_permit2_invalid_nonce() {
    let s = stack();
    let payment = Permit2Builder::new(approved_payer().await).sign();
    assert_eq!(permit2_reason(&payment).await, None);
    // Someone settles it through the proxy (anyone may call the exact proxy)...
    let before = token_balance(s.permit_token, s.payee.address).await;
    send_from_anvil_account(
        s.deployer.address,
        EXACT_PERMIT2_PROXY,
        payment.settle_calldata(),
    )
    .await;
    assert_eq!(
        token_balance(s.permit_token, s.payee.address).await - before,
        one_permit_token()
    );
    // ...and the same signed permit can never pay again.
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("permit2_invalid_nonce")
    );
}

#[tokio::test]
async fn a_malformed_permit2_payload_is_invalid_not_a_crash() {
    let payment = Permit2Builder::from_payer(1).sign();
    let mut bodies = Vec::new();
    for (field, value) in [
        ("nonce", serde_json::json!("-1")),
        ("deadline", serde_json::json!(12)),
        ("spender", serde_json::json!("0x1234")),
        ("permitted", serde_json::json!(null)),
        ("witness", serde_json::json!({"to": "nobody"})),
    ] {
        let mut body = payment.body();
        body["paymentPayload"]["payload"]["permit2Authorization"][field] = value;
        bodies.push((field, body));
    }
    for (field, body) in bodies {
        let answer = verify(&body).await;
        assert_eq!(answer.status, 200, "{field}: {:?}", answer.json);
        assert_eq!(answer.json["isValid"], false, "{field}");
        assert_eq!(
            answer.json["invalidReason"], "invalid_exact_evm_payload",
            "{field}"
        );
    }
}

// ---- the eip2612GasSponsoring extension ----

#[tokio::test]
async fn a_payer_without_an_allowance_with_a_sponsoring_permit_is_valid() {
    let payer = permit2_payer(U256::ZERO).await;
    let payment = Permit2Builder::new(payer).sign();
    assert_eq!(
        permit2_reason(&payment).await.as_deref(),
        Some("permit2_allowance_required")
    );
    let sponsored = payment.sponsored(|_| {});
    assert_eq!(permit2_reason(&sponsored).await, None);
    // Verification wrote nothing: the allowance is still none.
    assert_eq!(permit2_allowance(sponsored.from).await, U256::ZERO);
}

#[tokio::test]
async fn a_sponsoring_permit_is_refused_in_the_references_words() {
    let payer = permit2_payer(U256::ZERO).await;
    let payment = Permit2Builder::new(payer).sign();
    let stranger = alloy::primitives::Address::repeat_byte(0x77);
    let cases: [(&str, SponsorEdit); 5] = [
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
        (
            "eip2612_asset_mismatch",
            Box::new(move |s| s.asset = stranger),
        ),
        (
            "permit2_2612_amount_mismatch",
            Box::new(|s| s.amount = U256::MAX),
        ),
    ];
    for (expected, edit) in cases {
        let refused = payment.clone().sponsored(edit);
        assert_eq!(permit2_reason(&refused).await.as_deref(), Some(expected));
    }
    // A permit the token would reject (signed by another key) gives no allowance: the simulated
    // settleWithPermit fails, and the diagnosis is the allowance, as the reference's.
    let mut forged = payment.clone().sponsored(|_| {});
    let other = alloy::signers::local::PrivateKeySigner::random();
    forged.sponsor = forged.sponsor.map(|s| s.sign(&other));
    assert_eq!(
        permit2_reason(&forged).await.as_deref(),
        Some("permit2_allowance_required")
    );
    // A malformed extension is its format's fault; one without its fields is ignored.
    let mut body = payment.clone().sponsored(|_| {}).body();
    body["paymentPayload"]["extensions"]["eip2612GasSponsoring"]["info"]["signature"] =
        "0x12".into();
    let answer = verify(&body).await;
    assert_eq!(
        answer.json["invalidReason"], "invalid_eip2612_extension_format",
        "{:?}",
        answer.json
    );
    body["paymentPayload"]["extensions"]["eip2612GasSponsoring"]["info"]["amount"] = "ten".into();
    let answer = verify(&body).await;
    assert_eq!(
        answer.json["invalidReason"], "invalid_eip2612_extension_format",
        "{:?}",
        answer.json
    );
    body["paymentPayload"]["extensions"]["eip2612GasSponsoring"]["info"] =
        serde_json::json!({"description": "as the server declared it", "version": "1"});
    let answer = verify(&body).await;
    assert_eq!(
        answer.json["invalidReason"], "permit2_allowance_required",
        "{:?}",
        answer.json
    );
}
