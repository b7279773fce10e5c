//! Typing an `exact` Permit2 payment: the `permit2Authorization` payload and the requirements it
//! is checked against.
//!
//! The edge for the Permit2 method, as [`crate::evm::payload`] is for EIP-3009: after
//! [`Permit2Payment::parse`] the checks see addresses and `U256`s only. A payload that does not
//! type is `invalid_exact_evm_payload` (a 200 answer naming the field), never a panic.

use alloy::primitives::{Address, Bytes, U256};
use serde::Deserialize;
use serde_json::Value;

use super::sponsoring::{self, Eip2612Permit};
use crate::{
    evm::{
        hex,
        payload::{parse_address, same_network},
    },
    protocol::{DecimalU256, Payment, Reason, Rejection},
};

/// Whether a payload is a Permit2 one. Like the reference, the payload's shape decides, not
/// `extra.assetTransferMethod` (a hint for clients).
pub fn is_permit2(payload: &Value) -> bool {
    payload.get("permit2Authorization").is_some()
}

/// The Permit2 `payload` object: `{signature, permit2Authorization}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Permit2Wire {
    #[serde(deserialize_with = "hex::de_bytes")]
    signature: Bytes,
    permit2_authorization: AuthorizationWire,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationWire {
    #[serde(deserialize_with = "hex::de_address")]
    from: Address,
    permitted: PermittedWire,
    #[serde(deserialize_with = "hex::de_address")]
    spender: Address,
    nonce: DecimalU256,
    deadline: DecimalU256,
    witness: WitnessWire,
}

#[derive(Debug, Deserialize)]
struct PermittedWire {
    #[serde(deserialize_with = "hex::de_address")]
    token: Address,
    amount: DecimalU256,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WitnessWire {
    #[serde(deserialize_with = "hex::de_address")]
    to: Address,
    /// Only in an `upto` payment's witness: who alone may settle it.
    #[serde(default, deserialize_with = "de_some_address")]
    facilitator: Option<Address>,
    valid_after: DecimalU256,
}

fn de_some_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
    hex::de_address(d).map(Some)
}

/// What the payer signed: Permit2's `PermitWitnessTransferFrom` with the exact proxy's witness,
/// or the upto proxy's (which adds `facilitator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit2Authorization {
    /// The payer (Permit2's `owner`); not part of the signed message, the signature names it.
    pub from: Address,
    /// `permitted.token`.
    pub token: Address,
    /// `permitted.amount`: the exact proxy always transfers all of it.
    pub amount: U256,
    pub spender: Address,
    /// Permit2's unordered nonce: any uint256, used once per owner.
    pub nonce: U256,
    pub deadline: U256,
    /// `witness.to`: the only recipient the proxy will pay.
    pub to: Address,
    /// `witness.validAfter`: the proxy refuses to pay before it (inclusive).
    pub valid_after: U256,
    /// `witness.facilitator`, for an `upto` payment (`None` for `exact`): the only address the
    /// upto proxy lets settle it.
    pub facilitator: Option<Address>,
}

/// A fully typed Permit2 payment on one EVM chain: `exact`, or `upto` when the witness names a
/// facilitator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2Payment {
    pub chain_id: u64,
    /// `paymentRequirements.asset`.
    pub asset: Address,
    pub pay_to: Address,
    /// `paymentRequirements.amount`: for `exact`, the price, which must equal the permitted amount;
    /// for `upto`, the signed maximum at `/verify` and the actual charge at `/settle`.
    pub amount: U256,
    pub authorization: Permit2Authorization,
    pub signature: Bytes,
    /// The `eip2612GasSponsoring` extension's permit, if the payload carries one
    /// ([`super::sponsoring::read`]); `Err` says which field is malformed.
    pub sponsoring: Option<Result<Eip2612Permit, String>>,
}

impl Permit2Payment {
    /// Checks that the payment is an `exact` payment for this network and types its fields, in the
    /// reference's order: scheme (`unsupported_payload_type`, as the reference answers for a
    /// Permit2 payload under another scheme), network, payload shape, requirements. Unlike
    /// EIP-3009, no `extra.name` / `extra.version` is needed: Permit2's EIP-712 domain is fixed.
    pub fn parse(payment: &Payment, chain_id: u64) -> Result<Self, Rejection> {
        if payment.accepted_scheme != "exact" || payment.requirements.scheme != "exact" {
            return Err(Rejection::new(
                Reason::UnsupportedPayloadType,
                format!(
                    "a Permit2 payload is an \"exact\" payment, but the payload says {:?} and the requirements {:?}",
                    truncate(&payment.accepted_scheme),
                    truncate(&payment.requirements.scheme)
                ),
            ));
        }
        same_network(payment)?;
        let wire = Permit2Wire::deserialize(&payment.payload).map_err(|e| {
            Rejection::new(
                Reason::InvalidExactEvmPayload,
                format!("payload (Permit2: {{signature, permit2Authorization}}): {e}"),
            )
        })?;
        let mut typed = Self::typed(payment, chain_id, wire)?;
        // An `exact` witness has no facilitator; one written anyway is not what the payer signed.
        typed.authorization.facilitator = None;
        Ok(typed)
    }

    /// [`Permit2Payment::parse`] for an `upto` payment, with the reference's upto reasons: a
    /// payload that is not a Permit2 one whose witness names a facilitator is
    /// `unsupported_payload_type`, a scheme other than `upto` `invalid_upto_evm_scheme`, another
    /// network `invalid_upto_evm_network_mismatch`.
    pub fn parse_upto(payment: &Payment, chain_id: u64) -> Result<Self, Rejection> {
        let not_upto = |what: String| {
            Rejection::new(
                Reason::UnsupportedPayloadType,
                format!("not an upto Permit2 payload ({{signature, permit2Authorization}} whose witness names a facilitator): {what}"),
            )
        };
        let wire =
            Permit2Wire::deserialize(&payment.payload).map_err(|e| not_upto(e.to_string()))?;
        if wire.permit2_authorization.witness.facilitator.is_none() {
            return Err(not_upto("witness.facilitator is missing".into()));
        }
        if payment.accepted_scheme != "upto" || payment.requirements.scheme != "upto" {
            return Err(Rejection::new(
                Reason::UptoInvalidScheme,
                format!(
                    "the payload says scheme {:?} and the requirements {:?}; both must be \"upto\"",
                    truncate(&payment.accepted_scheme),
                    truncate(&payment.requirements.scheme)
                ),
            ));
        }
        same_network(payment)
            .map_err(|e| Rejection::new(Reason::UptoNetworkMismatch, e.message))?;
        Self::typed(payment, chain_id, wire)
    }

    fn typed(payment: &Payment, chain_id: u64, wire: Permit2Wire) -> Result<Self, Rejection> {
        let requirements = &payment.requirements;
        let asset = parse_address(&requirements.asset, "paymentRequirements.asset")?;
        let pay_to = parse_address(&requirements.pay_to, "paymentRequirements.payTo")?;
        let a = wire.permit2_authorization;
        Ok(Permit2Payment {
            chain_id,
            asset,
            pay_to,
            amount: requirements.amount,
            authorization: Permit2Authorization {
                from: a.from,
                token: a.permitted.token,
                amount: a.permitted.amount.0,
                spender: a.spender,
                nonce: a.nonce.0,
                deadline: a.deadline.0,
                to: a.witness.to,
                valid_after: a.witness.valid_after.0,
                facilitator: a.witness.facilitator,
            },
            signature: wire.signature,
            sponsoring: sponsoring::read(payment.extensions.as_ref()),
        })
    }

    /// Whether this is an `upto` payment (its witness names a facilitator).
    pub fn is_upto(&self) -> bool {
        self.authorization.facilitator.is_some()
    }

    /// The proxy the payer signed for and the settlement calls: the exact or the upto one.
    pub fn proxy(&self) -> Address {
        match self.is_upto() {
            true => crate::evm::abi::UPTO_PERMIT2_PROXY,
            false => crate::evm::abi::EXACT_PERMIT2_PROXY,
        }
    }

    /// The EIP-2612 permit the payment is settled with (`settleWithPermit`), if it carries a
    /// well-formed one.
    pub fn sponsor(&self) -> Option<&Eip2612Permit> {
        self.sponsoring.as_ref().and_then(|s| s.as_ref().ok())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}
