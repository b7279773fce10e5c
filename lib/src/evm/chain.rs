//! Access to one EVM chain's JSON-RPC endpoint.
//!
//! The provider is built on first use, not at cold start, so a function that never touches this
//! chain never resolves its URL (which may cost a Secrets Manager call). Every request is bounded by
//! the configured timeout: a slow or dead RPC becomes a clear error, never a hung request.

use std::time::Duration;

use alloy::{
    primitives::{Address, Bytes},
    providers::{Provider, RootProvider},
    rpc::types::TransactionRequest,
    transports::{RpcError, TransportErrorKind},
};
use tokio::sync::OnceCell;
use tracing::instrument;

use crate::config::{redact_url, RpcSource};

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
        }
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

    /// `eth_call` against the latest block, without a sender.
    #[instrument(skip_all, fields(to = %to), err(level = "warn"))]
    pub async fn call(&self, to: Address, data: Bytes) -> Result<CallOutcome, ChainError> {
        let (provider, url) = self.provider().await?;
        let request = TransactionRequest::default().to(to).input(data.into());
        // Boxed: alloy's call future is a very deep type, and every async fn above it would inherit
        // that depth (rustc's query limit); one allocation per RPC request is nothing next to the I/O.
        let call = Box::pin(async move { provider.call(request).await });
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ChainError::Timeout(self.timeout)),
            Ok(Ok(output)) => Ok(CallOutcome::Returned(output)),
            Ok(Err(error)) => classify(error, url),
        }
    }
}

impl Chain {
    /// `eth_getCode` at the latest block: empty for an EOA.
    #[instrument(skip_all, fields(address = %address), err(level = "warn"))]
    pub async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        let (provider, url) = self.provider().await?;
        let call = Box::pin(async move { provider.get_code_at(address).await });
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ChainError::Timeout(self.timeout)),
            Ok(Ok(code)) => Ok(code),
            Ok(Err(error)) => Err(ChainError::Transport(
                error.to_string().replace(url.as_str(), &redact_url(url)),
            )),
        }
    }
}

/// A JSON-RPC error response is the node's verdict on the call (a revert, usually); anything else
/// means we never got a verdict.
/// HTTP client errors quote the URL, which may hold an API key: it is scrubbed here.
fn classify(error: RpcError<TransportErrorKind>, url: &str) -> Result<CallOutcome, ChainError> {
    match error.as_error_resp() {
        Some(payload) => Ok(CallOutcome::Reverted {
            message: payload.message.to_string(),
        }),
        None => Err(ChainError::Transport(
            error.to_string().replace(url, &redact_url(url)),
        )),
    }
}
