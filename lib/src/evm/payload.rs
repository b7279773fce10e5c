//! Typing an `exact` EVM payment: the EIP-3009 payload and the requirements it is checked against.
//!
//! This is the edge for the EVM scheme: after [`ExactPayment::parse`] the checks only see
//! addresses, `U256`s and a 32-byte nonce. Parse failures carry the x402 reason to answer with.

use alloy::primitives::{Address, Bytes, B256, U256};
use serde::Deserialize;
use serde_json::Value;

use super::hex;
use crate::protocol::{DecimalU256, Payment, Reason, Rejection};

/// The EIP-3009 `payload` object: `{signature, authorization}`.
#[derive(Debug, Clone, Deserialize)]
struct Eip3009Payload {
    #[serde(deserialize_with = "hex::de_bytes")]
    signature: Bytes,
    authorization: AuthorizationWire,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationWire {
    #[serde(deserialize_with = "hex::de_address")]
    from: Address,
    #[serde(deserialize_with = "hex::de_address")]
    to: Address,
    value: DecimalU256,
    valid_after: DecimalU256,
    valid_before: DecimalU256,
    #[serde(deserialize_with = "hex::de_b256")]
    nonce: B256,
}

/// What the payer signed (EIP-3009 `TransferWithAuthorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: B256,
}

/// The token's EIP-712 domain name and version, from `paymentRequirements.extra`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDomain {
    pub name: String,
    pub version: String,
}

/// A fully typed `exact` payment on one EVM chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactPayment {
    pub chain_id: u64,
    /// `paymentRequirements.asset`: the token, and the EIP-712 `verifyingContract`.
    pub asset: Address,
    pub pay_to: Address,
    pub amount: U256,
    pub domain: TokenDomain,
    pub authorization: Authorization,
    pub signature: Bytes,
}

impl ExactPayment {
    /// Checks that the payment is an `exact` payment for this chain and types its fields, in the
    /// reference's order: scheme, network, payload shape, requirements, EIP-712 domain.
    pub fn parse(payment: &Payment, chain_id: u64) -> Result<Self, Rejection> {
        if payment.accepted_scheme != "exact" || payment.requirements.scheme != "exact" {
            return Err(Rejection::new(
                Reason::InvalidExactEvmScheme,
                format!(
                    "scheme must be \"exact\" in both the payload ({:?}) and the requirements ({:?})",
                    payment.accepted_scheme, payment.requirements.scheme
                ),
            ));
        }
        same_network(payment)?;
        let payload = parse_payload(&payment.payload)?;
        let requirements = &payment.requirements;
        let asset = parse_address(&requirements.asset, "paymentRequirements.asset")?;
        let pay_to = parse_address(&requirements.pay_to, "paymentRequirements.payTo")?;
        let domain = parse_domain(requirements.extra.as_ref())?;
        let a = payload.authorization;
        Ok(ExactPayment {
            chain_id,
            asset,
            pay_to,
            amount: requirements.amount,
            domain,
            authorization: Authorization {
                from: a.from,
                to: a.to,
                value: a.value.0,
                valid_after: a.valid_after.0,
                valid_before: a.valid_before.0,
                nonce: a.nonce,
            },
            signature: payload.signature,
        })
    }
}

/// The network the client paid on must be the requirements' (both EVM methods check it).
pub(super) fn same_network(payment: &Payment) -> Result<(), Rejection> {
    if payment.accepted_network == payment.requirements.network {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::InvalidExactEvmNetworkMismatch,
        format!(
            "the payload is for {:?} but the requirements are for {:?}",
            payment
                .accepted_network
                .chars()
                .take(100)
                .collect::<String>(),
            payment
                .requirements
                .network
                .chars()
                .take(100)
                .collect::<String>()
        ),
    ))
}

fn parse_payload(payload: &Value) -> Result<Eip3009Payload, Rejection> {
    // /verify takes Permit2 payloads to `evm::permit2` before this; whatever reaches here with
    // one is /settle, which cannot settle them yet (docs/protocol-choices.md).
    if super::permit2::is_permit2(payload) {
        return Err(Rejection::new(
            Reason::UnsupportedPayloadType,
            "this facilitator verifies Permit2 payments but does not settle them yet; pay with EIP-3009 (transferWithAuthorization)",
        ));
    }
    if payload.get("authorization").is_none() {
        return Err(Rejection::new(
            Reason::InvalidExactEvmPayload,
            "payload.authorization is missing: an EIP-3009 payload is {signature, authorization}",
        ));
    }
    Eip3009Payload::deserialize(payload)
        .map_err(|e| Rejection::new(Reason::InvalidExactEvmPayload, format!("payload: {e}")))
}

pub(super) fn parse_address(s: &str, field: &str) -> Result<Address, Rejection> {
    hex::address(s).ok_or_else(|| {
        Rejection::new(
            Reason::InvalidPaymentRequirements,
            format!(
                "{field} {:?} is not a 20-byte hex address",
                s.chars().take(100).collect::<String>()
            ),
        )
    })
}

fn parse_domain(extra: Option<&Value>) -> Result<TokenDomain, Rejection> {
    let field = |key: &str| {
        extra
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match (field("name"), field("version")) {
        (Some(name), Some(version)) => Ok(TokenDomain { name, version }),
        _ => Err(Rejection::new(
            Reason::InvalidExactEvmMissingEip712Domain,
            "paymentRequirements.extra must carry the token's EIP-712 domain as non-empty strings \"name\" and \"version\"",
        )),
    }
}
