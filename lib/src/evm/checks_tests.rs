//! Each local check alone, and `ExactEvm::check` on payloads signed here with a test payer's key.

use alloy::primitives::{address, Address, Bytes, B256, U256};
use secp256k1::SecretKey;
use serde_json::{json, Value};

use alloy::sol_types::{SolCall, SolValue};

use crate::{
    evm::{
        checks::{ContractHint, Signer},
        eip712,
        payload::ExactPayment,
        test_keys::{address_of, key, offline_scheme, sign_digest},
        Checked, ExactEvm,
    },
    protocol::{parse_request, Payment, Reason},
};

const NOW: u64 = 1_800_000_000;
const TOKEN: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
const OTHER_TOKEN: Address = address!("0x1111111111111111111111111111111111111111");
const PAYEE: Address = address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc");
const CHAIN_ID: u64 = 84532;

/// Signs `payment`'s EIP-712 digest and returns `r ‖ s ‖ v` with v = 27/28.
fn sign(payment: &ExactPayment, key: &SecretKey) -> Bytes {
    sign_digest(eip712::signing_digest(payment), key)
}

fn scheme() -> ExactEvm {
    offline_scheme(CHAIN_ID, vec![TOKEN])
}

struct Case {
    authorization: Value,
    requirements: Value,
    signature: String,
    accepted: Value,
}

impl Case {
    /// A valid payment of 1 USDC from the payer key `0x11…11` to PAYEE.
    fn new() -> Self {
        let payer = address_of(&key(0x11));
        let requirements = json!({"scheme":"exact","network":"eip155:84532","amount":"1000000","asset":TOKEN,
            "payTo":PAYEE,"maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}});
        let authorization = json!({"from":payer,"to":PAYEE,"value":"1000000","validAfter":(NOW - 600).to_string(),
            "validBefore":(NOW + 60).to_string(),"nonce":B256::repeat_byte(0x42)});
        let mut case = Case {
            authorization,
            accepted: requirements.clone(),
            requirements,
            signature: "0x".into(),
        };
        case.sign_with(&key(0x11), CHAIN_ID);
        case
    }

    /// Signs what the authorization says now, over the given chain id.
    fn sign_with(&mut self, key: &SecretKey, chain_id: u64) -> &mut Self {
        let payment = parse_request(&self.body()).unwrap();
        let typed = ExactPayment::parse(&payment, chain_id).unwrap();
        self.signature = sign(&typed, key).to_string();
        self
    }

    fn body(&self) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"x402Version":2,"paymentPayload":{"x402Version":2,"accepted":self.accepted,
            "payload":{"signature":self.signature,"authorization":self.authorization}},
            "paymentRequirements":self.requirements}),
        )
        .unwrap()
    }

    fn payment(&self) -> Payment {
        parse_request(&self.body()).unwrap()
    }

    /// The reason `check` gives, or the one verify gives after it: a signature that recovers to
    /// someone else can only still be an ERC-1271 wallet's, and the test payers are plain keys, so
    /// verify answers `invalid_exact_evm_signature` (proved end to end in tests/tests/verify.rs).
    fn reason(&self) -> Option<Reason> {
        match scheme().check(&self.payment(), NOW) {
            Err(rejection) => Some(rejection.reason),
            Ok(Checked {
                signer:
                    Signer::Contract {
                        hint: ContractHint::RecoveredOther(_),
                        ..
                    },
                ..
            }) => Some(Reason::InvalidExactEvmSignature),
            Ok(_) => None,
        }
    }

    fn signer(&self) -> Signer {
        scheme().check(&self.payment(), NOW).unwrap().signer
    }
}

#[test]
fn a_well_signed_payment_passes_every_local_check() {
    let checked = scheme().check(&Case::new().payment(), NOW).unwrap();
    assert_eq!(checked.payment.authorization.from, address_of(&key(0x11)));
    // The calldata is the v,r,s overload of transferWithAuthorization.
    assert_eq!(&checked.transfer_calldata()[..4], &[0xe3, 0xee, 0x16, 0x0e]);
}

#[test]
fn wrong_recipient() {
    let mut case = Case::new();
    case.authorization["to"] = json!(OTHER_TOKEN);
    case.sign_with(&key(0x11), CHAIN_ID);
    assert_eq!(
        case.reason(),
        Some(Reason::InvalidExactEvmRecipientMismatch)
    );
}

#[test]
fn amount_below_and_above() {
    for value in ["999999", "1000001"] {
        let mut case = Case::new();
        case.authorization["value"] = json!(value);
        case.sign_with(&key(0x11), CHAIN_ID);
        assert_eq!(case.reason(), Some(Reason::ValueMismatch), "{value}");
    }
}

#[test]
fn valid_before_in_the_past_or_within_six_seconds() {
    for valid_before in [NOW - 1, NOW, NOW + 5] {
        let mut case = Case::new();
        case.authorization["validBefore"] = json!(valid_before.to_string());
        case.sign_with(&key(0x11), CHAIN_ID);
        assert_eq!(case.reason(), Some(Reason::ValidBefore), "{valid_before}");
    }
    let mut case = Case::new();
    case.authorization["validBefore"] = json!((NOW + 6).to_string());
    case.sign_with(&key(0x11), CHAIN_ID);
    assert_eq!(case.reason(), None, "exactly six seconds is enough");
}

#[test]
fn valid_after_in_the_future() {
    let mut case = Case::new();
    case.authorization["validAfter"] = json!((NOW + 1).to_string());
    case.sign_with(&key(0x11), CHAIN_ID);
    assert_eq!(case.reason(), Some(Reason::ValidAfter));
    case.authorization["validAfter"] = json!(NOW.to_string());
    case.sign_with(&key(0x11), CHAIN_ID);
    assert_eq!(case.reason(), None, "validAfter == now is valid");
}

#[test]
fn signature_by_another_key() {
    let mut case = Case::new();
    case.sign_with(&key(0x22), CHAIN_ID);
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
}

#[test]
fn a_field_changed_after_signing() {
    let mut case = Case::new();
    case.authorization["validBefore"] = json!((NOW + 3600).to_string());
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
    let mut case = Case::new();
    case.authorization["nonce"] = json!(B256::repeat_byte(0x43));
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
}

#[test]
fn wrong_chain_id_in_the_domain() {
    let mut case = Case::new();
    case.sign_with(&key(0x11), 8453);
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
}

#[test]
fn wrong_domain_name_in_extra() {
    let mut case = Case::new();
    case.requirements["extra"]["name"] = json!("USD Coin");
    case.accepted = case.requirements.clone();
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
}

#[test]
fn v_as_zero_or_one_is_normalised() {
    let mut case = Case::new();
    let mut bytes: Vec<u8> = case.signature.parse::<Bytes>().unwrap().to_vec();
    bytes[64] -= 27;
    case.signature = Bytes::from(bytes).to_string();
    assert_eq!(case.reason(), None);
}

#[test]
fn high_s_is_refused() {
    let mut case = Case::new();
    let mut bytes: Vec<u8> = case.signature.parse::<Bytes>().unwrap().to_vec();
    // (r, n - s, v ^ 1) is the same signature's malleable twin.
    let n = U256::from_be_slice(&alloy::primitives::hex!(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
    ));
    let s = U256::from_be_slice(&bytes[32..64]);
    bytes[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    bytes[64] = if bytes[64] == 27 { 28 } else { 27 };
    case.signature = Bytes::from(bytes).to_string();
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmSignature));
}

#[test]
fn smart_wallet_and_6492_signatures_are_left_to_erc1271() {
    let mut case = Case::new();
    let long = Bytes::from(vec![7u8; 100]);
    case.signature = long.to_string();
    assert_eq!(
        case.signer(),
        Signer::Contract {
            signature: long,
            hint: ContractHint::SmartWallet
        }
    );
    // The bytes overload of transferWithAuthorization, which asks the wallet.
    let checked = scheme().check(&case.payment(), NOW).unwrap();
    assert_eq!(&checked.transfer_calldata()[..4], &[0xcf, 0x09, 0x29, 0x95]);

    let inner = Bytes::from(vec![9u8; 65]);
    let mut wrapped = (OTHER_TOKEN, Bytes::from(vec![1u8]), inner.clone()).abi_encode_params();
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    case.signature = Bytes::from(wrapped).to_string();
    assert_eq!(
        case.signer(),
        Signer::Contract {
            signature: inner,
            hint: ContractHint::Counterfactual(OTHER_TOKEN)
        }
    );
}

#[test]
fn a_6492_signature_naming_an_allowed_factory_is_counterfactual() {
    use crate::evm::signature::Wrapped6492;
    let mut case = Case::new();
    let inner = Bytes::from(vec![9u8; 65]);
    let factory = Address::repeat_byte(0xfa);
    let mut wrapped = (factory, Bytes::from(vec![1u8]), inner.clone()).abi_encode_params();
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    case.signature = Bytes::from(wrapped).to_string();
    let allowing = scheme().with_erc6492_factories(vec![factory]);
    let checked = allowing.check(&case.payment(), NOW).unwrap();
    assert_eq!(
        checked.signer,
        Signer::Counterfactual(Wrapped6492 {
            factory,
            factory_calldata: Bytes::from(vec![1u8]),
            inner,
        })
    );
    // Settled through Multicall3: the factory's call, then the bytes overload to the token.
    assert_eq!(checked.settle_target(), Some(crate::evm::abi::MULTICALL3));
    let batch =
        crate::evm::abi::IMulticall3::aggregate3Call::abi_decode(&checked.settle_calldata())
            .unwrap();
    assert_eq!(batch.calls[0].target, factory);
    assert_eq!(batch.calls[1].callData, checked.transfer_calldata());
    assert_eq!(&checked.transfer_calldata()[..4], &[0xcf, 0x09, 0x29, 0x95]);
    // Without the factory on the list, the same payment is today's: judged only if deployed.
    assert!(matches!(case.signer(), Signer::Contract { .. }));
}

#[test]
fn a_6492_signature_naming_no_factory_needs_a_deployed_wallet() {
    let mut case = Case::new();
    let inner = Bytes::from(vec![9u8; 65]);
    let mut wrapped = (Address::ZERO, Bytes::new(), inner.clone()).abi_encode_params();
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    case.signature = Bytes::from(wrapped).to_string();
    assert_eq!(
        case.signer(),
        Signer::Contract {
            signature: inner,
            hint: ContractHint::SmartWallet
        }
    );
}

#[test]
fn the_payers_own_signature_is_an_eoa_signature() {
    assert!(matches!(Case::new().signer(), Signer::Eoa(_)));
}

#[test]
fn asset_that_is_not_the_token() {
    let mut case = Case::new();
    case.requirements["asset"] = json!(OTHER_TOKEN);
    case.accepted = case.requirements.clone();
    assert_eq!(case.reason(), Some(Reason::InvalidPaymentRequirements));
}

#[test]
fn missing_eip712_domain() {
    for extra in [
        json!(null),
        json!({}),
        json!({"name":"USDC"}),
        json!({"name":"","version":"2"}),
        json!({"name":1,"version":"2"}),
    ] {
        let mut case = Case::new();
        case.requirements["extra"] = extra.clone();
        case.accepted = case.requirements.clone();
        assert_eq!(
            case.reason(),
            Some(Reason::InvalidExactEvmMissingEip712Domain),
            "{extra}"
        );
    }
}

#[test]
fn scheme_and_network_must_match_what_was_accepted() {
    let mut case = Case::new();
    case.accepted["scheme"] = json!("upto");
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmScheme));
    let mut case = Case::new();
    case.accepted["network"] = json!("eip155:8453");
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmNetworkMismatch));
}

#[test]
fn malformed_authorizations() {
    let bad: [(&str, Value); 10] = [
        ("from", json!("70997970C51812dc3A010C7d01b50e0d17dc79C8")),
        ("from", json!([1, 2, 3])),
        (
            "nonce",
            json!("4242424242424242424242424242424242424242424242424242424242424242"),
        ),
        ("nonce", json!("0x1234")),
        ("nonce", json!(format!("0x{}", "11".repeat(33)))),
        ("value", json!("12abc")),
        ("value", json!(format!("1{}", "0".repeat(78)))),
        ("validBefore", json!(-5)),
        ("from", json!("0xnot-an-address")),
        ("to", json!(null)),
    ];
    for (field, value) in bad {
        let mut case = Case::new();
        case.authorization[field] = value.clone();
        assert_eq!(
            case.reason(),
            Some(Reason::InvalidExactEvmPayload),
            "{field} = {value}"
        );
    }
    let mut case = Case::new();
    case.signature = "0xzz".into();
    assert_eq!(case.reason(), Some(Reason::InvalidExactEvmPayload));
}

/// The EIP-3009 checks, which /settle runs, refuse a Permit2 payload: /verify checks those
/// (`evm::permit2`), but nothing settles them yet.
#[test]
fn the_eip3009_checks_refuse_a_permit2_payload() {
    let case = Case::new();
    let mut payment = case.payment();
    payment.payload =
        json!({"signature":"0x00","permit2Authorization":{"from":address_of(&key(0x11))}});
    assert_eq!(
        scheme().check(&payment, NOW).unwrap_err().reason,
        Reason::UnsupportedPayloadType
    );
}

mod explain_revert {
    //! Why a simulated transfer reverted, from the token's views (`verify::explain_revert`).
    use super::*;
    use crate::evm::verify::{explain_revert, TokenViews};

    /// The views of a token that answers everything as the payment expects.
    fn fine() -> TokenViews {
        TokenViews {
            balance: Some(U256::from(5_000_000)),
            name: Some("USDC".into()),
            version: Some("2".into()),
            used: Some(false),
        }
    }

    fn reason(views: TokenViews) -> Reason {
        let payment = ExactPayment::parse(&Case::new().payment(), CHAIN_ID).unwrap();
        explain_revert(&payment, &views, "execution reverted").reason
    }

    #[test]
    fn a_token_without_authorization_state_is_not_eip3009() {
        let views = TokenViews {
            used: None,
            ..fine()
        };
        assert_eq!(reason(views), Reason::Eip3009NotSupported);
    }

    #[test]
    fn a_used_nonce_comes_before_every_other_mismatch() {
        let views = TokenViews {
            used: Some(true),
            name: Some("Other".into()),
            balance: Some(U256::ZERO),
            ..fine()
        };
        assert_eq!(reason(views), Reason::NonceAlreadyUsed);
    }

    #[test]
    fn the_name_then_the_version_then_the_balance() {
        let all_wrong = TokenViews {
            name: Some("Other".into()),
            version: Some("1".into()),
            balance: Some(U256::from(1)),
            ..fine()
        };
        assert_eq!(reason(all_wrong.clone()), Reason::TokenNameMismatch);
        let version_and_balance = TokenViews {
            name: fine().name,
            ..all_wrong
        };
        assert_eq!(
            reason(version_and_balance.clone()),
            Reason::TokenVersionMismatch
        );
        let balance = TokenViews {
            version: fine().version,
            ..version_and_balance
        };
        assert_eq!(reason(balance), Reason::InsufficientBalance);
    }

    #[test]
    fn views_that_did_not_answer_are_not_held_against_the_payment() {
        let views = TokenViews {
            name: None,
            version: None,
            balance: None,
            used: Some(false),
        };
        assert_eq!(reason(views), Reason::SimulationFailed);
    }

    #[test]
    fn a_token_that_answers_everything_as_expected_keeps_the_revert() {
        let payment = ExactPayment::parse(&Case::new().payment(), CHAIN_ID).unwrap();
        let rejection = explain_revert(&payment, &fine(), "execution reverted: paused");
        assert_eq!(rejection.reason, Reason::SimulationFailed);
        assert!(
            rejection.message.contains("paused"),
            "{}",
            rejection.message
        );
    }
}

mod contract_wallets {
    //! `X402_CONTRACT_WALLETS=off`: what only a contract could judge is refused, nothing else.
    use super::*;
    use crate::evm::checks::contract_wallets_allowed;

    fn payment(case: &Case) -> ExactPayment {
        ExactPayment::parse(&case.payment(), CHAIN_ID).unwrap()
    }

    #[test]
    fn an_eoa_signature_is_accepted_either_way() {
        let case = Case::new();
        for allowed in [true, false] {
            assert!(contract_wallets_allowed(&payment(&case), &case.signer(), allowed).is_ok());
        }
    }

    #[test]
    fn a_signature_only_a_contract_can_judge_is_refused_when_they_are_off() {
        let mut case = Case::new();
        case.sign_with(&key(0x22), CHAIN_ID); // recovers to someone else: a wallet owner's, maybe
        let signer = case.signer();
        assert!(matches!(signer, Signer::Contract { .. }), "{signer:?}");
        assert!(contract_wallets_allowed(&payment(&case), &signer, true).is_ok());
        let refused = contract_wallets_allowed(&payment(&case), &signer, false).unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidExactEvmSignature);
        assert!(
            refused.message.contains("no contract-wallet"),
            "{}",
            refused.message
        );
    }
}
