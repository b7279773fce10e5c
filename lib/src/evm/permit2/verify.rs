//! Verification of `exact` Permit2 payments on one EVM network, beside the EIP-3009 path of
//! [`ExactEvm`]: local checks first ([`ExactEvm::check_permit2`]), then exactly one chain round
//! trip, the batch of [`super::facts`], whatever the outcome.

use alloy::primitives::Bytes;
use tracing::instrument;

use super::{
    checks,
    facts::{self, ChainFacts},
    payload::Permit2Payment,
};
use crate::{
    evm::{abi::MULTICALL3, signature::EcdsaSignature, CallOutcome, ExactEvm},
    protocol::{Payment, Reason, Rejection},
};

/// A Permit2 payment that passed every local check and is ready for the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2Checked {
    pub payment: Permit2Payment,
    /// The payer's own signature (Permit2 payers are EOAs here), split and normalised.
    pub signature: EcdsaSignature,
}

impl Permit2Checked {
    /// Calldata of the exact proxy's `settle` that pays this payment.
    pub fn settle_calldata(&self) -> Bytes {
        facts::settle_calldata(&self.payment, &self.signature)
    }
}

impl ExactEvm {
    /// Every check of a Permit2 payment that needs no chain: scheme, network, payload shape,
    /// accepted asset, then spender, recipient, deadline, validAfter, amount, token and signature
    /// (x402-protocol.md §7.2). `now` is unix seconds.
    pub fn check_permit2(&self, payment: &Payment, now: u64) -> Result<Permit2Checked, Rejection> {
        let typed = Permit2Payment::parse(payment, self.network().chain_id())?;
        let signature = checks::all(&typed, self.assets(), now)?;
        Ok(Permit2Checked {
            payment: typed,
            signature,
        })
    }

    /// Full verification of a Permit2 payment: [`ExactEvm::check_permit2`], then one `eth_call`
    /// (Multicall3) reading the proxy, balance, allowance and nonce and simulating the proxy's
    /// `settle`, judged by [`facts::judge`]. Reads the chain; writes nothing anywhere (DESIGN I1).
    #[instrument(skip_all, fields(network = %self.network().caip2(), method = "permit2"))]
    pub async fn verify_permit2(
        &self,
        payment: &Payment,
        now: u64,
    ) -> Result<Permit2Checked, Rejection> {
        let checked = self.check_permit2(payment, now)?;
        let facts = self
            .permit2_facts(&checked.payment, &checked.signature)
            .await?;
        facts::judge(&checked.payment, &facts)?;
        Ok(checked)
    }

    /// The one round trip: Multicall3 `tryAggregate` over [`facts::batch_calldata`].
    async fn permit2_facts(
        &self,
        payment: &Permit2Payment,
        signature: &EcdsaSignature,
    ) -> Result<ChainFacts, Rejection> {
        let outcome = self
            .chain()
            .call(None, MULTICALL3, facts::batch_calldata(payment, signature))
            .await
            .map_err(|e| Rejection::new(Reason::UnexpectedVerifyError, e.to_string()))?;
        let unreadable = |what: String| {
            Rejection::new(
                Reason::UnexpectedVerifyError,
                format!("the Permit2 checks through Multicall3 ({MULTICALL3}) {what}"),
            )
        };
        match outcome {
            CallOutcome::Returned(data) => ChainFacts::decode(&data).ok_or_else(|| {
                unreadable("answered something undecodable: is Multicall3 deployed?".into())
            }),
            CallOutcome::Reverted { message } => Err(unreadable(format!("reverted: {message}"))),
        }
    }
}
