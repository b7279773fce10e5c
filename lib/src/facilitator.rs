//! The facilitator: routes each payment to the scheme that serves its exact (version, scheme,
//! network), and describes what it serves for `/supported`.
//!
//! Routing never falls back to a wildcard: a network without a configured RPC is `invalid_network`,
//! not a guess (x402-protocol.md §3.6).

use std::collections::BTreeMap;

use crate::{
    clock::unix_now,
    config::Config,
    evm::{checks, permit2, Chain, Checked, ExactEvm},
    protocol::{
        payer_hint, Payment, Reason, Rejection, SupportedKind, SupportedResponse, VerifyResponse,
        X402Version,
    },
    signer::{LaneError, Lanes},
    store::Store,
};

/// The scheme every network serves.
pub const EXACT: &str = "exact";

/// The usage-based scheme, served on the networks that name an upto signer (`uptoFacilitator`).
pub const UPTO: &str = "upto";

/// Everything a request handler needs, built once per Lambda instance.
#[derive(Debug)]
pub struct Facilitator {
    networks: Vec<ExactEvm>,
    lanes: Lanes,
    /// Where payers whose settlements reverted on chain are counted (read for contract wallets).
    payers: Store,
}

impl Facilitator {
    /// Builds clients without calling anything: no chain, KMS or Secrets Manager request happens
    /// before the first request that needs it.
    pub fn new(config: &Config, aws: &aws_config::SdkConfig) -> Self {
        let secrets = aws_sdk_secretsmanager::Client::new(aws);
        let networks = config
            .networks
            .iter()
            .map(|n| {
                let chain = Chain::new(n.rpc.clone(), Some(secrets.clone()), config.rpc_timeout)
                    .with_network(n.network.caip2())
                    .with_fee_cache(config.fee_cache)
                    .with_send_sync(config.send_sync)
                    .with_logs_lookback(config.logs_lookback)
                    .with_fee_cap(n.max_fee_per_gas)
                    .with_gas_caps(n.gas_caps);
                ExactEvm::new(n.network.clone(), n.assets.clone(), chain)
                    .with_contract_wallets(config.contract_wallets)
                    .with_upto(n.upto_facilitator)
                    .with_erc6492_factories(n.erc6492_factories.clone())
            })
            .collect();
        let lanes = Lanes::new(config.lane_keys.clone(), aws_sdk_kms::Client::new(aws));
        let payers = Store::from_config(config, aws);
        Facilitator {
            networks,
            lanes,
            payers,
        }
    }

    /// Finds the scheme for this payment's (version, scheme, network): `exact` on every network,
    /// `upto` (x402 v2 only, as the reference) where the network names an upto signer.
    pub fn route(&self, payment: &Payment) -> Result<&ExactEvm, Rejection> {
        let requirements = &payment.requirements;
        let unsupported = || {
            Rejection::new(
                Reason::UnsupportedScheme,
                format!(
                    "scheme {:?} is not supported on {:?} for x402 v{}; see /supported",
                    truncate(&requirements.scheme),
                    truncate(&requirements.network),
                    u8::from(payment.version)
                ),
            )
        };
        if requirements.scheme != EXACT && requirements.scheme != UPTO {
            return Err(unsupported());
        }
        let network = self
            .networks
            .iter()
            .find(|n| n.network().is_named(payment.version, &requirements.network));
        if requirements.scheme == UPTO {
            let served = network.filter(|n| n.upto().is_some());
            return match served {
                Some(n) if payment.version == X402Version::V2 => Ok(n),
                _ if network.is_none() => Err(invalid_network(payment)),
                _ => Err(unsupported()),
            };
        }
        network.ok_or_else(|| invalid_network(payment))
    }

    /// The scheme serving a network, by its CAIP-2 id.
    pub fn network(&self, caip2: &str) -> Option<&ExactEvm> {
        self.networks.iter().find(|n| n.network().caip2() == caip2)
    }

    /// Every network served, in configuration order.
    pub fn networks(&self) -> &[ExactEvm] {
        &self.networks
    }

    /// The signer lanes (their addresses are learnt from KMS on first use).
    pub fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    /// Verifies a payment. Never writes (DESIGN I1).
    pub async fn verify(&self, payment: &Payment) -> VerifyResponse {
        let payer = payer_hint(&payment.payload);
        // A payment-identifier that settle would refuse (missing where required, malformed) makes
        // the payment invalid here too; whether it is bound to another payment is settle's to
        // find out (verify reads nothing from DynamoDB).
        if let Err(e) = crate::protocol::payment_identifier::parse(payment) {
            return VerifyResponse::invalid(e.0.reason, Some(e.0.message), payer);
        }
        let result = match self.route(payment) {
            Ok(scheme) => self.verify_with(scheme, payment).await,
            Err(rejection) => Err(rejection),
        };
        match result {
            // The payer as the client wrote it, like the reference; the strict parse guarantees there is one.
            Ok(from) => VerifyResponse::valid(payer.unwrap_or_else(|| from.to_checksum(None))),
            Err(r) => {
                tracing::info!(reason = %r.reason, detail = %r.message, "payment refused");
                VerifyResponse::invalid(r.reason, Some(r.message), payer)
            }
        }
    }

    /// Every check of [`ExactEvm::check`], then [`Facilitator::confirm`]; the payer on success.
    /// A Permit2 payload (told apart by its shape, as the reference does), and every `upto`
    /// payment (Permit2 only), goes to [`ExactEvm::check_permit2`] and
    /// [`Facilitator::confirm_permit2_as`] instead (the one batched `eth_call`, and a contract-wallet
    /// payer's standing beside it).
    async fn verify_with(
        &self,
        scheme: &ExactEvm,
        payment: &Payment,
    ) -> Result<alloy::primitives::Address, Rejection> {
        let upto = payment.requirements.scheme == UPTO;
        if upto || permit2::is_permit2(&payment.payload) {
            let checked = scheme.check_permit2(payment, unix_now())?;
            self.confirm_permit2_as(scheme, &checked, None).await?;
            return Ok(checked.payment.authorization.from);
        }
        let checked = scheme.check(payment, unix_now())?;
        self.confirm(scheme, &checked).await?;
        Ok(checked.payment.authorization.from)
    }

    /// The chain's part of verification ([`ExactEvm::confirm`]) and, for a contract-wallet payer,
    /// whether its settlements have been reverting on chain (docs/security.md): asked at once.
    /// Settle runs it too.
    pub async fn confirm(&self, scheme: &ExactEvm, checked: &Checked) -> Result<(), Rejection> {
        self.confirm_as(scheme, checked, None).await.map(drop)
    }

    /// [`Facilitator::confirm`] with the simulation run as `sender` would send the transfer
    /// ([`ExactEvm::confirm_as`]): the gas it needs, for /settle to hand to the worker.
    pub async fn confirm_as(
        &self,
        scheme: &ExactEvm,
        checked: &Checked,
        sender: Option<(alloy::primitives::Address, (u128, u128))>,
    ) -> Result<Option<u64>, Rejection> {
        let (confirmed, admitted) = tokio::join!(
            scheme.confirm_as(checked, sender),
            self.payer_admitted(scheme, checked)
        );
        let gas = confirmed?;
        admitted?;
        Ok(gas)
    }

    /// [`ExactEvm::confirm_permit2_as`] and, for a payer whose Permit2 signature is a contract
    /// wallet's, its standing ([`Facilitator::payer_refusal`]): asked at once, as for EIP-3009.
    #[tracing::instrument(skip_all, fields(network = %scheme.network().caip2(), method = "permit2"))]
    pub async fn confirm_permit2_as(
        &self,
        scheme: &ExactEvm,
        checked: &permit2::Permit2Checked,
        sender: Option<(alloy::primitives::Address, (u128, u128))>,
    ) -> Result<Option<u64>, Rejection> {
        let payer = checked.payment.authorization.from;
        let (confirmed, admitted) = tokio::join!(
            scheme.confirm_permit2_as(checked, sender),
            self.admitted(scheme, payer, checked.signed_by_contract())
        );
        let gas = confirmed?;
        admitted?;
        Ok(gas)
    }

    async fn payer_admitted(&self, scheme: &ExactEvm, checked: &Checked) -> Result<(), Rejection> {
        let payer = checked.payment.authorization.from;
        self.admitted(scheme, payer, checked.signer.is_contract())
            .await
    }

    /// A payer signing with its own key is never refused here: its transfer's outcome is the
    /// token's, which the simulation covers. A contract wallet is, while its run of reverts lasts.
    async fn admitted(
        &self,
        scheme: &ExactEvm,
        payer: alloy::primitives::Address,
        by_contract: bool,
    ) -> Result<(), Rejection> {
        if !by_contract {
            return Ok(());
        }
        match self.payer_refusal(scheme.network().caip2(), payer).await {
            Ok(None) => Ok(()),
            Ok(Some(refused)) => Err(refused),
            Err(e) => Err(Rejection::new(Reason::UnexpectedVerifyError, e.to_string())),
        }
    }

    /// The refusal of a contract-wallet payer whose settlements keep reverting on `network`, if it
    /// is refused now: what verify, settle and the worker (before signing) all answer.
    pub async fn payer_refusal(
        &self,
        network: &str,
        payer: alloy::primitives::Address,
    ) -> Result<Option<Rejection>, crate::store::StoreError> {
        let refusal = self
            .payers
            .payer_refusal(network, payer, unix_now())
            .await?;
        Ok(refusal.map(|(standing, until)| {
            checks::payer_refused(payer, network, standing.reverts, until)
        }))
    }

    /// What this deployment serves: every configured network, under v2 (CAIP-2) and, where the
    /// chain had a v1 name, under v1 too; `upto` under v2 where the network names an upto signer
    /// that is one of the lanes; and the lanes' addresses as signers.
    pub async fn supported(&self) -> Result<SupportedResponse, LaneError> {
        let lanes = self.lane_addresses().await?;
        let mut kinds = Vec::with_capacity(self.networks.len() * 3);
        for n in &self.networks {
            kinds.push(kind(X402Version::V2, EXACT, n.network().caip2(), None));
            if let Some(name) = n.network().v1_name() {
                kinds.push(kind(X402Version::V1, EXACT, name, None));
            }
            match n.upto() {
                // Advertised only as a lane's: any other address could never settle (the upto
                // proxy lets only the witness's facilitator call it).
                Some(upto) if lanes.contains(&upto) => {
                    let extra = serde_json::json!({ "facilitatorAddress": upto.to_checksum(None) });
                    kinds.push(kind(
                        X402Version::V2,
                        UPTO,
                        n.network().caip2(),
                        Some(extra),
                    ));
                }
                Some(upto) => {
                    tracing::error!(network = n.network().caip2(), %upto, "uptoFacilitator is not the address of any lane whose key is readable; /supported leaves upto out")
                }
                None => {}
            }
        }
        let signers = lanes.iter().map(|a| a.to_checksum(None)).collect();
        Ok(SupportedResponse {
            kinds,
            // Settle honours payment identifiers, and every network's `exact` Permit2 payments
            // honour EIP-2612 gas sponsoring (docs/protocol-choices.md). The list is the
            // deployment's, not a network's: the reference's `/supported` has one list too.
            extensions: vec![
                crate::protocol::payment_identifier::EXTENSION.to_owned(),
                permit2::sponsoring::EXTENSION.to_owned(),
            ],
            signers: BTreeMap::from([("eip155:*".to_owned(), signers)]),
        })
    }

    /// The lanes whose address is known; a key KMS cannot read is left out (and logged), unless
    /// no lane's address can be had at all.
    async fn lane_addresses(&self) -> Result<Vec<alloy::primitives::Address>, LaneError> {
        let (mut known, mut unreadable) = (Vec::new(), None);
        for address in self.lanes.addresses().await {
            match address {
                Ok(address) => known.push(address),
                Err(e) => {
                    tracing::warn!(error = %e, "a lane's address is unknown; /supported leaves it out");
                    unreadable.get_or_insert(e);
                }
            }
        }
        match (known.is_empty(), unreadable) {
            (true, Some(e)) => Err(e),
            _ => Ok(known),
        }
    }
}

fn kind(
    version: X402Version,
    scheme: &str,
    network: &str,
    extra: Option<serde_json::Value>,
) -> SupportedKind {
    SupportedKind {
        x402_version: version,
        scheme: scheme.to_owned(),
        network: network.to_owned(),
        extra,
    }
}

fn invalid_network(payment: &Payment) -> Rejection {
    Rejection::new(
        Reason::InvalidNetwork,
        format!(
            "network {:?} is not served for x402 v{}; see /supported",
            truncate(&payment.requirements.network),
            u8::from(payment.version)
        ),
    )
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}
