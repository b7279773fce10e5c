//! Access to one EVM chain's JSON-RPC endpoint.
//!
//! The provider is built on first use, not at cold start, so a function that never touches this
//! chain never resolves its URL (which may cost a Secrets Manager call). Every request is bounded by
//! the configured timeout: a slow or dead RPC becomes a clear error, never a hung request.

use std::time::Duration;

use alloy::{
    primitives::{Address, Bytes, B256},
    providers::{Provider, RootProvider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    transports::TransportResult,
};
use tokio::sync::OnceCell;
use tracing::instrument;

use crate::config::{redact_url, RpcSource};

/// A boxed, sendable future (what [`Chain::bounded`] runs).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How an `eth_call` ended, when the node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Returned(Bytes),
    /// The call reverted (or the node refused it); `message` is what the node said.
    Reverted {
        message: String,
    },
}

/// The chain could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain RPC did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the chain RPC failed: {0}")]
    Transport(String),
    #[error("the chain RPC answered with an error: {0}")]
    Node(String),
    #[error("the chain RPC URL could not be read from Secrets Manager secret {secret}: {problem}")]
    Secret { secret: String, problem: String },
}

/// One chain's RPC endpoint.
#[derive(Debug)]
pub struct Chain {
    source: RpcSource,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    timeout: Duration,
    /// The provider and the URL it talks to (kept only to scrub it from error messages).
    provider: OnceCell<(RootProvider, String)>,
    /// How long a fee estimate is reused: about a block, so fees are fetched once per block rather
    /// than once per settlement (DESIGN §8). Zero turns the reuse off.
    fee_ttl: Duration,
    fee_cache: std::sync::Mutex<Option<(std::time::Instant, (u128, u128))>>,
}

impl Chain {
    /// `secrets` is needed only when `source` is a secret.
    pub fn new(
        source: RpcSource,
        secrets: Option<aws_sdk_secretsmanager::Client>,
        timeout: Duration,
    ) -> Self {
        Chain {
            source,
            secrets,
            timeout,
            provider: OnceCell::new(),
            fee_ttl: Duration::ZERO,
            fee_cache: std::sync::Mutex::new(None),
        }
    }

    /// Reuses a fee estimate for `ttl` (about the chain's block time).
    pub fn with_fee_cache(mut self, ttl: Duration) -> Self {
        self.fee_ttl = ttl;
        self
    }

    async fn provider(&self) -> Result<&(RootProvider, String), ChainError> {
        self.provider
            .get_or_try_init(|| async {
                let url = self.resolve_url().await?;
                let parsed = url.parse().map_err(|_| {
                    ChainError::Transport(format!(
                        "RPC URL {} is not a valid URL",
                        redact_url(&url)
                    ))
                })?;
                Ok((RootProvider::new_http(parsed), url))
            })
            .await
    }

    async fn resolve_url(&self) -> Result<String, ChainError> {
        match &self.source {
            RpcSource::Url(url) => Ok(url.clone()),
            RpcSource::Secret(id) => {
                let fail = |problem: String| ChainError::Secret {
                    secret: id.clone(),
                    problem,
                };
                let client = self
                    .secrets
                    .as_ref()
                    .ok_or_else(|| fail("no Secrets Manager client".into()))?;
                // Boxed for the same reason as the RPC call below: the SDK's future type is very deep.
                let request = Box::pin(client.get_secret_value().secret_id(id).send());
                let answer = tokio::time::timeout(self.timeout, request)
                    .await
                    .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
                    .map_err(|e| {
                        fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
                    })?;
                answer
                    .secret_string()
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| fail("the secret has no string value".into()))
            }
        }
    }

    /// Runs one RPC request within the timeout. The node's own error answer (a revert, "nonce too
    /// low") comes back as `Ok(Err(message))`; no answer at all is a [`ChainError`]. The request is
    /// boxed: alloy's futures are very deep types, and every async fn above would inherit that depth.
    async fn bounded<'a, T>(
        &'a self,
        request: impl FnOnce(&'a RootProvider) -> BoxFuture<'a, TransportResult<T>>,
    ) -> Result<Result<T, String>, ChainError> {
        let (provider, url) = self.provider().await?;
        match tokio::time::timeout(self.timeout, request(provider)).await {
            Err(_) => Err(ChainError::Timeout(self.timeout)),
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(error)) => match error.as_error_resp() {
                Some(payload) => Ok(Err(payload.message.to_string())),
                // HTTP client errors quote the URL, which may hold an API key.
                None => Err(ChainError::Transport(
                    error.to_string().replace(url.as_str(), &redact_url(url)),
                )),
            },
        }
    }

    /// `eth_call` against the latest block, from `from` if given.
    #[instrument(skip_all, fields(to = %to), err(level = "warn"))]
    pub async fn call(
        &self,
        from: Option<Address>,
        to: Address,
        data: Bytes,
    ) -> Result<CallOutcome, ChainError> {
        let request = TransactionRequest {
            from,
            ..Default::default()
        }
        .to(to)
        .input(data.into());
        Ok(
            match self
                .bounded(|p| Box::pin(async move { p.call(request).await }))
                .await?
            {
                Ok(output) => CallOutcome::Returned(output),
                Err(message) => CallOutcome::Reverted { message },
            },
        )
    }

    /// `eth_estimateGas` from `from`: the gas a call needs, or the node's reason it would revert.
    #[instrument(skip_all, fields(from = %from, to = %to), err(level = "warn"))]
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        data: Bytes,
    ) -> Result<Result<u64, String>, ChainError> {
        let request = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(data.into());
        self.bounded(|p| Box::pin(async move { p.estimate_gas(request).await }))
            .await
    }

    /// `eth_getCode` at the latest block: empty for an EOA.
    #[instrument(skip_all, fields(address = %address), err(level = "warn"))]
    pub async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        self.bounded(|p| Box::pin(async move { p.get_code_at(address).await }))
            .await?
            .map_err(ChainError::Node)
    }

    /// The account's native balance (wei) at the latest block: the gas a signer lane has left.
    pub async fn balance(&self, address: Address) -> Result<alloy::primitives::U256, ChainError> {
        self.bounded(|p| Box::pin(async move { p.get_balance(address).await }))
            .await?
            .map_err(ChainError::Node)
    }

    /// The account's nonce counting its pending transactions.
    pub async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.bounded(|p| Box::pin(async move { p.get_transaction_count(address).pending().await }))
            .await?
            .map_err(ChainError::Node)
    }

    /// The account's nonce at the latest block: how many of its transactions are mined.
    pub async fn latest_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.bounded(|p| Box::pin(async move { p.get_transaction_count(address).latest().await }))
            .await?
            .map_err(ChainError::Node)
    }

    /// EIP-1559 fees for the next block: `(max_fee_per_gas, max_priority_fee_per_gas)`, reused for
    /// the fee TTL. A reused estimate stays safe: alloy's max fee is twice the base fee plus the tip,
    /// more than a few blocks of base-fee rises can reach.
    pub async fn fees(&self) -> Result<(u128, u128), ChainError> {
        let cached = *self
            .fee_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, fees)) = cached {
            if at.elapsed() < self.fee_ttl {
                return Ok(fees);
            }
        }
        let estimate = self
            .bounded(|p| Box::pin(async move { p.estimate_eip1559_fees().await }))
            .await?
            .map_err(ChainError::Node)?;
        let fees = (estimate.max_fee_per_gas, estimate.max_priority_fee_per_gas);
        *self
            .fee_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), fees));
        Ok(fees)
    }

    /// `eth_sendRawTransaction`. The node's refusal (e.g. "already known") is `Ok(Err(message))`.
    #[instrument(skip_all, err(level = "warn"))]
    pub async fn send_raw(&self, raw: Bytes) -> Result<Result<(), String>, ChainError> {
        self.bounded(|p| Box::pin(async move { p.send_raw_transaction(&raw).await.map(|_| ()) }))
            .await
    }

    /// Whether the node knows the transaction at all (`eth_getTransactionByHash`): in its pool or
    /// mined. A broadcast transaction it does not know was dropped, and its bytes can be sent again.
    pub async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError> {
        self.bounded(|p| {
            Box::pin(async move { p.get_transaction_by_hash(hash).await.map(|t| t.is_some()) })
        })
        .await?
        .map_err(ChainError::Node)
    }

    /// The receipt of a transaction, if it is mined.
    pub async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.bounded(|p| Box::pin(async move { p.get_transaction_receipt(hash).await }))
            .await?
            .map_err(ChainError::Node)
    }
}
