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
    /// How many blocks back a search for an authorization's use looks (0: the whole chain).
    logs_lookback: u64,
    /// The most a transaction of ours offers per unit of gas (wei).
    fee_cap: u128,
    /// The most gas one settlement may use.
    gas_caps: crate::config::GasCaps,
}

impl std::fmt::Debug for Chain {
    // The resolved URL may carry an API key: only the (redacting) source is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("source", &self.source)
            .field("timeout", &self.timeout)
            .field("fee_ttl", &self.fee_ttl)
            .field("logs_lookback", &self.logs_lookback)
            .field("fee_cap", &self.fee_cap)
            .finish_non_exhaustive()
    }
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
            logs_lookback: 0,
            fee_cap: crate::config::DEFAULT_MAX_FEE_PER_GAS,
            gas_caps: crate::config::GasCaps::default(),
        }
    }

    /// Caps the gas one settlement may use.
    pub fn with_gas_caps(mut self, caps: crate::config::GasCaps) -> Self {
        self.gas_caps = caps;
        self
    }

    /// The most gas one settlement may use.
    pub fn gas_caps(&self) -> crate::config::GasCaps {
        self.gas_caps
    }

    /// Caps what transactions on this chain offer per unit of gas (`maxFeePerGas`, wei).
    pub fn with_fee_cap(mut self, wei: u128) -> Self {
        self.fee_cap = wei;
        self
    }

    /// The most a transaction of ours offers per unit of gas (wei).
    pub fn fee_cap(&self) -> u128 {
        self.fee_cap
    }

    /// Searches the last `blocks` blocks for an authorization's use (0: the whole chain). RPC
    /// providers cap the range of `eth_getLogs`; a payment's window is minutes, so a few hours of
    /// blocks are plenty.
    pub fn with_logs_lookback(mut self, blocks: u64) -> Self {
        self.logs_lookback = blocks;
        self
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

    /// Runs one RPC request within the timeout. The node's own error answer comes back as
    /// `Ok(Err(NodeError))`, classified by [`node_answer`]; no answer at all is a [`ChainError`]. The
    /// request is boxed: alloy's futures are very deep types, and every async fn above would inherit
    /// that depth.
    async fn bounded<'a, T>(
        &'a self,
        request: impl FnOnce(&'a RootProvider) -> BoxFuture<'a, TransportResult<T>>,
    ) -> Result<Result<T, NodeError>, ChainError> {
        let (provider, url) = self.provider().await?;
        match tokio::time::timeout(self.timeout, request(provider)).await {
            Err(_) => Err(ChainError::Timeout(self.timeout)),
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(error)) => match error.as_error_resp() {
                Some(payload) => Ok(Err(NodeError {
                    kind: node_answer(payload.code, &payload.message),
                    message: payload.message.to_string(),
                })),
                // HTTP client errors quote the URL, which may hold an API key.
                None => Err(ChainError::Transport(
                    error.to_string().replace(url.as_str(), &redact_url(url)),
                )),
            },
        }
    }

    /// [`Chain::bounded`] for a request whose only final error answer is `keep`: any other error
    /// answer (a rate limit, an unknown block, a node's internal error) is a [`ChainError`], to be
    /// retried, never taken as the chain's verdict on the payment.
    async fn bounded_keeping<'a, T>(
        &'a self,
        keep: &[NodeAnswer],
        request: impl FnOnce(&'a RootProvider) -> BoxFuture<'a, TransportResult<T>>,
    ) -> Result<Result<T, String>, ChainError> {
        match self.bounded(request).await? {
            Ok(value) => Ok(Ok(value)),
            Err(e) if keep.contains(&e.kind) => Ok(Err(e.message)),
            Err(e) => Err(ChainError::Node(e.message)),
        }
    }

    /// [`Chain::bounded`] for a read, where every error answer is a [`ChainError`].
    async fn read<'a, T>(
        &'a self,
        request: impl FnOnce(&'a RootProvider) -> BoxFuture<'a, TransportResult<T>>,
    ) -> Result<T, ChainError> {
        self.bounded_keeping(&[], request)
            .await?
            .map_err(ChainError::Node)
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
                .bounded_keeping(&[NodeAnswer::Revert], |p| {
                    Box::pin(async move { p.call(request).await })
                })
                .await?
            {
                Ok(output) => CallOutcome::Returned(output),
                Err(message) => CallOutcome::Reverted { message },
            },
        )
    }

    /// `eth_estimateGas` from `from`, offering `(max_fee_per_gas, max_priority_fee_per_gas)`: the
    /// gas a call needs, or the node's reason it would revert. With the fees given, the call runs at
    /// the gas price the transaction will pay (code can read it), and the node checks that `from`
    /// can pay for the gas.
    #[instrument(skip_all, fields(from = %from, to = %to), err(level = "warn"))]
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        data: Bytes,
        (max_fee, tip): (u128, u128),
    ) -> Result<Result<u64, String>, ChainError> {
        let request = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(data.into())
            .max_fee_per_gas(max_fee)
            .max_priority_fee_per_gas(tip);
        self.bounded_keeping(&[NodeAnswer::Revert], |p| {
            Box::pin(async move { p.estimate_gas(request).await })
        })
        .await
    }

    /// `eth_getCode` at the latest block: empty for an EOA.
    #[instrument(skip_all, fields(address = %address), err(level = "warn"))]
    pub async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        self.read(|p| Box::pin(async move { p.get_code_at(address).await }))
            .await
    }

    /// The account's native balance (wei) at the latest block: the gas a signer lane has left.
    pub async fn balance(&self, address: Address) -> Result<alloy::primitives::U256, ChainError> {
        self.read(|p| Box::pin(async move { p.get_balance(address).await }))
            .await
    }

    /// The account's nonce counting its pending transactions.
    pub async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.read(|p| Box::pin(async move { p.get_transaction_count(address).pending().await }))
            .await
    }

    /// The account's nonce at the latest block: how many of its transactions are mined.
    pub async fn latest_nonce(&self, address: Address) -> Result<u64, ChainError> {
        self.read(|p| Box::pin(async move { p.get_transaction_count(address).latest().await }))
            .await
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
            .read(|p| Box::pin(async move { p.estimate_eip1559_fees().await }))
            .await?;
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
        self.bounded_keeping(&[NodeAnswer::Refused, NodeAnswer::Revert], |p| {
            Box::pin(async move { p.send_raw_transaction(&raw).await.map(|_| ()) })
        })
        .await
    }

    /// Whether the node knows the transaction at all (`eth_getTransactionByHash`): in its pool or
    /// mined. A broadcast transaction it does not know was dropped, and its bytes can be sent again.
    pub async fn transaction_known(&self, hash: B256) -> Result<bool, ChainError> {
        self.read(|p| {
            Box::pin(async move { p.get_transaction_by_hash(hash).await.map(|t| t.is_some()) })
        })
        .await
    }

    /// The latest block's timestamp (unix seconds) and base fee (wei): the chain's own clock, which
    /// stops when its sequencer does, and what a transaction must offer to be included.
    pub async fn latest_block(&self) -> Result<(u64, u128), ChainError> {
        let block = self
            .read(|p| {
                Box::pin(async move {
                    p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                        .await
                })
            })
            .await?
            .ok_or_else(|| ChainError::Node("the node has no latest block".into()))?;
        let header = &block.header;
        Ok((
            header.timestamp,
            header.base_fee_per_gas.map(u128::from).unwrap_or(0),
        ))
    }

    /// The token's `AuthorizationUsed(authorizer, nonce)` logs within the lookback
    /// ([`Chain::with_logs_lookback`]): which transaction used an EIP-3009 authorization. One
    /// `eth_blockNumber` and one `eth_getLogs`; asked only when an authorization turned out used.
    pub async fn authorization_used_logs(
        &self,
        token: Address,
        authorizer: Address,
        nonce: B256,
    ) -> Result<Vec<alloy::rpc::types::Log>, ChainError> {
        use alloy::{rpc::types::Filter, sol_types::SolEvent};
        let from = match self.logs_lookback {
            0 => 0,
            n => self
                .read(|p| Box::pin(async move { p.get_block_number().await }))
                .await?
                .saturating_sub(n),
        };
        let filter = Filter::new()
            .address(token)
            .event_signature(super::abi::IEip3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(authorizer.into_word())
            .topic2(nonce)
            .from_block(from);
        self.read(|p| Box::pin(async move { p.get_logs(&filter).await }))
            .await
    }

    /// The receipt of a transaction, if it is mined.
    pub async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.read(|p| Box::pin(async move { p.get_transaction_receipt(hash).await }))
            .await
    }
}

/// A node's JSON-RPC error answer, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeError {
    kind: NodeAnswer,
    message: String,
}

/// What a node's JSON-RPC error answer says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAnswer {
    /// The EVM ran the call and it failed: a verdict on the payment.
    Revert,
    /// The transaction pool refused a transaction by its rules (nonce, fees, funds): a verdict on
    /// the transaction, not on the payment.
    Refused,
    /// Anything else: rate limits, unknown blocks, timeouts, a node's internal errors. Nodes send
    /// these with HTTP 200 too; they say nothing about the payment and are retried.
    Transient,
}

/// The error answers that are a verdict, by JSON-RPC code (`None`: any code) and a fragment of the
/// message (lowercase; `""`: any message). The first row that matches decides; an answer no row
/// matches is [`NodeAnswer::Transient`]. One table, so that what we treat as final is in one place
/// and each row has its unit test.
pub const NODE_ANSWERS: &[(Option<i64>, &str, NodeAnswer)] = &[
    // geth, anvil and reth answer a revert that carries revert data with code 3.
    (Some(3), "", NodeAnswer::Revert),
    // The same without data (geth -32000, erigon, besu), and nethermind's "VM execution error".
    (None, "execution reverted", NodeAnswer::Revert),
    (None, "vm execution error", NodeAnswer::Revert),
    (None, "invalid opcode", NodeAnswer::Revert),
    // eth_estimateGas: the call cannot finish within the node's gas cap.
    (None, "out of gas", NodeAnswer::Revert),
    (None, "gas required exceeds allowance", NodeAnswer::Revert),
    // eth_sendRawTransaction: the pool's rules.
    (None, "nonce too low", NodeAnswer::Refused),
    (None, "nonce too high", NodeAnswer::Refused),
    (None, "already known", NodeAnswer::Refused),
    (None, "known transaction", NodeAnswer::Refused),
    (None, "underpriced", NodeAnswer::Refused),
    (None, "insufficient funds", NodeAnswer::Refused),
    (None, "intrinsic gas too low", NodeAnswer::Refused),
    (None, "exceeds block gas limit", NodeAnswer::Refused),
    (None, "less than block base fee", NodeAnswer::Refused),
];

/// Classifies a node's error answer by [`NODE_ANSWERS`].
pub fn node_answer(code: i64, message: &str) -> NodeAnswer {
    let message = message.to_ascii_lowercase();
    NODE_ANSWERS
        .iter()
        .find(|(c, fragment, _)| c.is_none_or(|c| c == code) && message.contains(fragment))
        .map(|(_, _, answer)| *answer)
        .unwrap_or(NodeAnswer::Transient)
}

#[cfg(test)]
mod tests {
    use super::{node_answer, NodeAnswer::*, NODE_ANSWERS};

    /// One case per row of the table, as nodes really word them, each decided by its own row.
    #[test]
    fn every_row_of_the_table_decides_its_own_answer() {
        let cases = [
            (
                3,
                "execution reverted: EIP3009: authorization is used or canceled",
                Revert,
            ),
            (-32000, "execution reverted", Revert),
            (-32015, "VM execution error.", Revert),
            (-32000, "invalid opcode: INVALID", Revert),
            (-32000, "out of gas", Revert),
            (-32000, "gas required exceeds allowance (30000000)", Revert),
            (-32000, "nonce too low: next nonce 5, tx nonce 4", Refused),
            (-32000, "nonce too high", Refused),
            (-32000, "already known", Refused),
            (-32000, "known transaction: 0xabc", Refused),
            (-32000, "replacement transaction underpriced", Refused),
            (
                -32000,
                "insufficient funds for gas * price + value",
                Refused,
            ),
            (-32000, "intrinsic gas too low", Refused),
            (-32000, "exceeds block gas limit", Refused),
            (-32000, "max fee per gas less than block base fee", Refused),
        ];
        assert_eq!(cases.len(), NODE_ANSWERS.len(), "a case for every row");
        for (row, (code, message, expected)) in NODE_ANSWERS.iter().zip(cases) {
            assert_eq!(node_answer(code, message), expected, "{message}");
            let first = NODE_ANSWERS
                .iter()
                .position(|(c, f, _)| {
                    c.is_none_or(|c| c == code) && message.to_ascii_lowercase().contains(f)
                })
                .map(|i| &NODE_ANSWERS[i]);
            assert_eq!(first, Some(row), "{message} is decided by its own row");
        }
    }

    #[test]
    fn a_chain_never_prints_its_rpc_url() {
        let chain = super::Chain::new(
            crate::config::RpcSource::Url("https://base.example/v2/SECRET-KEY-123".into()),
            None,
            std::time::Duration::from_secs(1),
        );
        assert!(
            !format!("{chain:?}").contains("SECRET-KEY-123"),
            "{chain:?}"
        );
    }

    /// Errors that nodes and providers send with HTTP 200 and that say nothing about the payment.
    #[test]
    fn rate_limits_unknown_blocks_and_internal_errors_are_transient() {
        for (code, message) in [
            (-32005, "rate limit exceeded"),
            (429, "Too Many Requests"),
            (-32000, "header not found"),
            (-32001, "resource not found"),
            (-32603, "internal error"),
            (-32000, "request timed out"),
            (-32000, "missing trie node abc (path )"),
            (-32602, "unknown block"),
            (-32000, "upstream connect error"),
        ] {
            assert_eq!(node_answer(code, message), Transient, "{message}");
        }
    }
}
