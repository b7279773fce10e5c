//! What the chain says about a Permit2 payment, read in one round trip, and what it means.
//!
//! One `eth_call` to Multicall3's `tryAggregate` (without `requireSuccess`) carries, in this order:
//! the proxy's `PERMIT2()` (is the proxy there, and wired to Permit2?), the payer's token balance,
//! the payer's allowance to Permit2, the Permit2 nonce bitmap word that holds the payment's nonce,
//! and last the proxy's `settle` itself, as the settlement would call it (`settleWithPermit` for a
//! payment with an `eip2612GasSponsoring` permit, see [`settle_calldata`]). The reads come first
//! because the simulated `settle` changes state for whatever follows it in the same call. Going
//! through Multicall3 makes the proxy see Multicall3 as its caller; the exact proxy does not care
//! who calls it. The upto proxy does (only the witness's facilitator may call it), so for an `upto`
//! payment the batch holds the four reads only, and the settlement is simulated by a second
//! `eth_call` from the facilitator's address, sent at the same time ([`upto_simulation`]).
//!
//! [`judge`] turns the answers into a verdict without I/O, so each rule is unit-tested alone.

use alloy::{
    primitives::{Address, Bytes, U256},
    sol_types::{SolCall, SolError, SolInterface, SolValue},
};

use super::payload::Permit2Payment;
use crate::{
    evm::{
        abi::{
            IErc20, IMulticall3, IPermit2, IX402ExactPermit2Proxy, IX402UptoPermit2Proxy, PERMIT2,
        },
        signature::EcdsaSignature,
    },
    protocol::{Reason, Rejection},
};

/// The payment's signature as the proxy takes it: `r ‖ s ‖ v`, with `v` 27 or 28 whatever the
/// client wrote (Permit2's `ecrecover` knows no 0/1).
pub fn proxy_signature(sig: &EcdsaSignature) -> Bytes {
    let mut bytes = Vec::with_capacity(65);
    bytes.extend_from_slice(sig.r.as_slice());
    bytes.extend_from_slice(sig.s.as_slice());
    bytes.push(sig.v);
    bytes.into()
}

/// Calldata of the proxy's call that pays this payment: the exact proxy's `settle(permit, owner,
/// witness, signature)`, or `settleWithPermit(permit2612, …the same)` when the payment carries an
/// `eip2612GasSponsoring` permit (whatever the payer's allowance: the calldata is fixed by the
/// request alone, and the proxy goes on with the transfer when the token rejects a permit it no
/// longer needs). An `upto` payment calls the upto proxy's, with the amount to charge
/// ([`upto_calldata`]).
pub fn settle_calldata(payment: &Permit2Payment, sig: &Bytes) -> Bytes {
    use IX402ExactPermit2Proxy as Proxy;
    if payment.is_upto() {
        return upto_calldata(payment, sig);
    }
    let a = &payment.authorization;
    let permit = Proxy::PermitTransferFrom {
        permitted: Proxy::TokenPermissions {
            token: a.token,
            amount: a.amount,
        },
        nonce: a.nonce,
        deadline: a.deadline,
    };
    let witness = Proxy::Witness {
        to: a.to,
        validAfter: a.valid_after,
    };
    let signature = sig.clone();
    match payment.sponsor() {
        None => Proxy::settleCall {
            permit,
            owner: a.from,
            witness,
            signature,
        }
        .abi_encode(),
        Some(sponsor) => Proxy::settleWithPermitCall {
            permit2612: sponsor.proxy_permit(),
            permit,
            owner: a.from,
            witness,
            signature,
        }
        .abi_encode(),
    }
    .into()
}

/// The upto proxy's `settle(permit, amount, owner, witness, signature)` (or `settleWithPermit`),
/// charging `payment.amount`: the requirements' amount, the maximum at `/verify` and the actual
/// charge at `/settle`.
fn upto_calldata(payment: &Permit2Payment, sig: &Bytes) -> Bytes {
    use IX402UptoPermit2Proxy as Proxy;
    let a = &payment.authorization;
    let permit = Proxy::PermitTransferFrom {
        permitted: Proxy::TokenPermissions {
            token: a.token,
            amount: a.amount,
        },
        nonce: a.nonce,
        deadline: a.deadline,
    };
    let witness = Proxy::Witness {
        to: a.to,
        facilitator: a.facilitator.unwrap_or_default(),
        validAfter: a.valid_after,
    };
    let signature = sig.clone();
    match payment.sponsor() {
        None => Proxy::settleCall {
            permit,
            amount: payment.amount,
            owner: a.from,
            witness,
            signature,
        }
        .abi_encode(),
        Some(sponsor) => {
            let p = sponsor.proxy_permit();
            Proxy::settleWithPermitCall {
                permit2612: Proxy::EIP2612Permit {
                    value: p.value,
                    deadline: p.deadline,
                    r: p.r,
                    s: p.s,
                    v: p.v,
                },
                permit,
                amount: payment.amount,
                owner: a.from,
                witness,
                signature,
            }
            .abi_encode()
        }
    }
    .into()
}

/// The second `eth_call` of an `upto` payment's checks: the settlement, from the facilitator the
/// witness names (the upto proxy refuses any other caller): `(from, to, calldata)`.
pub fn upto_simulation(payment: &Permit2Payment, sig: &Bytes) -> Option<(Address, Address, Bytes)> {
    let facilitator = payment.authorization.facilitator?;
    Some((facilitator, payment.proxy(), settle_calldata(payment, sig)))
}

/// The one Multicall3 call that reads every fact (see the module's doc for the order); for an
/// `upto` payment, the reads without the settlement.
pub fn batch_calldata(payment: &Permit2Payment, sig: &Bytes) -> Bytes {
    let a = &payment.authorization;
    let proxy = payment.proxy();
    let call = |target: Address, data: Vec<u8>| IMulticall3::Call {
        target,
        callData: data.into(),
    };
    let mut calls = vec![
        call(proxy, IX402ExactPermit2Proxy::PERMIT2Call {}.abi_encode()),
        call(
            a.token,
            IErc20::balanceOfCall { account: a.from }.abi_encode(),
        ),
        call(
            a.token,
            IErc20::allowanceCall {
                owner: a.from,
                spender: PERMIT2,
            }
            .abi_encode(),
        ),
        call(
            PERMIT2,
            IPermit2::nonceBitmapCall {
                owner: a.from,
                wordPos: a.nonce >> 8,
            }
            .abi_encode(),
        ),
    ];
    if !payment.is_upto() {
        calls.push(call(proxy, settle_calldata(payment, sig).to_vec()));
    }
    IMulticall3::tryAggregateCall {
        requireSuccess: false,
        calls,
    }
    .abi_encode()
    .into()
}

/// What the batch answered; `None` for a read that reverted or answered something undecodable
/// (an address without code answers nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFacts {
    /// The proxy's `PERMIT2()`.
    pub proxy_permit2: Option<Address>,
    pub balance: Option<U256>,
    /// `token.allowance(payer, Permit2)`.
    pub allowance: Option<U256>,
    /// `Permit2.nonceBitmap(payer, nonce >> 8)`.
    pub nonce_word: Option<U256>,
    /// The simulated `settle`: `Ok`, or its revert named ([`revert_name`]).
    pub settle: Result<(), String>,
}

impl ChainFacts {
    /// Decodes Multicall3's answer to [`batch_calldata`]; `None` if it is not five results. For an
    /// `upto` payment (four results) the simulation's outcome is `simulated`, from its own call.
    pub fn decode(returned: &[u8], simulated: Option<Result<(), String>>) -> Option<ChainFacts> {
        let results = IMulticall3::tryAggregateCall::abi_decode_returns(returned).ok()?;
        let (reads, settle) = match (results.as_slice(), simulated) {
            ([reads @ .., settle], None) if reads.len() == 4 => (
                reads,
                match settle.success {
                    true => Ok(()),
                    false => Err(revert_name(&settle.returnData)),
                },
            ),
            (reads, Some(simulated)) if reads.len() == 4 => (reads, simulated),
            _ => return None,
        };
        let [proxy, balance, allowance, nonce_word] = reads else {
            return None;
        };
        let ok = |r: &IMulticall3::Result| r.success.then(|| r.returnData.clone());
        let uint = |r: &IMulticall3::Result| ok(r).and_then(|d| U256::abi_decode(&d).ok());
        Some(ChainFacts {
            proxy_permit2: ok(proxy).and_then(|d| Address::abi_decode(&d).ok()),
            balance: uint(balance),
            allowance: uint(allowance),
            nonce_word: uint(nonce_word),
            settle,
        })
    }
}

/// Whether the payment's nonce is marked used in its bitmap word.
fn nonce_used(nonce: U256, word: U256) -> bool {
    let bit = (nonce & U256::from(0xffu8)).to::<usize>();
    word.bit(bit)
}

/// The verdict on a payment that passed every local check, from the chain's answers, in this
/// order: the proxy missing, the nonce used, the balance short, Permit2's allowance short (unless
/// an `eip2612GasSponsoring` permit made the simulated settlement pass; the
/// reference's diagnosis order, with the nonce, which it leaves to the simulation, named first:
/// a used nonce can never settle, whatever the payer funds or approves), a token that answers no
/// balance or allowance, and last the simulation itself, whose revert is named when known.
pub fn judge(payment: &Permit2Payment, facts: &ChainFacts) -> Result<(), Rejection> {
    let a = &payment.authorization;
    proxy_deployed(payment, facts)?;
    signature_accepted(facts)?;
    if facts
        .nonce_word
        .is_some_and(|word| nonce_used(a.nonce, word))
    {
        return Err(Rejection::new(
            Reason::Permit2InvalidNonce,
            format!(
                "Permit2 nonce {} of {} is already used (settled or invalidated)",
                a.nonce, a.from
            ),
        ));
    }
    if let Some(balance) = facts.balance.filter(|b| *b < payment.amount) {
        return Err(Rejection::new(
            Reason::Permit2InsufficientBalance,
            format!(
                "{} holds {balance} of {} but the payment needs {}",
                a.from, a.token, payment.amount
            ),
        ));
    }
    // With an EIP-2612 permit the allowance is given in the settlement itself: short now, it is
    // enough if the simulated `settleWithPermit` passed (the permit did its work).
    let sponsored = payment.sponsor().is_some() && facts.settle.is_ok();
    if let Some(allowance) = facts
        .allowance
        .filter(|x| *x < payment.amount && !sponsored)
    {
        return Err(Rejection::new(
            Reason::Permit2AllowanceRequired,
            format!(
                "{} allows Permit2 ({PERMIT2}) {allowance} of {} but the payment needs {}: the payer must approve Permit2 on the token once",
                a.from, a.token, payment.amount
            ),
        ));
    }
    if facts.balance.is_none() || facts.allowance.is_none() {
        return Err(Rejection::new(
            Reason::Permit2SimulationFailed,
            format!(
                "{} answers no ERC-20 balanceOf/allowance: it cannot be paid through Permit2",
                a.token
            ),
        ));
    }
    match &facts.settle {
        Ok(()) => Ok(()),
        Err(revert) => Err(Rejection::new(
            Reason::Permit2SimulationFailed,
            format!("the simulated settlement through the proxy reverted: {revert}"),
        )),
    }
}

/// Permit2 refused the signature in the simulated settlement: `ecrecover` gave another signer
/// (an EOA payer, or a payer whose code Permit2 did not find), or the payer's contract wallet
/// answered `isValidSignature` with anything but its magic value. Permit2 checks the signature
/// after the nonce and before moving anything, so this comes before balance and allowance: what
/// the reference's local check says of a wrong key's signature, whatever the payer holds.
fn signature_accepted(facts: &ChainFacts) -> Result<(), Rejection> {
    match &facts.settle {
        Err(revert) if is_signature_revert(revert) => Err(Rejection::new(
            Reason::Permit2InvalidSignature,
            format!("Permit2 refused the payer's signature in the simulated settlement: {revert}"),
        )),
        _ => Ok(()),
    }
}

/// Whether a revert, as [`revert_name`] names it or as a node reports it (its raw data in hex),
/// is one of Permit2's signature errors (the same in canonical Permit2 and the local stand-in).
pub fn is_signature_revert(revert: &str) -> bool {
    use IPermit2::{
        InvalidContractSignature, InvalidSignature, InvalidSignatureLength, InvalidSigner,
    };
    let errors: [(&str, [u8; 4]); 4] = [
        ("InvalidSignatureLength", InvalidSignatureLength::SELECTOR),
        ("InvalidSignature", InvalidSignature::SELECTOR),
        ("InvalidSigner", InvalidSigner::SELECTOR),
        (
            "InvalidContractSignature",
            InvalidContractSignature::SELECTOR,
        ),
    ];
    let lower = revert.to_ascii_lowercase();
    errors.iter().any(|(name, selector)| {
        revert.starts_with(&format!("{name}({name}")) && revert.ends_with("(Permit2)")
            || lower.contains(&alloy::primitives::hex::encode(selector))
    })
}

/// The payment's proxy (exact or upto) is there, and uses the canonical Permit2.
fn proxy_deployed(payment: &Permit2Payment, facts: &ChainFacts) -> Result<(), Rejection> {
    let proxy = payment.proxy();
    match facts.proxy_permit2 {
        Some(permit2) if permit2 == PERMIT2 => Ok(()),
        None => Err(Rejection::new(
            Reason::Permit2ProxyNotDeployed,
            format!(
                "the x402 Permit2 proxy the payment names is not deployed at {proxy} on this chain"
            ),
        )),
        Some(other) => Err(Rejection::new(
            Reason::Permit2ProxyNotDeployed,
            format!("the contract at {proxy} names {other} as Permit2, not {PERMIT2}"),
        )),
    }
}

/// The name of a revert from the proxy or Permit2, or its raw data when it is neither's.
pub fn revert_name(data: &[u8]) -> String {
    if let Ok(e) = IX402ExactPermit2Proxy::IX402ExactPermit2ProxyErrors::abi_decode(data) {
        return format!("{e:?} (x402 Permit2 proxy)");
    }
    if let Ok(e) = IX402UptoPermit2Proxy::IX402UptoPermit2ProxyErrors::abi_decode(data) {
        return format!("{e:?} (x402 upto Permit2 proxy)");
    }
    if let Ok(e) = IPermit2::IPermit2Errors::abi_decode(data) {
        return format!("{e:?} (Permit2)");
    }
    if let Ok(e) = alloy::sol_types::Revert::abi_decode(data) {
        return format!("{:?}", e.reason);
    }
    if data.is_empty() {
        return "no revert data".into();
    }
    format!("0x{}", alloy::primitives::hex::encode(data))
}
