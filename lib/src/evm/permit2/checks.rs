//! The local checks of a Permit2 payment (`exact`, or `upto`), one small function each, in the
//! reference's order (x402-protocol.md §7.2): spender, recipient, (for `upto`: facilitator),
//! deadline, validAfter, amount, token, signature. Each returns the reference's reason string;
//! none touches the chain.

use alloy::primitives::{Address, Bytes, U256};

use super::{eip712, payload::Permit2Payment, sponsoring};
use crate::{
    evm::{
        abi::PERMIT2,
        checks::EXPIRY_BUFFER_SECS,
        signature::{self, SignatureKind},
    },
    protocol::{Reason, Rejection},
};

/// The signed spender must be x402's Permit2 proxy for the payment's scheme (exact or upto) at
/// its canonical address: only that contract forces the recipient and amount the payer signed;
/// any other spender could move the permitted tokens anywhere.
pub fn spender(payment: &Permit2Payment) -> Result<(), Rejection> {
    let (spender, proxy) = (payment.authorization.spender, payment.proxy());
    if spender == proxy {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2InvalidSpender,
        format!("permit2Authorization.spender is {spender}, not the x402 Permit2 proxy {proxy} of this scheme"),
    ))
}

/// An `upto` witness's `facilitator`, the only address the upto proxy lets settle it, must be
/// the signer this network advertises for `upto` (`ours`; `None` when `upto` is not configured).
/// Nothing to check for `exact`.
pub fn facilitator(payment: &Permit2Payment, ours: Option<Address>) -> Result<(), Rejection> {
    let Some(named) = payment.authorization.facilitator else {
        return Ok(());
    };
    if Some(named) == ours {
        return Ok(());
    }
    let ours = ours.map_or("none (upto is not configured here)".to_owned(), |a| {
        a.to_string()
    });
    Err(Rejection::new(
        Reason::UptoFacilitatorMismatch,
        format!("permit2Authorization.witness.facilitator is {named}, but this facilitator's upto signer on this network is {ours}"),
    ))
}

/// What `/settle` may charge an `upto` payment: `amount` is the actual charge, at most the signed
/// maximum (zero allowed). An `exact` payment's amount must equal what is permitted ([`amount`]).
pub fn charge(payment: &Permit2Payment) -> Result<(), Rejection> {
    if !payment.is_upto() {
        return amount(payment);
    }
    let maximum = payment.authorization.amount;
    if payment.amount <= maximum {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::UptoSettlementExceedsAmount,
        format!(
            "the settlement amount {} is more than the {maximum} the payer authorized",
            payment.amount
        ),
    ))
}

/// The witness's `to`, which the proxy pays, must be the requirements' `payTo`.
pub fn recipient(payment: &Permit2Payment) -> Result<(), Rejection> {
    let to = payment.authorization.to;
    if to == payment.pay_to {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2RecipientMismatch,
        format!(
            "permit2Authorization.witness.to is {to} but payTo is {}",
            payment.pay_to
        ),
    ))
}

/// The deadline must leave at least [`EXPIRY_BUFFER_SECS`] from `now` (unix seconds), the same
/// margin as EIP-3009's `validBefore`: a payment verified now can still be mined in time.
pub fn deadline(payment: &Permit2Payment, now: u64) -> Result<(), Rejection> {
    let earliest = U256::from(now) + U256::from(EXPIRY_BUFFER_SECS);
    let deadline = payment.authorization.deadline;
    if deadline >= earliest {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2DeadlineExpired,
        format!("permit2Authorization.deadline {deadline} is not at least {EXPIRY_BUFFER_SECS} s after now ({now})"),
    ))
}

/// The witness's `validAfter` must not be in the future (the proxy pays from that second on).
pub fn valid_after(payment: &Permit2Payment, now: u64) -> Result<(), Rejection> {
    let valid_after = payment.authorization.valid_after;
    if valid_after <= U256::from(now) {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2NotYetValid,
        format!("permit2Authorization.witness.validAfter {valid_after} is after now ({now})"),
    ))
}

/// The permitted amount, all of which the exact proxy transfers, must equal the required amount.
pub fn amount(payment: &Permit2Payment) -> Result<(), Rejection> {
    let permitted = payment.authorization.amount;
    if permitted == payment.amount {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2AmountMismatch,
        format!(
            "permit2Authorization.permitted.amount is {permitted} but the required amount is {}",
            payment.amount
        ),
    ))
}

/// The permitted token must be the requirements' asset.
pub fn token(payment: &Permit2Payment) -> Result<(), Rejection> {
    let token = payment.authorization.token;
    if token == payment.asset {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::Permit2TokenMismatch,
        format!(
            "permit2Authorization.permitted.token is {token} but the asset is {}",
            payment.asset
        ),
    ))
}

/// The signature, as the proxy will pass it to Permit2. A 65-byte signature that recovers to
/// `from` is the payer key's, sent with `v` as 27 or 28. Anything else may be a deployed contract
/// wallet's (ERC-1271): Permit2 asks `from`'s code through `isValidSignature` when `from` has
/// code, and runs `ecrecover` when it has none, so the simulation in the one chain round trip
/// decides ([`super::facts::judge`] names its signature reverts `invalid_permit2_signature`, an
/// EOA's wrong signature included), as the reference lets it. ERC-6492-wrapped signatures (a
/// wallet not deployed yet) are refused here: Permit2 cannot deploy it.
pub fn signer(payment: &Permit2Payment) -> Result<Bytes, Rejection> {
    let from = payment.authorization.from;
    let raw = &payment.signature;
    match signature::classify(raw) {
        Ok(SignatureKind::Ecdsa(sig))
            if signature::recover(&eip712::signing_digest(payment), &sig) == Some(from) =>
        {
            Ok(super::facts::proxy_signature(&sig))
        }
        Ok(SignatureKind::Erc6492(_)) => Err(erc6492_refused(raw.len())),
        Err(_) if signature::is_erc6492(raw) => Err(erc6492_refused(raw.len())),
        _ if raw.is_empty() => Err(Rejection::new(
            Reason::Permit2InvalidSignature,
            "the Permit2 signature is empty",
        )),
        _ => Ok(raw.clone()),
    }
}

/// An ERC-6492 wrapper: the wallet it names is not deployed, and Permit2 (unlike an EIP-3009
/// token asked through this facilitator's deploying call) would find no code to ask.
fn erc6492_refused(len: usize) -> Rejection {
    Rejection::new(
        Reason::Permit2InvalidSignature,
        format!("a {len}-byte ERC-6492 signature is an undeployed wallet's; this facilitator accepts Permit2 payments from keys and deployed contract wallets only"),
    )
}

/// Every local check, in the reference's order, with the accepted-asset check of the EIP-3009
/// path ahead of them and the `eip2612GasSponsoring` extension's after them. Returns the signature as the proxy takes it ([`signer`]).
/// `upto` is the signer this network advertises for `upto` payments.
pub fn all(
    payment: &Permit2Payment,
    accepted: &[Address],
    upto: Option<Address>,
    now: u64,
) -> Result<Bytes, Rejection> {
    crate::evm::checks::asset_accepted(payment.asset, accepted)?;
    spender(payment)?;
    recipient(payment)?;
    facilitator(payment, upto)?;
    deadline(payment, now)?;
    valid_after(payment, now)?;
    amount(payment)?;
    token(payment)?;
    let signature = signer(payment)?;
    self::sponsoring(payment, Some(now))?;
    Ok(signature)
}

/// [`all`] but the time window: what `/settle` checks before it looks for the payment's record
/// (a payment with a record is answered from it whatever the clock says). An `upto` payment's
/// amount is the charge, checked against the signed maximum ([`charge`]).
pub fn terms(
    payment: &Permit2Payment,
    accepted: &[Address],
    upto: Option<Address>,
) -> Result<Bytes, Rejection> {
    crate::evm::checks::asset_accepted(payment.asset, accepted)?;
    spender(payment)?;
    recipient(payment)?;
    facilitator(payment, upto)?;
    charge(payment)?;
    token(payment)?;
    let signature = signer(payment)?;
    self::sponsoring(payment, None)?;
    Ok(signature)
}

/// The time window: the deadline, then `validAfter`, then the deadline of the
/// `eip2612GasSponsoring` permit, if any.
pub fn window(payment: &Permit2Payment, now: u64) -> Result<(), Rejection> {
    deadline(payment, now)?;
    valid_after(payment, now)?;
    sponsoring_deadline(payment, now)
}

/// Every check of the `eip2612GasSponsoring` extension ([`sponsoring`](super::sponsoring)), in the reference's order; `now` (unix seconds) is `None` at
/// `/settle`, which checks the deadline with the time window ([`deadline`]). Nothing to check
/// when the payment carries no extension.
pub fn sponsoring(payment: &Permit2Payment, now: Option<u64>) -> Result<(), Rejection> {
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
        sponsoring_deadline(payment, now)?;
    }
    sponsoring_after_deadline(payment, permit)
}

/// What the proxy would refuse, and the signature's shape.
fn sponsoring_after_deadline(
    payment: &Permit2Payment,
    permit: &sponsoring::Eip2612Permit,
) -> Result<(), Rejection> {
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
pub fn sponsoring_deadline(payment: &Permit2Payment, now: u64) -> Result<(), Rejection> {
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
