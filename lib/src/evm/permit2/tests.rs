//! The Permit2 payload's parsing, each local check alone, and the verdict on the chain's answers,
//! on payloads signed here with a test key.

use alloy::{
    primitives::{address, Address, Bytes, U256},
    sol_types::{SolCall, SolError, SolValue},
};
use serde_json::{json, Value};

use super::{
    checks, eip712,
    facts::{self, ChainFacts},
    payload::Permit2Payment,
};
use crate::{
    evm::{
        abi::{IMulticall3, IPermit2, IX402ExactPermit2Proxy, EXACT_PERMIT2_PROXY, PERMIT2},
        test_keys::{address_of, key, offline_scheme, sign_digest},
        ExactEvm,
    },
    protocol::{parse_request, Payment, Reason, Rejection},
};

const NOW: u64 = 1_800_000_000;
const TOKEN: Address = address!("0x2612261226122612261226122612261226122612");
const PAYEE: Address = address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc");
const CHAIN_ID: u64 = 84532;

fn scheme() -> ExactEvm {
    offline_scheme(CHAIN_ID, vec![TOKEN])
}

/// A Permit2 payment as an official client sends it: 1 token (18 decimals) to PAYEE.
struct Case {
    authorization: Value,
    requirements: Value,
    accepted: Value,
    signature: String,
}

impl Case {
    fn new() -> Self {
        let requirements = json!({"scheme":"exact","network":"eip155:84532","amount":"1000000000000000000",
            "asset":TOKEN,"payTo":PAYEE,"maxTimeoutSeconds":60,
            "extra":{"assetTransferMethod":"permit2","name":"Permit Token","version":"1"}});
        let authorization = json!({"from":address_of(&key(0x11)),
            "permitted":{"token":TOKEN,"amount":"1000000000000000000"},
            "spender":EXACT_PERMIT2_PROXY,"nonce":"1234567890123456789","deadline":(NOW + 60).to_string(),
            "witness":{"to":PAYEE,"validAfter":(NOW - 600).to_string()}});
        let mut case = Case {
            authorization,
            accepted: requirements.clone(),
            requirements,
            signature: "0x".into(),
        };
        case.sign();
        case
    }

    /// Changes the authorization and signs it again, as a client that meant it would.
    fn signed(mut self, edit: impl FnOnce(&mut Value)) -> Self {
        edit(&mut self.authorization);
        self.sign();
        self
    }

    fn sign(&mut self) {
        let typed = Permit2Payment::parse(&self.payment(), CHAIN_ID).unwrap();
        self.signature = sign_digest(eip712::signing_digest(&typed), &key(0x11)).to_string();
    }

    fn body(&self) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"x402Version":2,"paymentPayload":{"x402Version":2,"accepted":self.accepted,
            "payload":{"signature":self.signature,"permit2Authorization":self.authorization}},
            "paymentRequirements":self.requirements}),
        )
        .unwrap()
    }

    fn payment(&self) -> Payment {
        parse_request(&self.body()).unwrap()
    }

    fn typed(&self) -> Permit2Payment {
        Permit2Payment::parse(&self.payment(), CHAIN_ID).unwrap()
    }

    /// The reason of the first local check that refuses the payment, if any.
    fn reason(&self) -> Option<Reason> {
        scheme()
            .check_permit2(&self.payment(), NOW)
            .err()
            .map(|r| r.reason)
    }
}

#[test]
fn a_well_signed_payment_parses_and_passes_every_local_check() {
    let case = Case::new();
    let typed = case.typed();
    assert!(super::is_permit2(&case.payment().payload));
    let a = typed.authorization;
    assert_eq!(a.from, address_of(&key(0x11)));
    assert_eq!(
        (a.token, a.spender, a.to),
        (TOKEN, EXACT_PERMIT2_PROXY, PAYEE)
    );
    assert_eq!(a.amount, U256::from(10u64).pow(U256::from(18)));
    assert_eq!(a.nonce, U256::from(1_234_567_890_123_456_789u64));
    assert_eq!(case.reason(), None);
}

#[test]
fn a_permit2_payload_needs_no_eip712_domain_in_extra() {
    let mut case = Case::new();
    case.requirements["extra"] = Value::Null;
    case.accepted = case.requirements.clone();
    assert_eq!(case.reason(), None);
}

/// A change to the payload, named.
type Edit = (&'static str, fn(&mut Value));

#[test]
fn malformed_payloads_are_invalid_exact_evm_payload() {
    let edits: Vec<Edit> = vec![
        ("no from", |a| {
            drop(a.as_object_mut().unwrap().remove("from"))
        }),
        ("short from", |a| a["from"] = json!("0x1234")),
        ("numeric amount", |a| a["permitted"]["amount"] = json!(5)),
        ("negative nonce", |a| a["nonce"] = json!("-1")),
        ("huge deadline", |a| a["deadline"] = json!("9".repeat(90))),
        ("no witness", |a| {
            drop(a.as_object_mut().unwrap().remove("witness"))
        }),
        ("witness.to not hex", |a| {
            a["witness"]["to"] = json!("payee")
        }),
        ("permitted a string", |a| {
            a["permitted"] = json!("all of it")
        }),
        ("authorization an array", |a| *a = json!([1, 2, 3])),
    ];
    for (name, edit) in edits {
        let mut case = Case::new();
        edit(&mut case.authorization);
        assert_eq!(
            case.reason(),
            Some(Reason::InvalidExactEvmPayload),
            "{name}"
        );
    }
    let mut case = Case::new();
    case.signature = "0xzz".into();
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmPayload));
}

#[test]
fn another_scheme_in_the_payload_is_an_unsupported_payload_type() {
    let mut case = Case::new();
    case.accepted["scheme"] = json!("upto");
    assert_eq!(case.reason(), Some(Reason::UnsupportedPayloadType));
}

#[test]
fn another_network_in_the_payload_is_a_network_mismatch() {
    let mut case = Case::new();
    case.accepted["network"] = json!("eip155:8453");
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmNetworkMismatch));
}

#[test]
fn an_asset_this_network_does_not_accept_is_refused() {
    let other = address!("0x1111111111111111111111111111111111111111");
    let mut case = Case::new().signed(|a| a["permitted"]["token"] = json!(other));
    case.requirements["asset"] = json!(other);
    case.accepted = case.requirements.clone();
    assert_eq!(case.reason(), Some(Reason::InvalidPaymentRequirements));
}

#[test]
fn each_local_check_has_its_reason() {
    let cases: Vec<(&str, Case, Reason)> = vec![
        (
            "spender is not the exact proxy",
            Case::new().signed(|a| {
                a["spender"] = json!(address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"))
            }),
            Reason::Permit2InvalidSpender,
        ),
        (
            "witness.to is not payTo",
            Case::new().signed(|a| a["witness"]["to"] = json!(address_of(&key(0x22)))),
            Reason::Permit2RecipientMismatch,
        ),
        (
            "deadline passed",
            Case::new().signed(|a| a["deadline"] = json!((NOW - 1).to_string())),
            Reason::Permit2DeadlineExpired,
        ),
        (
            "deadline inside the 6 s margin",
            Case::new().signed(|a| a["deadline"] = json!((NOW + 5).to_string())),
            Reason::Permit2DeadlineExpired,
        ),
        (
            "validAfter in the future",
            Case::new().signed(|a| a["witness"]["validAfter"] = json!((NOW + 1).to_string())),
            Reason::Permit2NotYetValid,
        ),
        (
            "permitted less than required",
            Case::new().signed(|a| a["permitted"]["amount"] = json!("999999999999999999")),
            Reason::Permit2AmountMismatch,
        ),
        (
            "permitted more than required",
            Case::new().signed(|a| a["permitted"]["amount"] = json!("1000000000000000001")),
            Reason::Permit2AmountMismatch,
        ),
        (
            "another token permitted",
            Case::new().signed(|a| {
                a["permitted"]["token"] =
                    json!(address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"))
            }),
            Reason::Permit2TokenMismatch,
        ),
    ];
    for (name, case, reason) in cases {
        assert_eq!(case.reason(), Some(reason), "{name}");
    }
}

#[test]
fn the_first_failing_check_in_the_references_order_answers() {
    // Everything wrong at once: spender first, then each in turn as the earlier ones are put right.
    let all_wrong = |a: &mut Value| {
        a["spender"] = json!(PAYEE);
        a["witness"]["to"] = json!(TOKEN);
        a["deadline"] = json!((NOW - 1).to_string());
        a["witness"]["validAfter"] = json!((NOW + 1).to_string());
        a["permitted"]["amount"] = json!("1");
        a["permitted"]["token"] = json!(PAYEE);
    };
    let order = [
        Reason::Permit2InvalidSpender,
        Reason::Permit2RecipientMismatch,
        Reason::Permit2DeadlineExpired,
        Reason::Permit2NotYetValid,
        Reason::Permit2AmountMismatch,
        Reason::Permit2TokenMismatch,
    ];
    let good = Case::new().authorization;
    let fixes: [&[&str]; 6] = [
        &["spender"],
        &["witness", "to"],
        &["deadline"],
        &["witness", "validAfter"],
        &["permitted", "amount"],
        &["permitted", "token"],
    ];
    let mut case = Case::new().signed(all_wrong);
    for (reason, fix) in order.into_iter().zip(fixes) {
        assert_eq!(case.reason(), Some(reason));
        let (mut target, mut source) = (&mut case.authorization, &good);
        for key in &fix[..fix.len() - 1] {
            target = &mut target[*key];
            source = &source[*key];
        }
        let last = fix[fix.len() - 1];
        target[last] = source[last].clone();
        case = case.signed(|_| {});
    }
    assert_eq!(case.reason(), None);
}

#[test]
fn the_margins_are_the_references() {
    // Exactly now + 6 s is still fine, as is validAfter == now (the proxy's check is inclusive).
    let case = Case::new().signed(|a| {
        a["deadline"] = json!((NOW + 6).to_string());
        a["witness"]["validAfter"] = json!(NOW.to_string());
    });
    assert_eq!(case.reason(), None);
}

#[test]
fn a_field_changed_after_signing_leaves_the_signature_to_permit2() {
    // Every field but `from` is signed; each change makes the signature recover to another
    // address. A contract wallet's signature does the same, so the local checks pass it on as
    // sent, and Permit2's own check in the simulation decides (its `InvalidSigner` is
    // `invalid_permit2_signature`, see `judge::a_signature_revert_is_an_invalid_signature`).
    let mut nonce = Case::new();
    nonce.authorization["nonce"] = json!("1");
    let mut deadline = Case::new();
    deadline.authorization["deadline"] = json!((NOW + 61).to_string());
    let mut valid_after = Case::new();
    valid_after.authorization["witness"]["validAfter"] = json!((NOW - 601).to_string());
    let mut from = Case::new();
    from.authorization["from"] = json!(address_of(&key(0x33)));
    for (name, case) in [
        ("nonce", nonce),
        ("deadline", deadline),
        ("validAfter", valid_after),
        ("from", from),
    ] {
        let typed = case.typed();
        let sent: Bytes = case.signature.parse().unwrap();
        assert_eq!(checks::signer(&typed).unwrap(), sent, "{name}");
        let calldata = facts::settle_calldata(&typed, &sent);
        assert!(
            !super::signer::signed_by_key(&calldata, CHAIN_ID),
            "{name}: not the owner key's"
        );
    }
}

#[test]
fn the_owners_key_signature_reads_as_a_keys_in_the_settlement() {
    let case = Case::new();
    let typed = case.typed();
    let calldata = facts::settle_calldata(&typed, &checks::signer(&typed).unwrap());
    assert!(super::signer::signed_by_key(&calldata, CHAIN_ID));
    assert!(
        !super::signer::signed_by_key(&calldata, 8453),
        "over another chain it recovers to someone else"
    );
}

#[test]
fn contract_wallet_signatures_go_to_the_chain_as_sent() {
    for (name, signature) in [
        ("64-byte EIP-2098", format!("0x{}", "11".repeat(64))),
        ("smart wallet", format!("0x{}", "11".repeat(100))),
        ("v out of range", format!("0x{}1d", "11".repeat(64))),
    ] {
        let mut case = Case::new();
        case.signature = signature.clone();
        assert_eq!(case.reason(), None, "{name}");
        let sent: Bytes = signature.parse().unwrap();
        assert_eq!(checks::signer(&case.typed()).unwrap(), sent, "{name}");
    }
}

#[test]
fn empty_and_erc6492_signatures_are_refused_locally() {
    let inner = Bytes::from(vec![0x11; 65]);
    let factory = address!("0x6492649264926492649264926492649264926492");
    let mut wrapped = (factory, Bytes::from(vec![1, 2, 3]), inner).abi_encode_params();
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    let mut undecodable = vec![0u8; 10];
    undecodable.extend_from_slice(&[0x64, 0x92].repeat(16));
    for (name, signature) in [
        ("empty", "0x".to_owned()),
        ("ERC-6492", Bytes::from(wrapped).to_string()),
        (
            "ERC-6492, undecodable",
            Bytes::from(undecodable).to_string(),
        ),
    ] {
        let mut case = Case::new();
        case.signature = signature;
        assert_eq!(
            case.reason(),
            Some(Reason::Permit2InvalidSignature),
            "{name}"
        );
    }
}

#[test]
fn v_0_or_1_is_normalised_for_the_proxy() {
    let mut case = Case::new();
    let mut raw = alloy::primitives::hex::decode(&case.signature[2..]).unwrap();
    raw[64] -= 27;
    case.signature = Bytes::from(raw).to_string();
    let typed = case.typed();
    let sig = checks::signer(&typed).unwrap();
    assert!(matches!(sig[64], 27 | 28));
}

#[test]
fn the_settle_call_is_the_proxys() {
    let case = Case::new();
    let typed = case.typed();
    let sig = checks::signer(&typed).unwrap();
    let calldata = facts::settle_calldata(&typed, &sig);
    // settle(((address,uint256),uint256,uint256),address,(address,uint256),bytes)
    assert_eq!(&calldata[..4], &[0x13, 0xcd, 0x3b, 0x53]);
    let call = IX402ExactPermit2Proxy::settleCall::abi_decode(&calldata).unwrap();
    assert_eq!(call.owner, typed.authorization.from);
    assert_eq!(call.witness.to, PAYEE);
    assert_eq!(call.permit.nonce, typed.authorization.nonce);
}

mod judge {
    //! The verdict on the batch's answers (`facts::judge`), one rule per test.
    use super::*;

    fn payment() -> Permit2Payment {
        Case::new().typed()
    }

    /// What the chain answers for a payer that can pay.
    fn fine() -> ChainFacts {
        ChainFacts {
            proxy_permit2: Some(PERMIT2),
            balance: Some(U256::from(10u64).pow(U256::from(20))),
            allowance: Some(U256::MAX),
            nonce_word: Some(U256::ZERO),
            settle: Ok(()),
        }
    }

    fn reason(facts: ChainFacts) -> Option<Reason> {
        facts::judge(&payment(), &facts)
            .err()
            .map(|r: Rejection| r.reason)
    }

    #[test]
    fn all_fine_is_valid() {
        assert_eq!(reason(fine()), None);
    }

    #[test]
    fn no_proxy_is_proxy_not_deployed() {
        // An address without code "succeeds" every call with no data: settle included.
        let facts = ChainFacts {
            proxy_permit2: None,
            ..fine()
        };
        assert_eq!(reason(facts), Some(Reason::Permit2ProxyNotDeployed));
        let facts = ChainFacts {
            proxy_permit2: Some(PAYEE),
            ..fine()
        };
        assert_eq!(reason(facts), Some(Reason::Permit2ProxyNotDeployed));
    }

    #[test]
    fn the_nonces_bit_set_is_invalid_nonce() {
        let nonce = payment().authorization.nonce;
        let bit = (nonce & U256::from(0xff)).to::<usize>();
        let used = ChainFacts {
            nonce_word: Some(U256::from(1) << bit),
            settle: Err(facts::revert_name(&IPermit2::InvalidNonce {}.abi_encode())),
            ..fine()
        };
        assert_eq!(reason(used), Some(Reason::Permit2InvalidNonce));
        // Another nonce's bit in the same word is not this one's.
        let other = ChainFacts {
            nonce_word: Some(!(U256::from(1) << bit)),
            ..fine()
        };
        assert_eq!(reason(other), None);
    }

    #[test]
    fn a_short_balance_is_insufficient_balance_before_the_allowance() {
        let facts = ChainFacts {
            balance: Some(U256::from(1)),
            allowance: Some(U256::ZERO),
            settle: Err(facts::revert_name(&[])),
            ..fine()
        };
        assert_eq!(reason(facts), Some(Reason::Permit2InsufficientBalance));
    }

    #[test]
    fn a_short_allowance_is_allowance_required() {
        let facts = ChainFacts {
            allowance: Some(payment().amount - U256::from(1)),
            settle: Err(facts::revert_name(
                &alloy::sol_types::Revert::from("TRANSFER_FROM_FAILED").abi_encode(),
            )),
            ..fine()
        };
        assert_eq!(reason(facts), Some(Reason::Permit2AllowanceRequired));
        let exact = ChainFacts {
            allowance: Some(payment().amount),
            ..fine()
        };
        assert_eq!(reason(exact), None);
    }

    #[test]
    fn a_token_that_answers_nothing_is_refused_even_if_settle_succeeds() {
        let facts = ChainFacts {
            balance: None,
            allowance: None,
            ..fine()
        };
        assert_eq!(reason(facts), Some(Reason::Permit2SimulationFailed));
    }

    #[test]
    fn a_signature_revert_is_an_invalid_signature() {
        let errors = [
            IPermit2::InvalidSigner {}.abi_encode(),
            IPermit2::InvalidSignature {}.abi_encode(),
            IPermit2::InvalidSignatureLength {}.abi_encode(),
            IPermit2::InvalidContractSignature {}.abi_encode(),
        ];
        for data in errors {
            // Before balance and allowance: Permit2 checks the signature before moving anything.
            let named = ChainFacts {
                settle: Err(facts::revert_name(&data)),
                balance: Some(U256::ZERO),
                ..fine()
            };
            assert_eq!(reason(named), Some(Reason::Permit2InvalidSignature));
            // As a node reports the upto simulation's revert: its data in hex.
            let hex = alloy::primitives::hex::encode(&data);
            let reported = ChainFacts {
                settle: Err(format!("execution reverted: custom error 0x{hex}")),
                ..fine()
            };
            assert_eq!(reason(reported), Some(Reason::Permit2InvalidSignature));
        }
    }

    #[test]
    fn any_other_revert_is_simulation_failed_and_named() {
        let facts = ChainFacts {
            settle: Err(facts::revert_name(
                &IPermit2::InvalidAmount {
                    maxAmount: U256::from(1u8),
                }
                .abi_encode(),
            )),
            ..fine()
        };
        let rejection = facts::judge(&payment(), &facts).unwrap_err();
        assert_eq!(rejection.reason, Reason::Permit2SimulationFailed);
        assert!(
            rejection.message.contains("InvalidAmount"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn the_batchs_answer_decodes_in_order() {
        let ok = |data: Vec<u8>| IMulticall3::Result {
            success: true,
            returnData: data.into(),
        };
        let answer = vec![
            ok(PERMIT2.abi_encode()),
            ok(U256::from(7).abi_encode()),
            ok(U256::from(8).abi_encode()),
            ok(U256::from(9).abi_encode()),
            IMulticall3::Result {
                success: false,
                returnData: IX402ExactPermit2Proxy::PaymentTooEarly {}
                    .abi_encode()
                    .into(),
            },
        ];
        let encoded = IMulticall3::tryAggregateCall::abi_encode_returns(&answer);
        let facts = ChainFacts::decode(&encoded, None).unwrap();
        assert_eq!(facts.proxy_permit2, Some(PERMIT2));
        assert_eq!(
            (facts.balance, facts.allowance, facts.nonce_word),
            (
                Some(U256::from(7)),
                Some(U256::from(8)),
                Some(U256::from(9))
            )
        );
        assert!(facts
            .settle
            .as_ref()
            .unwrap_err()
            .contains("PaymentTooEarly"));
        // An undeployed proxy answers PERMIT2() with no data: not an address.
        let mut answer = answer;
        answer[0] = ok(Vec::new());
        let encoded = IMulticall3::tryAggregateCall::abi_encode_returns(&answer);
        assert_eq!(
            ChainFacts::decode(&encoded, None).unwrap().proxy_permit2,
            None
        );
        assert_eq!(ChainFacts::decode(&[0u8; 3], None), None);
    }
}

#[test]
fn settle_checks_the_terms_without_the_time_window_and_the_window_apart() {
    let late = Case::new().signed(|a| a["deadline"] = json!((NOW - 1).to_string()));
    let checked = scheme().check_permit2_terms(&late.payment()).unwrap();
    assert_eq!(
        scheme()
            .check_permit2_window(&checked, NOW)
            .map_err(|r| r.reason),
        Err(Reason::Permit2DeadlineExpired)
    );
    // The other checks still apply: an ERC-6492 signature (an undeployed wallet's).
    let mut wrong = Case::new();
    let mut wrapped = vec![0u8; 10];
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    wrong.signature = Bytes::from(wrapped).to_string();
    assert_eq!(
        scheme()
            .check_permit2_terms(&wrong.payment())
            .map_err(|r| r.reason)
            .err(),
        Some(Reason::Permit2InvalidSignature)
    );
}

#[test]
fn the_record_digest_binds_the_whole_permit_and_a_second_permit_under_the_nonce_differs() {
    let digest = |case: &Case| {
        scheme()
            .check_permit2_terms(&case.payment())
            .unwrap()
            .digest("eip155:84532")
    };
    let first = Case::new();
    assert_eq!(digest(&first), digest(&Case::new()), "stable");
    let later = Case::new().signed(|a| a["deadline"] = json!((NOW + 120).to_string()));
    let earlier = Case::new().signed(|a| a["witness"]["validAfter"] = json!((NOW - 1).to_string()));
    assert_ne!(digest(&first), digest(&later));
    assert_ne!(digest(&first), digest(&earlier));
    assert_ne!(digest(&later), digest(&earlier));
}

#[test]
fn a_settlement_moves_the_permitted_amount_from_the_payer_to_the_witness_recipient() {
    let checked = scheme()
        .check_permit2_terms(&Case::new().payment())
        .unwrap();
    let transfer = checked.transfer();
    assert_eq!(
        (transfer.asset, transfer.from, transfer.to, transfer.value),
        (
            TOKEN,
            address_of(&key(0x11)),
            PAYEE,
            U256::from(10u64).pow(U256::from(18))
        )
    );
}

mod sponsoring {
    //! The `eip2612GasSponsoring` extension: typing, checks, the simulated call, the verdict and
    //! the digest.
    use super::*;
    use crate::evm::permit2::{sponsoring::read, Permit2Checked};

    fn info() -> Value {
        json!({"from":address_of(&key(0x11)),"asset":TOKEN,"spender":PERMIT2,
               "amount":"1000000000000000000","nonce":"0","deadline":(NOW + 60).to_string(),
               "signature":format!("0x{}1b", "ab".repeat(64)),"version":"1"})
    }

    /// The case's payment with `info` as its extension.
    fn with(info: Value) -> Payment {
        let mut body: Value = serde_json::from_slice(&Case::new().body()).unwrap();
        body["paymentPayload"]["extensions"] = json!({"eip2612GasSponsoring":{"info":info}});
        parse_request(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn reason(info: Value) -> Option<Reason> {
        scheme()
            .check_permit2(&with(info), NOW)
            .err()
            .map(|r| r.reason)
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut info = info();
        edit(&mut info);
        info
    }

    #[test]
    fn an_info_without_every_field_is_ignored_as_the_reference_does() {
        assert_eq!(read(None), None);
        let declared = json!({"eip2612GasSponsoring":{"info":{"description":"x","version":"1"}}});
        assert_eq!(read(Some(&declared)), None);
        assert_eq!(reason(json!({"version":"1"})), None);
    }

    #[test]
    fn each_check_answers_the_references_reason() {
        assert_eq!(reason(info()), None);
        let cases = [
            (
                edited(|i| i["amount"] = "1e18".into()),
                Reason::InvalidEip2612ExtensionFormat,
            ),
            (
                edited(|i| i["version"] = "v1".into()),
                Reason::InvalidEip2612ExtensionFormat,
            ),
            (
                edited(|i| i["from"] = json!(PAYEE)),
                Reason::Eip2612FromMismatch,
            ),
            (
                edited(|i| i["asset"] = json!(PAYEE)),
                Reason::Eip2612AssetMismatch,
            ),
            (
                edited(|i| i["spender"] = json!(EXACT_PERMIT2_PROXY)),
                Reason::Eip2612SpenderNotPermit2,
            ),
            (
                edited(|i| i["deadline"] = (NOW + 5).to_string().into()),
                Reason::Eip2612DeadlineExpired,
            ),
            (
                edited(|i| i["amount"] = "1".into()),
                Reason::Permit2612AmountMismatch,
            ),
            (
                edited(|i| i["signature"] = "0xabcd".into()),
                Reason::InvalidEip2612ExtensionFormat,
            ),
        ];
        for (info, expected) in cases {
            assert_eq!(reason(info.clone()), Some(expected), "{info}");
        }
    }

    #[test]
    fn the_settlement_and_its_simulation_are_settle_with_permit() {
        let checked = scheme().check_permit2(&with(info()), NOW).unwrap();
        let calldata = checked.settle_calldata();
        let call = IX402ExactPermit2Proxy::settleWithPermitCall::abi_decode(&calldata).unwrap();
        assert_eq!(call.permit2612.value, checked.payment.authorization.amount);
        assert_eq!(call.permit2612.v, 27);
        let batch = facts::batch_calldata(&checked.payment, &checked.signature);
        let calls = IMulticall3::tryAggregateCall::abi_decode(&batch)
            .unwrap()
            .calls;
        assert_eq!(calls.last().unwrap().callData, calldata);
    }

    #[test]
    fn a_short_allowance_passes_only_when_the_permit_made_the_simulation_pass() {
        let payment = Permit2Payment::parse(&with(info()), CHAIN_ID).unwrap();
        let mut facts = super::judge_fine();
        facts.allowance = Some(U256::ZERO);
        assert_eq!(facts::judge(&payment, &facts), Ok(()));
        facts.settle = Err(facts::revert_name(&[]));
        let verdict = facts::judge(&payment, &facts).unwrap_err().reason;
        assert_eq!(verdict, Reason::Permit2AllowanceRequired);
    }

    #[test]
    fn the_digest_covers_the_permit() {
        let digest = |payment: Payment| {
            let c: Permit2Checked = scheme().check_permit2(&payment, NOW).unwrap();
            c.digest("eip155:84532")
        };
        let bare = digest(Case::new().payment());
        let sponsored = digest(with(info()));
        let other = digest(with(edited(|i| {
            i["deadline"] = (NOW + 61).to_string().into()
        })));
        let same_on_chain = digest(with(edited(|i| i["nonce"] = "7".into())));
        assert_ne!(bare, sponsored);
        assert_ne!(sponsored, other);
        assert_eq!(
            sponsored, same_on_chain,
            "info.nonce never reaches the chain"
        );
    }
}

/// [`judge`]'s "a payer that can pay", for other modules.
fn judge_fine() -> ChainFacts {
    ChainFacts {
        proxy_permit2: Some(PERMIT2),
        balance: Some(U256::from(10u64).pow(U256::from(20))),
        allowance: Some(U256::MAX),
        nonce_word: Some(U256::ZERO),
        settle: Ok(()),
    }
}

#[test]
fn with_contract_wallets_off_a_signature_not_the_payers_key_is_refused_before_the_chain() {
    let off = scheme().with_contract_wallets(false);
    let key_signed = Case::new();
    assert!(off.check_permit2(&key_signed.payment(), NOW).is_ok());
    assert!(off.check_permit2_terms(&key_signed.payment()).is_ok());
    let mut wallet = Case::new();
    wallet.signature = format!("0x{}", "11".repeat(100));
    for refused in [
        off.check_permit2(&wallet.payment(), NOW).map(drop),
        off.check_permit2_terms(&wallet.payment()).map(drop),
    ] {
        assert_eq!(
            refused.map_err(|r| r.reason),
            Err(Reason::Permit2InvalidSignature)
        );
    }
    assert!(scheme().check_permit2(&wallet.payment(), NOW).is_ok());
}
