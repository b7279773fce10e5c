//! The `eip2612GasSponsoring` extension (x402 `specs/extensions/eip2612_gas_sponsoring.md`): a
//! payer that has not approved Permit2 on an EIP-2612 token signs the token's `permit` with
//! Permit2 as spender and sends it in `paymentPayload.extensions.eip2612GasSponsoring.info`; the
//! facilitator then calls the exact proxy's `settleWithPermit`, which submits that permit and makes
//! the Permit2 transfer in one transaction, instead of `settle`.
//!
//! Typed here at the edge ([`read`]) and checked by [`super::checks::sponsoring`] with the
//! reference's reasons and in
//! its order (`@x402/evm` 2.27, `validateEip2612PermitForPayment`): format, owner, token, spender,
//! deadline; then, ahead of the chain, what the proxy itself would refuse (the permit's value must
//! be the permitted amount) and the signature's shape. Whether the permit's signature is good is
//! left to the simulation, as in the reference: a permit the token rejects leaves the allowance
//! short, and the verdict is `permit2_allowance_required`.

use alloy::primitives::{Address, Bytes, B256, U256};
use serde_json::Value;

use crate::evm::{abi::IX402ExactPermit2Proxy::EIP2612Permit, hex};

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
