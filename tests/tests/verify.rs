//! `POST /verify` and `GET /supported` over HTTP on the local base URL, against the real local
//! stack: anvil with the project's EIP-3009 token, moto for AWS.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use common::*;
use serde_json::{json, Value};

/// Tests that write to the chain hold this, so that the "changes nothing" test sees a quiet chain.
static CHAIN_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn same_address(a: &Value, b: alloy::primitives::Address) -> bool {
    a.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(&b.to_string()))
}

#[tokio::test]
async fn a_payment_signed_by_a_test_payer_is_valid() {
    let payment = PaymentBuilder::new(0).sign();
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
    assert!(same_address(&answer.json["payer"], payment.from));
    assert!(answer.json.get("invalidReason").is_none());
}

#[tokio::test]
async fn a_v1_payment_is_valid_too() {
    let payment = PaymentBuilder::new(1).sign();
    let answer = verify(&payment.body_v1()).await;
    assert_eq!(
        (answer.status, &answer.json["isValid"]),
        (200, &json!(true)),
        "{:?}",
        answer.json
    );
}

/// One bad input: what to send, and the status and reason it must get.
struct Bad {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    reason: &'static str,
    /// The payer the answer must name, when the input names one.
    payer: Option<alloy::primitives::Address>,
}

fn bad(name: &'static str, payment: &PaymentBuilder, reason: &'static str) -> Bad {
    Bad {
        name,
        body: serde_json::to_vec(&payment.body()).unwrap(),
        status: 200,
        reason,
        payer: Some(payment.from),
    }
}

fn bad_json(
    name: &'static str,
    body: Value,
    status: u16,
    reason: &'static str,
    payer: Option<alloy::primitives::Address>,
) -> Bad {
    Bad {
        name,
        body: serde_json::to_vec(&body).unwrap(),
        status,
        reason,
        payer,
    }
}

fn bad_inputs() -> Vec<Bad> {
    let s = stack();
    let ok = || PaymentBuilder::new(2);
    let t = now();
    let mut cases = vec![
        bad(
            "wrong recipient",
            &ok().edit(|p| p.to = s.payers[3].address).sign(),
            "invalid_exact_evm_recipient_mismatch",
        ),
        bad(
            "amount below",
            &ok().edit(|p| p.value = U256::from(999_999u64)).sign(),
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        bad(
            "amount above",
            &ok().edit(|p| p.value = U256::from(1_000_001u64)).sign(),
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        bad(
            "validBefore in the past",
            &ok().edit(|p| p.valid_before = t - 10).sign(),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        bad(
            "validBefore within 6 s",
            &ok().edit(|p| p.valid_before = t + 3).sign(),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        bad(
            "validAfter in the future",
            &ok().edit(|p| p.valid_after = t + 120).sign(),
            "invalid_exact_evm_payload_authorization_valid_after",
        ),
        bad(
            "signature by another key",
            &ok()
                .edit(|p| {
                    p.signer =
                        PrivateKeySigner::from_bytes(&s.payers[3].private_key.unwrap()).unwrap()
                })
                .sign(),
            "invalid_exact_evm_signature",
        ),
        bad(
            "a field changed after signing",
            &ok().sign().edit(|p| p.valid_before += 100),
            "invalid_exact_evm_signature",
        ),
        bad(
            "wrong chain id in the domain",
            &ok().edit(|p| p.domain_chain_id = 8453).sign(),
            "invalid_exact_evm_signature",
        ),
        bad(
            "asset that is not the token",
            &ok().edit(|p| p.asset = s.other_token).sign(),
            "invalid_payment_requirements",
        ),
        bad(
            "unknown network",
            &ok().edit(|p| p.network = "eip155:1".into()).sign(),
            "invalid_network",
        ),
        bad(
            "network with no RPC (Base mainnet)",
            &ok().edit(|p| p.network = "eip155:8453".into()).sign(),
            "invalid_network",
        ),
        bad(
            "unknown scheme",
            &ok().edit(|p| p.scheme = "deferred".into()).sign(),
            "unsupported_scheme",
        ),
        bad(
            "upto with an EIP-3009 payload (upto is Permit2 only)",
            &ok().edit(|p| p.scheme = "upto".into()).sign(),
            "unsupported_payload_type",
        ),
        bad(
            "payer without balance",
            &PaymentBuilder::with_signer(PrivateKeySigner::random()).sign(),
            "invalid_exact_evm_insufficient_balance",
        ),
        bad(
            "EIP-712 name that is not the token's",
            &ok().edit(|p| p.domain_name = "USD Coin".into()).sign(),
            "invalid_exact_evm_token_name_mismatch",
        ),
    ];

    let good = ok().sign();
    let payer = Some(good.from);
    let edited = |f: &dyn Fn(&mut Value)| {
        let mut body = good.body();
        f(&mut body);
        body
    };
    cases.extend([
        bad_json(
            "x402Version 3",
            edited(&|b| b["paymentPayload"]["x402Version"] = json!(3)),
            200,
            "invalid_x402_version",
            None,
        ),
        Bad {
            name: "malformed JSON",
            body: b"{\"x402Version\":2,\"paymentPayload\":{".to_vec(),
            status: 400,
            reason: "invalid_payload",
            payer: None,
        },
        Bad {
            name: "not JSON at all",
            body: b"hello".to_vec(),
            status: 400,
            reason: "invalid_payload",
            payer: None,
        },
        Bad {
            name: "empty body",
            body: Vec::new(),
            status: 400,
            reason: "invalid_payload",
            payer: None,
        },
        bad_json(
            "missing paymentRequirements",
            edited(&|b| {
                b.as_object_mut().unwrap().remove("paymentRequirements");
            }),
            400,
            "invalid_payment_requirements",
            None,
        ),
        bad_json(
            "missing paymentPayload",
            edited(&|b| {
                b.as_object_mut().unwrap().remove("paymentPayload");
            }),
            400,
            "invalid_payload",
            None,
        ),
        bad_json(
            "missing payTo",
            edited(&|b| {
                b["paymentRequirements"]
                    .as_object_mut()
                    .unwrap()
                    .remove("payTo");
            }),
            200,
            "invalid_payment_requirements",
            payer,
        ),
        bad_json(
            "missing authorization",
            edited(&|b| {
                b["paymentPayload"]["payload"]
                    .as_object_mut()
                    .unwrap()
                    .remove("authorization");
            }),
            200,
            "invalid_exact_evm_payload",
            None,
        ),
        bad_json(
            "missing nonce",
            edited(&|b| {
                b["paymentPayload"]["payload"]["authorization"]
                    .as_object_mut()
                    .unwrap()
                    .remove("nonce");
            }),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "missing signature",
            edited(&|b| {
                b["paymentPayload"]["payload"]
                    .as_object_mut()
                    .unwrap()
                    .remove("signature");
            }),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "non-decimal required amount",
            edited(&|b| b["paymentRequirements"]["amount"] = json!("1e6")),
            200,
            "invalid_payment_requirements",
            payer,
        ),
        bad_json(
            "required amount as a JSON number",
            edited(&|b| b["paymentRequirements"]["amount"] = json!(1000000)),
            200,
            "invalid_payment_requirements",
            payer,
        ),
        bad_json(
            "overflowing required amount",
            edited(&|b| b["paymentRequirements"]["amount"] = json!(format!("1{}", "0".repeat(78)))),
            200,
            "invalid_payment_requirements",
            payer,
        ),
        bad_json(
            "non-decimal value",
            edited(&|b| b["paymentPayload"]["payload"]["authorization"]["value"] = json!("12abc")),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "overflowing value",
            edited(&|b| {
                b["paymentPayload"]["payload"]["authorization"]["value"] =
                    json!(format!("{}0", U256::MAX))
            }),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "negative validBefore",
            edited(&|b| {
                b["paymentPayload"]["payload"]["authorization"]["validBefore"] = json!("-1")
            }),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "nonce of 2 bytes",
            edited(&|b| b["paymentPayload"]["payload"]["authorization"]["nonce"] = json!("0x1234")),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "nonce of 33 bytes",
            edited(&|b| {
                b["paymentPayload"]["payload"]["authorization"]["nonce"] =
                    json!(format!("0x{}", "ab".repeat(33)))
            }),
            200,
            "invalid_exact_evm_payload",
            payer,
        ),
        bad_json(
            "payTo that is not an address",
            edited(&|b| b["paymentRequirements"]["payTo"] = json!("alice")),
            200,
            "invalid_payment_requirements",
            payer,
        ),
        bad_json(
            "payload is a string",
            edited(&|b| b["paymentPayload"]["payload"] = json!("0xdeadbeef")),
            200,
            "invalid_exact_evm_payload",
            None,
        ),
        Bad {
            name: "body over the size limit",
            body: serde_json::to_vec(&edited(&|b| {
                b["paymentPayload"]["extensions"] = json!({"pad": "x".repeat(70 * 1024)})
            }))
            .unwrap(),
            status: 413,
            reason: "invalid_payload",
            payer: None,
        },
    ]);
    cases
}

#[tokio::test]
async fn every_bad_input_gets_its_exact_reason_and_changes_nothing() {
    let _quiet = CHAIN_WRITES.lock().await;
    let s = stack();
    let block_before = block_number().await;
    let tables_before = table_item_counts().await;
    let balances_before = (
        token_balance(s.token, s.payers[2].address).await,
        token_balance(s.token, s.payee.address).await,
    );

    let mut failures = Vec::new();
    for case in bad_inputs() {
        let answer = post_raw(&format!("{}/verify", base_url()), case.body).await;
        let reason = &answer.json["invalidReason"];
        let payer_ok = match case.payer {
            Some(payer) => same_address(&answer.json["payer"], payer),
            None => true,
        };
        if answer.status != case.status
            || reason != case.reason
            || answer.json["isValid"] != false
            || !payer_ok
        {
            failures.push(format!(
                "{}: expected {} {} payer {:?}, got {} {}",
                case.name, case.status, case.reason, case.payer, answer.status, answer.json
            ));
        }
        assert!(
            answer.status < 500,
            "{} produced a {}",
            case.name,
            answer.status
        );
    }
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );

    assert_eq!(
        block_number().await,
        block_before,
        "verify must not change the chain"
    );
    assert_eq!(
        table_item_counts().await,
        tables_before,
        "verify must not write to DynamoDB"
    );
    let balances_after = (
        token_balance(s.token, s.payers[2].address).await,
        token_balance(s.token, s.payee.address).await,
    );
    assert_eq!(balances_after, balances_before);
}

#[tokio::test]
async fn an_authorization_already_used_on_chain_is_refused() {
    let _writes = CHAIN_WRITES.lock().await;
    let s = stack();
    let payment = PaymentBuilder::new(3).sign();
    assert_eq!(verify(&payment.body()).await.json["isValid"], true);
    // Someone else (here the deployer) submits the authorization first.
    send_from_anvil_account(s.deployer.address, s.token, payment.transfer_calldata()).await;
    let block_after_use = block_number().await;
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["isValid"], false);
    assert_eq!(
        answer.json["invalidReason"], "invalid_exact_evm_nonce_already_used",
        "{}",
        answer.json
    );
    assert!(same_address(&answer.json["payer"], payment.from));
    assert_eq!(block_number().await, block_after_use);
}

#[tokio::test]
async fn supported_lists_exactly_what_is_configured() {
    let answer = get("/supported").await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let lanes: Vec<Value> = stack()
        .lane_addresses
        .split(',')
        .map(|a| json!(a))
        .collect();
    assert_eq!(
        answer.json,
        json!({
            "kinds": [
                {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
                {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"},
                // Settled by the lane infra/stack/facilitator-env.sh names: the stack's last.
                {"x402Version": 2, "scheme": "upto", "network": "eip155:84532",
                 "extra": {"facilitatorAddress": lanes.last().unwrap()}},
            ],
            "extensions": ["payment-identifier", "eip2612GasSponsoring"],
            "signers": {"eip155:*": lanes},
        })
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_health_is_ok() {
    assert_eq!(get("/health").await.json, json!({"status":"ok"}));
    let answer = get("/nope").await;
    assert_eq!(answer.status, 404);
}
