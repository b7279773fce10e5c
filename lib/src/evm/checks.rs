//! The local checks of an `exact` EIP-3009 payment, one small function each, so that each can be
//! tested alone and verify and settle compose the same ones (x402-protocol.md §6.2).

use alloy::primitives::{Address, Bytes, U256};

use super::{
    eip712,
    payload::ExactPayment,
    signature::{self, EcdsaSignature, SignatureKind, Wrapped6492},
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

/// Who can vouch for the payer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// ecrecover gives the payer: settled with the `v, r, s` overload.
    Eoa(EcdsaSignature),
    /// Only the payer's own contract can tell (ERC-1271); the token asks it during the simulation
    /// and the settlement, through the `bytes` overload.
    Contract {
        signature: Bytes,
        hint: ContractHint,
    },
    /// ERC-6492 wrapped, naming a factory on this network's allow-list
    /// (`eip6492AllowedFactories`): the wallet may not exist yet. The simulation and the
    /// settlement call the factory first (through Multicall3, its failure allowed, so a wallet
    /// deployed meanwhile does not stop the transfer), then the `bytes` overload with the inner
    /// signature, which the deployed wallet judges (ERC-1271).
    Counterfactual(Wrapped6492),
}

impl Signer {
    /// Whether the payer's own contract judges the signature (ERC-1271, deployed or not yet):
    /// its code runs when the settlement is mined.
    pub fn is_contract(&self) -> bool {
        !matches!(self, Signer::Eoa(_))
    }
}

/// Why a signature was handed to ERC-1271, which decides what to answer when the payer has no code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractHint {
    /// Not 65 bytes: a smart-wallet signature.
    SmartWallet,
    /// ERC-6492 wrapped, naming a factory not on the allow-list: fine only if the wallet is
    /// already deployed, since we deploy wallets only through allowed factories. Holds the factory.
    Counterfactual(Address),
    /// 65 bytes that recover to someone else: a wallet owner's signature, or simply a wrong one.
    RecoveredOther(Address),
}

/// Checks the signature as far as it can be checked without the chain: an ECDSA signature that
/// recovers to the payer is settled here; anything else can only be judged by the payer's contract,
/// if it has one (the token itself asks a signer with code through ERC-1271), or will have one
/// once a factory in `factories` (the network's ERC-6492 allow-list) has deployed it.
pub fn signer(payment: &ExactPayment, factories: &[Address]) -> Result<Signer, Rejection> {
    let contract = |signature: Bytes, hint| Ok(Signer::Contract { signature, hint });
    match signature::classify(&payment.signature)? {
        SignatureKind::Ecdsa(sig) => {
            match signature::recover(&eip712::signing_digest(payment), &sig) {
                Some(signer) if signer == payment.authorization.from => Ok(Signer::Eoa(sig)),
                Some(signer) => contract(
                    payment.signature.clone(),
                    ContractHint::RecoveredOther(signer),
                ),
                None => contract(
                    payment.signature.clone(),
                    ContractHint::RecoveredOther(Address::ZERO),
                ),
            }
        }
        SignatureKind::Erc6492(wrapped) if factories.contains(&wrapped.factory) => {
            Ok(Signer::Counterfactual(wrapped))
        }
        // No factory named: nothing to deploy, so a wallet must be there already (the reference
        // reads a zero factory as no deployment information too).
        SignatureKind::Erc6492(wrapped) if wrapped.factory.is_zero() => {
            contract(wrapped.inner, ContractHint::SmartWallet)
        }
        SignatureKind::Erc6492(wrapped) => {
            contract(wrapped.inner, ContractHint::Counterfactual(wrapped.factory))
        }
        SignatureKind::SmartWallet => {
            contract(payment.signature.clone(), ContractHint::SmartWallet)
        }
    }
}

/// With contract-wallet payers turned off (`X402_CONTRACT_WALLETS=off`), a signature only a
/// contract could judge is refused before the chain is asked, as a wrong signature is: a payer's
/// own contract decides what happens when the settlement is mined, which a simulation cannot
/// promise (docs/security.md).
pub fn contract_wallets_allowed(
    payment: &ExactPayment,
    signer: &Signer,
    allowed: bool,
) -> Result<(), Rejection> {
    if allowed || !signer.is_contract() {
        return Ok(());
    }
    let from = payment.authorization.from;
    let what = match signer {
        Signer::Contract {
            hint: ContractHint::RecoveredOther(signer),
            ..
        } => {
            format!("the signature recovers to {signer}, not to authorization.from {from}")
        }
        _ => format!(
            "a {}-byte signature is a smart wallet's",
            payment.signature.len()
        ),
    };
    Err(Rejection::new(
        Reason::InvalidExactEvmSignature,
        format!("{what}, and this facilitator accepts no contract-wallet (ERC-1271, ERC-6492) signatures: sign with {from}'s own key"),
    ))
}

/// The answer for a contract-wallet payer whose settlements kept passing simulation and reverting
/// on chain ([`crate::config::RevertPolicy`]): refused until `until` (unix seconds), because its
/// wallet, not its signature, decides what happens when the transaction is mined.
pub fn payer_refused(payer: Address, network: &str, reverts: u32, until: u64) -> Rejection {
    Rejection::new(
        Reason::InvalidExactEvmSignature,
        format!(
            "{payer}'s last {reverts} settlements on {network} passed simulation and then reverted \
             on chain, at this facilitator's expense: its contract-wallet payments are refused \
             until {until} (unix time); sign with a key instead, or wait"
        ),
    )
}

/// The answer for a contract-judged signature when the payer turns out to have no code.
pub fn no_contract_at_payer(payment: &ExactPayment, hint: ContractHint) -> Rejection {
    let from = payment.authorization.from;
    match hint {
        ContractHint::RecoveredOther(signer) => Rejection::new(
            Reason::InvalidExactEvmSignature,
            format!(
                "the signature recovers to {signer}, not to authorization.from {from} (wrong key, wrong EIP-712 domain, or a field changed after signing)"
            ),
        ),
        ContractHint::Counterfactual(factory) => Rejection::new(
            Reason::Eip6492FactoryNotAllowed,
            format!("{from} is not deployed, and the factory {factory} its ERC-6492 signature names is not on this network's allow-list (eip6492AllowedFactories): this facilitator deploys wallets only through factories its operator chose"),
        ),
        ContractHint::SmartWallet => Rejection::new(
            Reason::UndeployedSmartWallet,
            format!(
                "a {}-byte signature needs a smart wallet at {from}, but there is no code there",
                payment.signature.len()
            ),
        ),
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
