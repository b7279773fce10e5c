//! Round trips on the protocol reference's examples, and the two-layer parsing of requests.

use serde_json::{json, Value};

use super::*;

const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const PAYEE: &str = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";
const USDC_BASE: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";

fn requirements_v2() -> Value {
    json!({"scheme":"exact","network":"eip155:8453","amount":"250000","asset":USDC_BASE,"payTo":PAYEE,
           "maxTimeoutSeconds":120,"extra":{"name":"USD Coin","version":"2"}})
}

fn payload_v2() -> Value {
    json!({"x402Version":2,"resource":{"url":"https://svc.example/report"},"accepted":requirements_v2(),
           "payload":{"signature":format!("0x{}1b", "ab".repeat(64)),
             "authorization":{"from":PAYER,"to":PAYEE,"value":"250000","validAfter":"1767000000",
               "validBefore":"1767000720","nonce":format!("0x{}", "11".repeat(32))}}})
}

fn body(payload: Value, requirements: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"x402Version":2,"paymentPayload":payload,"paymentRequirements":requirements}),
    )
    .unwrap()
}

/// Serialising what we parsed gives back the same JSON: nothing is lost, nothing is added.
fn assert_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(value: Value) {
    let typed: T = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), value);
}

#[test]
fn v2_examples_round_trip() {
    assert_round_trip::<v2::PaymentRequirements>(requirements_v2());
    assert_round_trip::<v2::PaymentPayload>(payload_v2());
    let mut with_unknowns = payload_v2();
    with_unknowns["extensions"] =
        json!({"bazaar":{"info":{"x":[1,2,{"deep":true}]},"schema":{"type":"object"}}});
    with_unknowns["accepted"]["extra"]["assetTransferMethod"] = json!("eip3009");
    with_unknowns["accepted"]["extra"]["vendorField"] = json!({"kept": ["as", "is"]});
    assert_round_trip::<v2::PaymentPayload>(with_unknowns);
}

#[test]
fn v1_examples_round_trip() {
    let requirements = json!({"scheme":"exact","network":"base-sepolia","maxAmountRequired":"10000",
        "resource":"https://svc.example/weather","description":"weather","mimeType":"application/json",
        "payTo":PAYEE,"maxTimeoutSeconds":60,"asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "extra":{"name":"USDC","version":"2"}});
    assert_round_trip::<v1::PaymentRequirementsV1>(requirements);
    let payload = json!({"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":payload_v2()["payload"]});
    assert_round_trip::<v1::PaymentPayloadV1>(payload);
}

#[test]
fn responses_match_the_reference_shapes() {
    let valid = serde_json::to_value(VerifyResponse::valid(PAYER.into())).unwrap();
    assert_eq!(valid, json!({"isValid":true,"payer":PAYER}));
    let invalid = VerifyResponse::invalid(
        Reason::InvalidExactEvmRecipientMismatch,
        None,
        Some(PAYER.into()),
    );
    assert_eq!(
        serde_json::to_value(invalid).unwrap(),
        json!({"isValid":false,"invalidReason":"invalid_exact_evm_recipient_mismatch","payer":PAYER})
    );
    let settle = SettleResponse {
        success: false,
        error_reason: Some(Reason::SettlementPending),
        error_message: None,
        payer: Some(PAYER.into()),
        transaction: "0xabc".into(),
        network: "eip155:84532".into(),
        amount: None,
    };
    assert_eq!(
        serde_json::to_value(settle).unwrap(),
        json!({"success":false,"errorReason":"settlement_pending","payer":PAYER,"transaction":"0xabc","network":"eip155:84532"})
    );
    let supported = json!({"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},
        {"x402Version":1,"scheme":"exact","network":"base-sepolia"}],"extensions":[],"signers":{"eip155:*":[PAYER]}});
    assert_round_trip::<SupportedResponse>(supported);
}

#[test]
fn parses_v2_into_a_payment() {
    let payment = parse_request(&body(payload_v2(), requirements_v2())).unwrap();
    assert_eq!(payment.version, X402Version::V2);
    assert_eq!(payment.accepted_scheme, "exact");
    assert_eq!(payment.accepted_network, "eip155:8453");
    assert_eq!(
        payment.requirements.amount,
        alloy::primitives::U256::from(250_000u64)
    );
    assert_eq!(
        payment.requirements.extra,
        Some(json!({"name":"USD Coin","version":"2"}))
    );
}

#[test]
fn parses_v1_into_a_payment() {
    let requirements = json!({"scheme":"exact","network":"base-sepolia","maxAmountRequired":"10000",
        "resource":"https://svc.example/weather","description":"","payTo":PAYEE,"maxTimeoutSeconds":60,
        "asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e"});
    let payload = json!({"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{}});
    let payment = parse_request(&body(payload, requirements)).unwrap();
    assert_eq!(payment.version, X402Version::V1);
    assert_eq!(payment.accepted_network, "base-sepolia");
    assert_eq!(
        payment.requirements.amount,
        alloy::primitives::U256::from(10_000u64)
    );
}

fn malformed(body: &[u8]) -> Reason {
    match parse_request(body) {
        Err(RequestError::Malformed { reason, .. }) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn refused(body: &[u8]) -> (Reason, Option<String>) {
    match parse_request(body) {
        Err(RequestError::Refused { reason, payer, .. }) => (reason, payer),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn an_unusable_envelope_is_malformed() {
    assert_eq!(malformed(b"{not json"), Reason::InvalidPayload);
    assert_eq!(malformed(b"[]"), Reason::InvalidPayload);
    assert_eq!(malformed(b""), Reason::InvalidPayload);
    assert_eq!(
        malformed(br#"{"paymentRequirements":{}}"#),
        Reason::InvalidPayload
    );
    assert_eq!(
        malformed(br#"{"paymentPayload":"x","paymentRequirements":{}}"#),
        Reason::InvalidPayload
    );
    let no_requirements = serde_json::to_vec(&json!({"paymentPayload": payload_v2()})).unwrap();
    assert_eq!(
        malformed(&no_requirements),
        Reason::InvalidPaymentRequirements
    );
}

#[test]
fn versions_other_than_1_and_2_are_refused() {
    for version in [
        json!(3),
        json!(0),
        json!("2"),
        json!(null),
        json!(2.5),
        json!(-1),
        json!(300),
    ] {
        let mut payload = payload_v2();
        payload["x402Version"] = version.clone();
        assert_eq!(
            refused(&body(payload, requirements_v2())).0,
            Reason::InvalidX402Version,
            "{version}"
        );
    }
}

#[test]
fn bad_requirement_amounts_are_refused_with_the_payer() {
    for amount in [
        json!("1.5"),
        json!("abc"),
        json!(250000),
        json!(format!("1{}", "0".repeat(78))),
        json!("-1"),
    ] {
        let mut requirements = requirements_v2();
        requirements["amount"] = amount.clone();
        let (reason, payer) = refused(&body(payload_v2(), requirements));
        assert_eq!(reason, Reason::InvalidPaymentRequirements, "{amount}");
        assert_eq!(payer.as_deref(), Some(PAYER));
    }
}

#[test]
fn missing_fields_are_refused() {
    let mut requirements = requirements_v2();
    requirements.as_object_mut().unwrap().remove("payTo");
    assert_eq!(
        refused(&body(payload_v2(), requirements)).0,
        Reason::InvalidPaymentRequirements
    );
    let mut payload = payload_v2();
    payload.as_object_mut().unwrap().remove("accepted");
    assert_eq!(
        refused(&body(payload, requirements_v2())).0,
        Reason::InvalidPayload
    );
}

#[test]
fn tolerates_what_the_official_schemas_tolerate() {
    // A fractional maxTimeoutSeconds (zod: any positive number) and keys the client added to `accepted`.
    let mut requirements = requirements_v2();
    requirements["maxTimeoutSeconds"] = json!(90.5);
    let mut payload = payload_v2();
    payload["accepted"]["maxTimeoutSeconds"] = json!(90.5);
    payload["accepted"]["clientNote"] = json!({"any": "thing"});
    payload["accepted"]["amount"] = json!(250000);
    let payment = parse_request(&body(payload.clone(), requirements.clone())).unwrap();
    assert_eq!(payment.accepted_scheme, "exact");
    assert_round_trip::<v2::PaymentPayload>(payload);
    assert_round_trip::<v2::PaymentRequirements>(requirements);
}

#[test]
fn network_hint_prefers_what_the_payment_names() {
    let hint = |payload: Value, requirements: Value| network_hint(&body(payload, requirements));
    let mut unknown_version = payload_v2();
    unknown_version["x402Version"] = json!(3);
    assert_eq!(
        hint(unknown_version, json!({"network": "eip155:1"})).as_deref(),
        Some("eip155:8453")
    );
    let v1 = json!({"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{}});
    assert_eq!(hint(v1, json!({})).as_deref(), Some("base-sepolia"));
    assert_eq!(
        hint(json!({"x402Version":2}), json!({"network":"eip155:84532"})).as_deref(),
        Some("eip155:84532")
    );
    assert_eq!(
        hint(json!({"accepted":{"network":7}}), json!("not an object")),
        None
    );
    assert_eq!(network_hint(b"not json"), None);
}
