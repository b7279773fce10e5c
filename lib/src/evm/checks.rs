//! The local checks of an `exact` EIP-3009 payment, one small function each, so that each can be
//! tested alone and verify and settle compose the same ones (x402-protocol.md §6.2).

use alloy::primitives::{Address, U256};

use super::{
    eip712,
    payload::ExactPayment,
    signature::{self, SignatureKind},
};
use crate::protocol::{Reason, Rejection};

/// How close to `validBefore` we still accept a payment: the reference's 6 s, about one block on
/// Base, so that a payment verified now can still be mined before it expires.
pub const EXPIRY_BUFFER_SECS: u64 = 6;

/// The token must be one this deployment accepts on this network: we pay gas only for tokens the
/// operator chose, and an `eth_call` to an address without code "succeeds" silently.
pub fn asset_accepted(asset: Address, accepted: &[Address]) -> Result<(), Rejection> {
    if accepted.contains(&asset) {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::InvalidPaymentRequirements,
        format!(
            "asset {asset} is not accepted on this network; accepted: {}",
            join(accepted)
        ),
    ))
}

/// The authorization must pay the resource server's `payTo`.
pub fn recipient(payment: &ExactPayment) -> Result<(), Rejection> {
    if payment.authorization.to == payment.pay_to {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::InvalidExactEvmRecipientMismatch,
        format!(
            "authorization.to is {} but payTo is {}",
            payment.authorization.to, payment.pay_to
        ),
    ))
}

/// The authorized value must equal the required amount exactly (the reference refuses overpayment too).
pub fn amount(payment: &ExactPayment) -> Result<(), Rejection> {
    if payment.authorization.value == payment.amount {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::ValueMismatch,
        format!(
            "authorization.value is {} but the required amount is {}",
            payment.authorization.value, payment.amount
        ),
    ))
}

/// `validBefore` must leave at least [`EXPIRY_BUFFER_SECS`] from `now`.
pub fn valid_before(payment: &ExactPayment, now: u64) -> Result<(), Rejection> {
    let earliest = U256::from(now) + U256::from(EXPIRY_BUFFER_SECS);
    if payment.authorization.valid_before >= earliest {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::ValidBefore,
        format!(
            "authorization.validBefore {} is not at least {EXPIRY_BUFFER_SECS} s after now ({now})",
            payment.authorization.valid_before
        ),
    ))
}

/// `validAfter` must be in the past.
pub fn valid_after(payment: &ExactPayment, now: u64) -> Result<(), Rejection> {
    if payment.authorization.valid_after <= U256::from(now) {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::ValidAfter,
        format!(
            "authorization.validAfter {} is after now ({now})",
            payment.authorization.valid_after
        ),
    ))
}

/// The signature must be the payer's. Returns the split signature for the `v, r, s` overload.
pub fn signed_by_payer(payment: &ExactPayment) -> Result<signature::EcdsaSignature, Rejection> {
    match signature::classify(&payment.signature)? {
        SignatureKind::Eoa(sig) => {
            let digest = eip712::signing_digest(payment);
            match signature::recover(&digest, &sig) {
                Some(signer) if signer == payment.authorization.from => Ok(sig),
                Some(signer) => Err(Rejection::new(
                    Reason::InvalidExactEvmSignature,
                    format!(
                        "the signature recovers to {signer}, not to authorization.from {} (wrong key, wrong EIP-712 domain, or a field changed after signing)",
                        payment.authorization.from
                    ),
                )),
                None => Err(Rejection::new(Reason::InvalidExactEvmSignature, "the signature recovers to no key")),
            }
        }
        SignatureKind::Erc6492 => Err(Rejection::new(
            Reason::Eip6492FactoryNotAllowed,
            "ERC-6492 signatures for undeployed wallets are not accepted: this facilitator allows no wallet factory",
        )),
        SignatureKind::SmartWallet => Err(Rejection::new(
            Reason::InvalidExactEvmSignature,
            format!(
                "a {}-byte signature is a smart-wallet (ERC-1271) signature; this facilitator accepts 65-byte EOA signatures only for now",
                payment.signature.len()
            ),
        )),
    }
}

fn join(addresses: &[Address]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
