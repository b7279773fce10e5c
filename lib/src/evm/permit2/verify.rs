//! Verification of Permit2 payments (`exact`, and `upto`) on one EVM network, beside the EIP-3009
//! path of [`ExactEvm`]: local checks first ([`ExactEvm::check_permit2`]), then exactly one chain
//! round trip, the batch of [`super::facts`], whatever the outcome (for `upto`, two `eth_call`s
//! sent at once: the upto proxy answers only its facilitator, so its simulation cannot go
//! through Multicall3).

use alloy::{
    primitives::{keccak256, Address, Bytes, B256},
    sol_types::SolValue,
};

use super::{
    checks,
    facts::{self, ChainFacts},
    payload::Permit2Payment,
};
use crate::{
    evm::{abi::MULTICALL3, CallOutcome, ExactEvm, Transfer},
    protocol::{Payment, Reason, Rejection},
};

/// A Permit2 payment that passed every local check and is ready for the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2Checked {
    pub payment: Permit2Payment,
    /// The signature as the proxy passes it to Permit2: the payer key's with `v` normalised, or a
    /// deployed contract wallet's as sent ([`super::checks::signer`]).
    pub signature: Bytes,
}

impl Permit2Checked {
    /// Calldata of the exact proxy's `settle` (or `settleWithPermit`) that pays this payment.
    pub fn settle_calldata(&self) -> Bytes {
        facts::settle_calldata(&self.payment, &self.signature)
    }

    /// The payment's identity for a settlement record (DESIGN I2): the network (CAIP-2), the
    /// payer, the EIP-712 digest of the whole signed permit (token, amount, spender, nonce,
    /// deadline, witness `to` and `validAfter`, chain) and the signature as sent. The checks
    /// have made the requirements' asset, `payTo` and amount equal to the permit's, so the
    /// digest binds them too. A second permit under the same Permit2 nonce has another digest.
    /// With an `eip2612GasSponsoring` permit, its value, deadline and signature as sent follow (the
    /// checks have made its owner, token and spender the payer, the asset and Permit2): another
    /// sponsoring permit, or none, is another request. Without one the digest is as before.
    /// An `upto` payment's digest also binds the amount charged (its signed permit, witness
    /// facilitator included, is in the EIP-712 digest): the same permit settled for another
    /// amount is another request, never answered from this one's record.
    pub fn digest(&self, network: &str) -> B256 {
        let base = (
            network.to_owned(),
            self.payment.authorization.from,
            super::eip712::signing_digest(&self.payment),
            self.payment.signature.clone(),
        );
        let sponsored = self
            .payment
            .sponsor()
            .map(|p| (p.amount, p.deadline, p.signature.clone()));
        keccak256(match (sponsored, self.payment.is_upto()) {
            (None, false) => base.abi_encode(),
            (Some(p), false) => (base, p.0, p.1, p.2).abi_encode(),
            (sponsored, true) => {
                let p = sponsored.unwrap_or_default();
                ("upto", base, self.payment.amount, p.0, p.1, p.2).abi_encode()
            }
        })
    }

    /// Whether the signature is not the payer key's, so Permit2 asks the payer's code about it
    /// ([`super::signer::signed_by_key`], the worker's reading of the stored calldata).
    pub fn signed_by_contract(&self) -> bool {
        !super::signer::signed_by_key(&self.settle_calldata(), self.payment.chain_id)
    }

    /// What the payment moves when it settles: the token's `Transfer(payer → payTo, amount)`,
    /// `amount` being the requirements' (for `exact` the checks made it the permitted amount; for
    /// `upto` at `/settle`, the charge).
    pub fn transfer(&self) -> Transfer {
        let a = &self.payment.authorization;
        Transfer {
            asset: self.payment.asset,
            from: a.from,
            to: a.to,
            value: self.payment.amount,
        }
    }
}

impl ExactEvm {
    /// Every check of a Permit2 payment that needs no chain: scheme, network, payload shape,
    /// accepted asset, then spender, recipient, deadline, validAfter, amount, token and signature
    /// (x402-protocol.md §7.2). `now` is unix seconds.
    pub fn check_permit2(&self, payment: &Payment, now: u64) -> Result<Permit2Checked, Rejection> {
        let typed = self.parse_permit2(payment)?;
        let signature = checks::all(&typed, self.assets(), self.upto(), now)?;
        self.wallets_allowed(Permit2Checked {
            payment: typed,
            signature,
        })
    }

    /// With contract wallets turned off (`X402_CONTRACT_WALLETS=off`), a signature that is not the
    /// payer key's is refused before the chain is asked, as on the EIP-3009 path.
    fn wallets_allowed(&self, checked: Permit2Checked) -> Result<Permit2Checked, Rejection> {
        if self.contract_wallets() || !checked.signed_by_contract() {
            return Ok(checked);
        }
        let from = checked.payment.authorization.from;
        Err(Rejection::new(
            Reason::Permit2InvalidSignature,
            format!("the Permit2 signature does not recover to {from}, and this facilitator accepts no contract-wallet (ERC-1271) signatures: sign with {from}'s own key"),
        ))
    }

    /// [`ExactEvm::check_permit2`] without the time window, for `/settle`.
    pub fn check_permit2_terms(&self, payment: &Payment) -> Result<Permit2Checked, Rejection> {
        let typed = self.parse_permit2(payment)?;
        let signature = checks::terms(&typed, self.assets(), self.upto())?;
        self.wallets_allowed(Permit2Checked {
            payment: typed,
            signature,
        })
    }

    /// Types a Permit2 payment by the requirements' scheme: `upto` ([`Permit2Payment::parse_upto`])
    /// or `exact`.
    fn parse_permit2(&self, payment: &Payment) -> Result<Permit2Payment, Rejection> {
        let chain_id = self.network().chain_id();
        match payment.requirements.scheme.as_str() {
            "upto" => Permit2Payment::parse_upto(payment, chain_id),
            _ => Permit2Payment::parse(payment, chain_id),
        }
    }

    /// The time window of a payment that passed [`ExactEvm::check_permit2_terms`].
    pub fn check_permit2_window(
        &self,
        checked: &Permit2Checked,
        now: u64,
    ) -> Result<(), Rejection> {
        checks::window(&checked.payment, now)
    }

    /// The chain's part for a settlement, as [`ExactEvm::confirm_as`] is for EIP-3009: with
    /// `sender` (a lane's address and its fees), `eth_estimateGas` of the proxy's `settle` as the
    /// lane will send it, returning its gas; a revert (or no sender) is judged by the batch of
    /// [`facts`], so the answer names the reason the reference gives (a used nonce is
    /// `permit2_invalid_nonce`). One request on the happy path.
    pub async fn confirm_permit2_as(
        &self,
        checked: &Permit2Checked,
        sender: Option<(Address, (u128, u128))>,
    ) -> Result<Option<u64>, Rejection> {
        let revert = match sender {
            None => None,
            Some((from, fees)) => {
                let proxy = checked.payment.proxy();
                let estimate = self
                    .chain()
                    .estimate_gas(from, proxy, checked.settle_calldata(), fees)
                    .await
                    .map_err(|e| Rejection::new(Reason::UnexpectedVerifyError, e.to_string()))?;
                match estimate {
                    Ok(gas) => return Ok(Some(gas)),
                    Err(revert) => Some(revert),
                }
            }
        };
        let facts = self
            .permit2_facts(&checked.payment, &checked.signature)
            .await?;
        facts::judge(&checked.payment, &facts)?;
        match revert {
            None => Ok(None),
            // The batch passed where the estimate reverted (the state moved between the two, or
            // the lane's call differs): the estimate is the settlement's word.
            Some(revert) => Err(Rejection::new(
                Reason::Permit2SimulationFailed,
                format!("the settlement through the Permit2 proxy would revert: {revert}"),
            )),
        }
    }

    /// The one round trip: Multicall3 `tryAggregate` over [`facts::batch_calldata`], and for an
    /// `upto` payment the settlement's simulation from its facilitator, sent at the same time.
    async fn permit2_facts(
        &self,
        payment: &Permit2Payment,
        signature: &Bytes,
    ) -> Result<ChainFacts, Rejection> {
        let batch = self
            .chain()
            .call(None, MULTICALL3, facts::batch_calldata(payment, signature));
        let (outcome, simulated) = match facts::upto_simulation(payment, signature) {
            None => (batch.await, None),
            Some((from, to, data)) => {
                let (outcome, simulated) =
                    tokio::join!(batch, self.chain().call(Some(from), to, data));
                (outcome, Some(simulated))
            }
        };
        let failed = |e: crate::evm::ChainError| {
            Rejection::new(Reason::UnexpectedVerifyError, e.to_string())
        };
        let simulated = match simulated.transpose().map_err(failed)? {
            None => None,
            Some(CallOutcome::Returned(_)) => Some(Ok(())),
            Some(CallOutcome::Reverted { message }) => Some(Err(message)),
        };
        let unreadable = |what: String| {
            Rejection::new(
                Reason::UnexpectedVerifyError,
                format!("the Permit2 checks through Multicall3 ({MULTICALL3}) {what}"),
            )
        };
        match outcome.map_err(failed)? {
            CallOutcome::Returned(data) => ChainFacts::decode(&data, simulated).ok_or_else(|| {
                unreadable("answered something undecodable: is Multicall3 deployed?".into())
            }),
            CallOutcome::Reverted { message } => Err(unreadable(format!("reverted: {message}"))),
        }
    }
}
