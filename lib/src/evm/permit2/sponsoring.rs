//! The `eip2612GasSponsoring` extension (x402 `specs/extensions/eip2612_gas_sponsoring.md`): a
//! payer that has not approved Permit2 on an EIP-2612 token signs the token's `permit` with
//! Permit2 as spender and sends it in `paymentPayload.extensions.eip2612GasSponsoring.info`; the
//! facilitator then calls the exact proxy's `settleWithPermit`, which submits that permit and makes
//! the Permit2 transfer in one transaction, instead of `settle`.
//!
//! Typed here at the edge ([`read`]) and checked by [`check`] with the reference's reasons and in
//! its order (`@x402/evm` 2.27, `validateEip2612PermitForPayment`): format, owner, token, spender,
//! deadline; then, ahead of the chain, what the proxy itself would refuse (the permit's value must
//! be the permitted amount) and the signature's shape. Whether the permit's signature is good is
//! left to the simulation, as in the reference: a permit the token rejects leaves the allowance
//! short, and the verdict is `permit2_allowance_required`.

use alloy::primitives::{Address, Bytes, B256, U256};
use serde_json::Value;

use super::payload::Permit2Payment;
use crate::{
    evm::{
        abi::{IX402ExactPermit2Proxy::EIP2612Permit, PERMIT2},
        checks::EXPIRY_BUFFER_SECS,
        hex,
    },
    protocol::{Reason, Rejection},
};

/// The extension's key in `paymentPayload.extensions`, and in `/supported`'s list.
pub const EXTENSION: &str = "eip2612GasSponsoring";

/// The payer's EIP-2612 permit, as the extension's `info` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip2612Permit {
    /// The token's `owner`: must be the payer.
    pub from: Address,
    /// The token the permit is for: must be the payment's asset.
    pub asset: Address,
    /// Must be canonical Permit2.
    pub spender: Address,
    /// The permit's `value`: the proxy refuses any but the permitted amount.
    pub amount: U256,
    /// The payer's token nonce when it signed (informative: the token uses its current one).
    pub nonce: U256,
    pub deadline: U256,
    /// `r ‖ s ‖ v` as sent (65 bytes once [`check`]ed).
    pub signature: Bytes,
}

impl Eip2612Permit {
    /// The permit as the proxy's `settleWithPermit` takes it: `v` 27 or 28 whatever the client
    /// wrote (the token's `ecrecover` knows no 0/1).
    pub fn proxy_permit(&self) -> EIP2612Permit {
        let sig = self.signature.as_ref();
        let v = sig.get(64).copied().unwrap_or_default();
        EIP2612Permit {
            value: self.amount,
            deadline: self.deadline,
            r: B256::from_slice(sig.get(..32).unwrap_or(&[0; 32])),
            s: B256::from_slice(sig.get(32..64).unwrap_or(&[0; 32])),
            v: if v < 27 { v + 27 } else { v },
        }
    }
}

/// The extension in a payment's `extensions`: `None` when absent, or when its `info` lacks a field
/// (the reference then ignores it, and so do we); `Some(Err(why))` when a field is malformed.
pub fn read(extensions: Option<&Value>) -> Option<Result<Eip2612Permit, String>> {
    let info = extensions?.get(EXTENSION)?.get("info")?;
    let field = |name: &str| info.get(name).filter(|v| !is_empty(v));
    const FIELDS: [&str; 8] = [
        "from",
        "asset",
        "spender",
        "amount",
        "nonce",
        "deadline",
        "signature",
        "version",
    ];
    if FIELDS.iter().any(|name| field(name).is_none()) {
        return None;
    }
    Some(typed(info))
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("")
}

fn typed(info: &Value) -> Result<Eip2612Permit, String> {
    let text = |name: &str| info.get(name).and_then(Value::as_str).unwrap_or_default();
    let bad = |name: &str, what: &str| format!("extensions.{EXTENSION}.info.{name} is not {what}");
    let address = |name: &str| hex::address(text(name)).ok_or_else(|| bad(name, "an address"));
    let uint = |name: &str| {
        let s = text(name);
        match s.bytes().all(|b| b.is_ascii_digit()) {
            true => U256::from_str_radix(s, 10).ok(),
            false => None,
        }
        .ok_or_else(|| bad(name, "a decimal uint256"))
    };
    let version = text("version");
    if !version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("version", "a version like \"1\""));
    }
    Ok(Eip2612Permit {
        from: address("from")?,
        asset: address("asset")?,
        spender: address("spender")?,
        amount: uint("amount")?,
        nonce: uint("nonce")?,
        deadline: uint("deadline")?,
        signature: hex::bytes(text("signature")).ok_or_else(|| bad("signature", "0x hex"))?,
    })
}

/// Every check of the extension, in the reference's order; `now` (unix seconds) is `None` at
/// `/settle`, which checks the deadline with the time window ([`deadline`]). Nothing to check
/// when the payment carries no extension.
pub fn check(payment: &Permit2Payment, now: Option<u64>) -> Result<(), Rejection> {
    let permit = match &payment.sponsoring {
        None => return Ok(()),
        Some(Err(why)) => {
            return Err(Rejection::new(
                Reason::InvalidEip2612ExtensionFormat,
                why.clone(),
            ))
        }
        Some(Ok(permit)) => permit,
    };
    let refuse = |reason, what: String| Err(Rejection::new(reason, what));
    let payer = payment.authorization.from;
    if permit.from != payer {
        let what = format!(
            "the EIP-2612 permit's owner is {}, not the payer {payer}",
            permit.from
        );
        return refuse(Reason::Eip2612FromMismatch, what);
    }
    if permit.asset != payment.asset {
        let what = format!(
            "the EIP-2612 permit is for {}, not the asset {}",
            permit.asset, payment.asset
        );
        return refuse(Reason::Eip2612AssetMismatch, what);
    }
    if permit.spender != PERMIT2 {
        let what = format!(
            "the EIP-2612 permit's spender is {}, not Permit2 ({PERMIT2})",
            permit.spender
        );
        return refuse(Reason::Eip2612SpenderNotPermit2, what);
    }
    if let Some(now) = now {
        deadline(payment, now)?;
    }
    terms_after_deadline(payment, permit)
}

/// What the proxy would refuse, and the signature's shape.
fn terms_after_deadline(payment: &Permit2Payment, permit: &Eip2612Permit) -> Result<(), Rejection> {
    let permitted = payment.authorization.amount;
    if permit.amount != permitted {
        return Err(Rejection::new(
            Reason::Permit2612AmountMismatch,
            format!("the EIP-2612 permit's value is {}, but the exact Permit2 proxy takes only the permitted amount {permitted}", permit.amount),
        ));
    }
    if permit.signature.len() != 65 {
        return Err(Rejection::new(
            Reason::InvalidEip2612ExtensionFormat,
            format!(
                "the EIP-2612 permit's signature is {} bytes, not 65 (r, s, v)",
                permit.signature.len()
            ),
        ));
    }
    Ok(())
}

/// The EIP-2612 permit's deadline must leave [`EXPIRY_BUFFER_SECS`] from `now`, as the Permit2
/// deadline must.
pub fn deadline(payment: &Permit2Payment, now: u64) -> Result<(), Rejection> {
    let Some(Ok(permit)) = &payment.sponsoring else {
        return Ok(());
    };
    let earliest = U256::from(now) + U256::from(EXPIRY_BUFFER_SECS);
    if permit.deadline >= earliest {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Eip2612DeadlineExpired,
        format!(
            "the EIP-2612 permit's deadline {} is not at least {EXPIRY_BUFFER_SECS} s after now ({now})",
            permit.deadline
        ),
    ))
}
