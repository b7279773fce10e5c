//! Permit2 payments: the `exact` scheme's Permit2 method (`assetTransferMethod: "permit2"`), for tokens without
//! EIP-3009: the payer approves Uniswap's Permit2 once, then signs a `PermitWitnessTransferFrom`
//! whose spender is x402's exact Permit2 proxy and whose witness names the recipient; the
//! facilitator calls the proxy's `settle`, which asks Permit2 to move exactly the permitted amount.
//!
//! `/settle` settles them through the same record, queue, lanes and replay as EIP-3009 payments
//! (docs/settlement.md, "Permit2"); `/supported` advertises the same `exact` kind, and lists the
//! `eip2612GasSponsoring` extension.
//!
//! - [`payload`]: the wire payload typed ([`Permit2Payment`]);
//! - [`eip712`]: Permit2's domain and the signed message;
//! - [`sponsoring`]: the `eip2612GasSponsoring` extension (a payer without a Permit2 allowance
//!   sends an EIP-2612 permit; the settlement is the proxy's `settleWithPermit`);
//! - [`checks`]: the local checks, one function each;
//! - [`signer`]: whether a stored settlement's signature is the payer key's or a contract wallet's;
//! - [`facts`]: the one batched chain read and the pure verdict on it;
//! - [`verify`]: the two composed on [`crate::evm::ExactEvm`].
//!
//! The `upto` scheme (EVM) is Permit2 only and shares all of it: its payer signs a maximum for
//! x402's upto proxy, with a witness that also names the facilitator allowed to settle; `/settle`
//! names the charge, at most that maximum ([`Permit2Payment::parse_upto`], [`checks::facilitator`],
//! [`checks::charge`]; docs/protocol-choices.md, "upto").

pub mod checks;
pub mod eip712;
pub mod facts;
pub mod payload;
pub mod signer;
pub mod sponsoring;
pub mod verify;

pub use payload::{is_permit2, Permit2Authorization, Permit2Payment};
pub use verify::Permit2Checked;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod upto_tests;
