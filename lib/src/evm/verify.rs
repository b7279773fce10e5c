//! Verification of `exact` EIP-3009 payments on one EVM network.
//!
//! Local checks first, cheapest first, with no I/O ([`ExactEvm::check`]); then exactly one chain
//! round trip on the happy path: the `eth_call` simulation of `transferWithAuthorization`, which also
//! covers balance, nonce reuse and the token's own signature check. Only when the simulation fails do
//! we spend a second call (one Multicall3 batch) to say why.

use alloy::{
    primitives::{keccak256, Address, Bytes, B256, U256},
    sol_types::{SolCall, SolValue},
};
use tracing::instrument;

use super::{
    abi::{IEip3009, IMulticall3, MULTICALL3},
    chain::{CallOutcome, Chain},
    checks::{self, ContractHint, Signer},
    counterfactual,
    payload::ExactPayment,
};
use crate::protocol::{EvmNetwork, Payment, Reason, Rejection};

/// The `exact` scheme on one configured EVM network.
#[derive(Debug)]
pub struct ExactEvm {
    network: EvmNetwork,
    assets: Vec<Address>,
    chain: Chain,
    /// Whether payers whose signature only their contract can judge (ERC-1271) are accepted.
    contract_wallets: bool,
    /// The signer advertised for `upto` on this network (`uptoFacilitator`); `None`: `upto` is
    /// not served here.
    upto: Option<Address>,
    /// The ERC-6492 factories through which a payer's wallet may be deployed when its payment
    /// settles (`eip6492AllowedFactories`); empty: none.
    factories: Vec<Address>,
}

/// A payment that passed every local check and is ready for the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub payment: ExactPayment,
    pub signer: Signer,
}

impl Checked {
    /// The payment's identity for a settlement record (DESIGN I2): a hash over everything that
    /// makes it this payment and no other. The authorization (from, to, value, validAfter,
    /// validBefore, nonce), its signature, the token, the network (CAIP-2, so a v1 and a v2 request
    /// for the same authorization agree) and the requirements' `payTo` and amount.
    pub fn digest(&self, network: &str) -> B256 {
        let p = &self.payment;
        let a = &p.authorization;
        keccak256(
            (
                network.to_owned(),
                p.asset,
                a.from,
                a.to,
                a.value,
                a.valid_after,
                a.valid_before,
                a.nonce,
                p.signature.clone(),
                p.pay_to,
                p.amount,
            )
                .abi_encode(),
        )
    }

    /// What the payment moves when it settles.
    pub fn transfer(&self) -> super::Transfer {
        let a = &self.payment.authorization;
        super::Transfer {
            asset: self.payment.asset,
            from: a.from,
            to: a.to,
            value: a.value,
        }
    }

    /// Calldata of `transferWithAuthorization`: the `v, r, s` overload for an EOA (what every USDC
    /// version has), the `bytes` overload for a contract wallet (FiatToken v2.2, which asks ERC-1271).
    pub fn transfer_calldata(&self) -> Bytes {
        let a = &self.payment.authorization;
        match &self.signer {
            Signer::Eoa(sig) => IEip3009::transferWithAuthorization_0Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                v: sig.v,
                r: sig.r,
                s: sig.s,
            }
            .abi_encode()
            .into(),
            Signer::Contract { signature, .. }
            | Signer::Counterfactual(super::signature::Wrapped6492 {
                inner: signature, ..
            }) => IEip3009::transferWithAuthorization_1Call {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                signature: signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }

    /// The contract the settlement calls when it is not the token: Multicall3, for a wallet an
    /// allowed factory may still have to deploy ([`counterfactual`]).
    pub fn settle_target(&self) -> Option<Address> {
        match self.signer {
            Signer::Counterfactual(_) => Some(MULTICALL3),
            Signer::Eoa(_) | Signer::Contract { .. } => None,
        }
    }

    /// The settlement's calldata, sent to [`Checked::settle_target`] or the token: the transfer,
    /// preceded by the wallet's deployment for an allowed ERC-6492 factory. It depends on the
    /// payment alone (not on whether the wallet exists yet), so every `/settle` of one payment
    /// builds the same record.
    pub fn settle_calldata(&self) -> Bytes {
        match &self.signer {
            Signer::Counterfactual(deployment) => counterfactual::deploy_then_transfer(
                deployment,
                self.payment.asset,
                self.transfer_calldata(),
                false,
            ),
            Signer::Eoa(_) | Signer::Contract { .. } => self.transfer_calldata(),
        }
    }
}

impl ExactEvm {
    pub fn new(network: EvmNetwork, assets: Vec<Address>, chain: Chain) -> Self {
        ExactEvm {
            network,
            assets,
            chain,
            contract_wallets: true,
            upto: None,
            factories: Vec::new(),
        }
    }

    /// Allows ERC-6492 wallets to be deployed through these factories (`eip6492AllowedFactories`).
    pub fn with_erc6492_factories(mut self, factories: Vec<Address>) -> Self {
        self.factories = factories;
        self
    }

    /// Serves `upto` on this network, settled by the lane whose address is `facilitator`.
    pub fn with_upto(mut self, facilitator: Option<Address>) -> Self {
        self.upto = facilitator;
        self
    }

    /// The signer advertised for `upto` here, if `upto` is served.
    pub fn upto(&self) -> Option<Address> {
        self.upto
    }

    /// Whether payers that are contract wallets are accepted on this network (`X402_CONTRACT_WALLETS`).
    pub fn contract_wallets(&self) -> bool {
        self.contract_wallets
    }

    /// Accepts (the default) or refuses contract-wallet payers (`X402_CONTRACT_WALLETS`).
    pub fn with_contract_wallets(mut self, allowed: bool) -> Self {
        self.contract_wallets = allowed;
        self
    }

    pub fn network(&self) -> &EvmNetwork {
        &self.network
    }

    /// The tokens this deployment accepts on this network (`X402_NETWORKS`' `assets`).
    pub fn assets(&self) -> &[Address] {
        &self.assets
    }

    /// Every check that needs no chain: scheme, network, payload shape, accepted asset, EIP-712
    /// domain, recipient, amount, time window and the signature as far as ecrecover can tell.
    /// `now` is unix seconds.
    pub fn check(&self, payment: &Payment, now: u64) -> Result<Checked, Rejection> {
        let exact = ExactPayment::parse(payment, self.network.chain_id())?;
        checks::asset_accepted(exact.asset, &self.assets)?;
        checks::recipient(&exact)?;
        checks::amount(&exact)?;
        checks::valid_before(&exact, now)?;
        checks::valid_after(&exact, now)?;
        let signer = checks::signer(&exact, &self.factories)?;
        Ok(Checked {
            payment: exact,
            signer,
        })
    }

    /// [`ExactEvm::check`] without the time window: what settle checks before it looks for the
    /// payment's record, since a payment that has a record is answered from it whatever the clock
    /// says (a retry after `settlement_pending` may come after `validBefore`).
    pub fn check_terms(&self, payment: &Payment) -> Result<Checked, Rejection> {
        let exact = ExactPayment::parse(payment, self.network.chain_id())?;
        checks::asset_accepted(exact.asset, &self.assets)?;
        checks::recipient(&exact)?;
        checks::amount(&exact)?;
        let signer = checks::signer(&exact, &self.factories)?;
        Ok(Checked {
            payment: exact,
            signer,
        })
    }

    /// The time window of a payment that passed [`ExactEvm::check_terms`]; `now` is unix seconds.
    pub fn check_window(&self, checked: &Checked, now: u64) -> Result<(), Rejection> {
        checks::valid_before(&checked.payment, now)?;
        checks::valid_after(&checked.payment, now)
    }

    /// Full verification: the local checks, then the simulation, then a diagnosis if it failed.
    /// Reads the chain; writes nothing anywhere (DESIGN I1).
    ///
    /// An EOA payment costs one `eth_call`, and so does an ERC-6492 wallet's from an allowed factory
    /// (deployment and transfer simulated in one Multicall3 batch). A signature only a contract can
    /// judge costs one `eth_getCode` more when it cannot be a wallet's otherwise (wrapped for a
    /// factory not allowed, or recovering to someone else), so that a plain wrong signature is
    /// still named as such.
    #[instrument(skip_all, fields(network = %self.network.caip2()))]
    pub async fn verify(&self, payment: &Payment, now: u64) -> Result<Checked, Rejection> {
        let checked = self.check(payment, now)?;
        self.confirm(&checked).await?;
        Ok(checked)
    }

    /// The chain's part of verification, for a payment that passed [`ExactEvm::check`]: whether a
    /// contract-judged signature has a contract behind it, then the simulation. Settle runs it too.
    pub async fn confirm(&self, checked: &Checked) -> Result<(), Rejection> {
        self.contract_payer(checked).await?;
        self.simulate(checked).await
    }

    /// Whether a signature only a contract can judge may be judged here, and, when it cannot be
    /// a deployed wallet's otherwise, whether the payer has code.
    async fn contract_payer(&self, checked: &Checked) -> Result<(), Rejection> {
        checks::contract_wallets_allowed(&checked.payment, &checked.signer, self.contract_wallets)?;
        if let Signer::Contract {
            hint: hint @ (ContractHint::Counterfactual(_) | ContractHint::RecoveredOther(_)),
            ..
        } = checked.signer
        {
            if !self.payer_has_code(&checked.payment).await? {
                return Err(checks::no_contract_at_payer(&checked.payment, hint));
            }
        }
        Ok(())
    }

    /// [`ExactEvm::confirm`] for a settlement: with `sender` (a lane's address and the fees it
    /// will offer), the simulation is the `eth_estimateGas` the transaction will need, run as it
    /// will run, and its gas is returned; without, the `eth_call` of [`ExactEvm::confirm`]. Either
    /// way one request, and a revert is diagnosed the same way.
    pub async fn confirm_as(
        &self,
        checked: &Checked,
        sender: Option<(Address, (u128, u128))>,
    ) -> Result<Option<u64>, Rejection> {
        let Some((from, fees)) = sender else {
            return self.confirm(checked).await.map(|()| None);
        };
        self.contract_payer(checked).await?;
        let target = checked.settle_target().unwrap_or(checked.payment.asset);
        let estimate = self
            .chain
            .estimate_gas(from, target, checked.settle_calldata(), fees)
            .await
            .map_err(|e| Rejection::new(Reason::UnexpectedVerifyError, e.to_string()))?;
        match estimate {
            Ok(gas) => Ok(Some(gas)),
            Err(message) => Err(self.reverted(checked, &message).await),
        }
    }

    /// The chain this network's payments run on.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    async fn payer_has_code(&self, payment: &ExactPayment) -> Result<bool, Rejection> {
        self.chain
            .code_at(payment.authorization.from)
            .await
            .map(|code| !code.is_empty())
            .map_err(|e| Rejection::new(Reason::UnexpectedVerifyError, e.to_string()))
    }

    /// Simulates the transfer with `eth_call`. A revert is diagnosed into the most specific reason.
    /// A wallet an allowed factory may still have to deploy is deployed first in the same call
    /// ([`counterfactual`]): still one request.
    pub async fn simulate(&self, checked: &Checked) -> Result<(), Rejection> {
        let unexpected =
            |e: super::ChainError| Rejection::new(Reason::UnexpectedVerifyError, e.to_string());
        let outcome = match &checked.signer {
            Signer::Counterfactual(deployment) => {
                let batch = counterfactual::deploy_then_transfer(
                    deployment,
                    checked.payment.asset,
                    checked.transfer_calldata(),
                    true,
                );
                match self
                    .chain
                    .call(None, MULTICALL3, batch)
                    .await
                    .map_err(unexpected)?
                {
                    CallOutcome::Returned(data) => counterfactual::transfer_outcome(&data),
                    reverted => reverted,
                }
            }
            Signer::Eoa(_) | Signer::Contract { .. } => self
                .chain
                .call(None, checked.payment.asset, checked.transfer_calldata())
                .await
                .map_err(unexpected)?,
        };
        let CallOutcome::Reverted { message } = outcome else {
            return Ok(());
        };
        Err(self.reverted(checked, &message).await)
    }

    /// Why a simulation of the transfer reverted with `message`.
    async fn reverted(&self, checked: &Checked, message: &str) -> Rejection {
        // A smart-wallet signature for an address without code is not worth diagnosing further.
        if let Signer::Contract {
            hint: ContractHint::SmartWallet,
            ..
        } = checked.signer
        {
            match self.payer_has_code(&checked.payment).await {
                Ok(true) => {}
                Ok(false) => {
                    return checks::no_contract_at_payer(
                        &checked.payment,
                        ContractHint::SmartWallet,
                    )
                }
                Err(rejection) => return rejection,
            }
        }
        self.diagnose(&checked.payment, message).await
    }

    /// Why the simulation reverted: one Multicall3 batch of the token's view functions
    /// ([`token_views`](Self::token_views)), explained by [`explain_revert`]. If the batch itself
    /// fails, the generic reason stands.
    async fn diagnose(&self, payment: &ExactPayment, revert: &str) -> Rejection {
        match self.token_views(payment).await {
            Some(views) => explain_revert(payment, &views, revert),
            None => simulation_failed(revert),
        }
    }

    /// The token's balance of the payer, name, version and the nonce's authorization state, in
    /// one batch read in the reference's order (x402-protocol.md §6.2 step 11); `None` when the
    /// batch call itself fails or answers something else.
    async fn token_views(&self, payment: &ExactPayment) -> Option<TokenViews> {
        let a = &payment.authorization;
        let call = |data: Vec<u8>| IMulticall3::Call {
            target: payment.asset,
            callData: data.into(),
        };
        let batch = IMulticall3::tryAggregateCall {
            requireSuccess: false,
            calls: vec![
                call(IEip3009::balanceOfCall { account: a.from }.abi_encode()),
                call(IEip3009::nameCall {}.abi_encode()),
                call(IEip3009::versionCall {}.abi_encode()),
                call(
                    IEip3009::authorizationStateCall {
                        authorizer: a.from,
                        nonce: a.nonce,
                    }
                    .abi_encode(),
                ),
            ],
        };
        let outcome = self
            .chain
            .call(None, MULTICALL3, batch.abi_encode().into())
            .await
            .ok()?;
        let CallOutcome::Returned(data) = outcome else {
            return None;
        };
        let results = IMulticall3::tryAggregateCall::abi_decode_returns(&data).ok()?;
        let [balance, name, version, used] = results.as_slice() else {
            return None;
        };
        let decoded = |r: &IMulticall3::Result| r.success.then_some(r.returnData.clone());
        Some(TokenViews {
            balance: decoded(balance).and_then(|d| U256::abi_decode(&d).ok()),
            name: decoded(name).and_then(|d| String::abi_decode(&d).ok()),
            version: decoded(version).and_then(|d| String::abi_decode(&d).ok()),
            used: decoded(used).and_then(|d| bool::abi_decode(&d).ok()),
        })
    }
}

/// What the token's view functions answered; `None` for a call that reverted or answered
/// something undecodable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenViews {
    pub balance: Option<U256>,
    pub name: Option<String>,
    pub version: Option<String>,
    /// `authorizationState(from, nonce)`.
    pub used: Option<bool>,
}

/// The most specific reason a simulated transfer reverted, from the token's views, checked in
/// the reference's order: not EIP-3009, nonce used, name, version, balance; otherwise the
/// generic `simulation_failed` with the revert message (pure).
pub fn explain_revert(payment: &ExactPayment, views: &TokenViews, revert: &str) -> Rejection {
    let a = &payment.authorization;
    match views.used {
        None => {
            return Rejection::new(
                Reason::Eip3009NotSupported,
                format!(
                    "{} does not answer authorizationState: it is not an EIP-3009 token",
                    payment.asset
                ),
            )
        }
        Some(true) => {
            return Rejection::new(
                Reason::NonceAlreadyUsed,
                format!(
                    "authorization nonce {} of {} is already used or canceled on chain",
                    a.nonce, a.from
                ),
            )
        }
        Some(false) => {}
    }
    if let Some(name) = views.name.as_ref().filter(|n| **n != payment.domain.name) {
        return Rejection::new(
            Reason::TokenNameMismatch,
            format!(
                "the token's EIP-712 name is {name:?}, not {:?} as extra.name says",
                payment.domain.name
            ),
        );
    }
    if let Some(version) = views
        .version
        .as_ref()
        .filter(|v| **v != payment.domain.version)
    {
        return Rejection::new(
            Reason::TokenVersionMismatch,
            format!(
                "the token's EIP-712 version is {version:?}, not {:?} as extra.version says",
                payment.domain.version
            ),
        );
    }
    if let Some(balance) = views.balance.filter(|b| *b < payment.amount) {
        return Rejection::new(
            Reason::InsufficientBalance,
            format!(
                "{} holds {balance} but the payment needs {}",
                a.from, payment.amount
            ),
        );
    }
    simulation_failed(revert)
}

/// The generic reason, when nothing more specific is known.
fn simulation_failed(revert: &str) -> Rejection {
    Rejection::new(
        Reason::SimulationFailed,
        format!("the transfer simulation failed: {revert}"),
    )
}
