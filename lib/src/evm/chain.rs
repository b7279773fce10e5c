//! Access to one EVM chain over JSON-RPC: the calls the facilitator makes, and which of a node's
//! error answers count as a verdict ([`NODE_ANSWERS`]).
//!
//! Requests go through [`super::rpc`], which resolves the URLs on first use (not at cold start, so
//! a function that never touches this chain never reads its secret) and fails over between them.
//! Every call is bounded by the configured timeout: a slow or dead RPC becomes a clear error,
//! never a hung request.

use std::time::Duration;

use alloy::{
    primitives::{Address, Bytes, B256},
    providers::{Provider, RootProvider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    transports::TransportResult,
};
use tracing::instrument;

pub use super::answers::{node_answer, ChainError, NodeAnswer, NODE_ANSWERS};
use super::rpc::{BoxFuture, Once, Rpc};
use crate::config::RpcSource;

/// How an `eth_call` ended, when the node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Returned(Bytes),
    /// The call reverted (or the node refused it); `message` is what the node said.
    Reverted {
        message: String,
    },
}

/// What an `eth_sendRawTransactionSync` (EIP-7966) came to.
#[derive(Debug)]
pub enum SyncSent {
    /// Mined within the node's wait: its receipt.
    Mined(Box<TransactionReceipt>),
    /// The node took the bytes but had no receipt within its wait (EIP-7966's codes 4 and 5), or
    /// answered for a transaction it ran: the receipt is looked up as after any send.
    InPool,
    /// The pool refused the bytes by its rules, in the node's words (as `eth_sendRawTransaction`
    /// would have answered).
    Refused(String),
    /// No answer that says what became of the bytes (the node lacks the method, failed or did not
    /// answer in time): they are sent the usual way, which is safe to repeat.
    Unanswered,
}

/// The last fee estimate and when it was fetched, and the last fetch that failed, for the callers
/// that waited on it ([`Chain::fees`]).
#[derive(Debug, Default)]
struct FeeCache {
    fetched: Option<(std::time::Instant, (u128, u128))>,
    failed: Option<(std::time::Instant, ChainError)>,
}

impl FeeCache {
    fn fresh(&self, ttl: Duration) -> Option<(u128, u128)> {
        self.fetched
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, fees)| fees)
    }

    /// What a fetch that ended after `asked` said: the answer for a caller that waited on it.
    fn since(
        &self,
        asked: std::time::Instant,
        ttl: Duration,
    ) -> Option<Result<(u128, u128), ChainError>> {
        if let Some(fees) = self.fresh(ttl) {
            return Some(Ok(fees));
        }
        match &self.failed {
            Some((at, error)) if *at >= asked => Some(Err(error.clone())),
            _ => None,
        }
    }

    fn keep(&mut self, answer: &Result<(u128, u128), ChainError>) {
        let now = std::time::Instant::now();
        match answer {
            Ok(fees) => self.fetched = Some((now, *fees)),
            Err(error) => self.failed = Some((now, error.clone())),
        }
    }
}

/// One chain, through its RPC URLs.
pub struct Chain {
    rpc: Rpc,
    /// How long a fee estimate is reused: about a block, so fees are fetched once per block rather
    /// than once per settlement (DESIGN §8). Zero turns the reuse off.
    fee_ttl: Duration,
    fee_cache: std::sync::Mutex<FeeCache>,
    /// Taken by the caller that fetches fees, so that callers who find the cache stale at once
    /// share one request instead of sending one each (a stampede every block under load).
    fee_fetch: tokio::sync::Mutex<()>,
    /// How many blocks back a search for an authorization's use looks (0: the whole chain).
    logs_lookback: u64,
    /// The most a transaction of ours offers per unit of gas (wei).
    fee_cap: u128,
    /// The most gas one settlement may use.
    gas_caps: crate::config::GasCaps,
    /// Whether a send that waits for its receipt asks `eth_sendRawTransactionSync`: configured
    /// (`X402_SEND_SYNC`), and turned off for this instance once the node says it lacks it.
    send_sync: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Chain {
    // The resolved URLs may carry an API key: only the (redacting) RPC source is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("rpc", &self.rpc)
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
            rpc: Rpc::new(source, secrets, timeout),
            fee_ttl: Duration::ZERO,
            fee_cache: std::sync::Mutex::new(FeeCache::default()),
            fee_fetch: tokio::sync::Mutex::const_new(()),
            logs_lookback: 0,
            fee_cap: crate::config::DEFAULT_MAX_FEE_PER_GAS,
            gas_caps: crate::config::GasCaps::default(),
            send_sync: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets a send that waits for its receipt ask `eth_sendRawTransactionSync` ([`Chain::send_raw_sync`]).
    pub fn with_send_sync(self, on: bool) -> Self {
        self.send_sync
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Names the chain's network (CAIP-2) in its RPC metrics and logs.
    pub fn with_network(mut self, caip2: &str) -> Self {
        self.rpc.set_network(caip2);
        self
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

    /// One RPC request, failing over between the URLs ([`Rpc::call`]; `request` may run once per
    /// URL), whose only final error answer is `keep`: any other error answer (a rate limit, an
    /// unknown block, a node's internal error) is a [`ChainError`], to be retried, never taken as
    /// the chain's verdict on the payment.
    async fn bounded_keeping<T>(
        &self,
        keep: &[NodeAnswer],
        request: impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
    ) -> Result<Result<T, String>, ChainError> {
        match self.rpc.call(request).await? {
            Ok(value) => Ok(Ok(value)),
            Err(e) if keep.contains(&e.kind) => Ok(Err(e.message)),
            Err(e) => Err(ChainError::Node(e.message)),
        }
    }

    /// [`Chain::bounded_keeping`] for a read, where every error answer is a [`ChainError`].
    async fn read<T>(
        &self,
        request: impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
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
                    let request = request.clone();
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
    /// can pay for the gas: a `from` that cannot is a [`ChainError`] naming it, not a revert.
    #[instrument(skip_all, fields(from = %from, to = %to), err(level = "warn"))]
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        data: Bytes,
        (max_fee, tip): (u128, u128),
    ) -> Result<Result<u64, String>, ChainError> {
        let unpriced = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(data.into());
        let priced = unpriced
            .clone()
            .max_fee_per_gas(max_fee)
            .max_priority_fee_per_gas(tip);
        match self.estimate(priced).await? {
            Err(why) if max_fee > 0 && beyond_allowance(&why) => {
                // geth and reth cap an estimate's gas at what the sender can pay at the fee it
                // offers, and say "gas required exceeds allowance" as they would for a transfer
                // that never ends. Asked without a fee the cap is the node's own: a transfer that
                // passes then is fine, and what failed is the lane's gas money, not the payment.
                match self.estimate(unpriced).await? {
                    Ok(_) => Err(ChainError::Node(format!(
                        "the lane {from:#x} cannot pay for the gas at the fee it would offer ({why}); the payment itself simulates: fund the lane"
                    ))),
                    Err(_) => Ok(Err(why)),
                }
            }
            answer => Ok(answer),
        }
    }

    async fn estimate(
        &self,
        request: TransactionRequest,
    ) -> Result<Result<u64, String>, ChainError> {
        self.bounded_keeping(&[NodeAnswer::Revert], |p| {
            let request = request.clone();
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
    /// more than a few blocks of base-fee rises can reach. Callers who find the estimate stale
    /// together wait for one fetch and share its answer, a failure included: a node that does not
    /// answer costs each of them one wait, not one wait per caller ahead of it.
    pub async fn fees(&self) -> Result<(u128, u128), ChainError> {
        if self.fee_ttl.is_zero() {
            return self.fetch_fees().await;
        }
        let asked = std::time::Instant::now();
        if let Some(fees) = self.fee_cache().fresh(self.fee_ttl) {
            return Ok(fees);
        }
        let _turn = self.fee_fetch.lock().await;
        if let Some(answer) = self.fee_cache().since(asked, self.fee_ttl) {
            return answer;
        }
        let answer = self.fetch_fees().await;
        self.fee_cache().keep(&answer);
        answer
    }

    fn fee_cache(&self) -> std::sync::MutexGuard<'_, FeeCache> {
        self.fee_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch_fees(&self) -> Result<(u128, u128), ChainError> {
        let estimate = self
            .read(|p| Box::pin(async move { p.estimate_eip1559_fees().await }))
            .await?;
        Ok((estimate.max_fee_per_gas, estimate.max_priority_fee_per_gas))
    }

    /// The fees a first signature offers ([`Chain::fees`], held under the network's cap): what
    /// the worker signs with, and what /settle's simulation offers.
    pub async fn offered_fees(&self) -> Result<(u128, u128), ChainError> {
        Ok(capped(self.fees().await?, self.fee_cap))
    }

    /// `eth_sendRawTransaction`. The node's refusal (e.g. "already known") is `Ok(Err(message))`.
    #[instrument(skip_all, err(level = "warn"))]
    pub async fn send_raw(&self, raw: Bytes) -> Result<Result<(), String>, ChainError> {
        self.bounded_keeping(&[NodeAnswer::Refused, NodeAnswer::Revert], |p| {
            // The same signed bytes on any node: the same transaction (same hash), which the
            // chain includes at most once, so a send may go on to the next URL.
            let raw = raw.clone();
            Box::pin(async move { p.send_raw_transaction(&raw).await.map(|_| ()) })
        })
        .await
    }

    /// Sends signed bytes and waits for their receipt in the same request
    /// (`eth_sendRawTransactionSync`, EIP-7966): one round trip instead of a send and a receipt
    /// lookup, for a caller that waits for the receipt anyway. Asked of the first healthy URL only
    /// and never retried: whatever does not say what became of the bytes is
    /// [`SyncSent::Unanswered`], and the caller sends them with [`Chain::send_raw`]. Waits until
    /// `until` at the latest (the caller's own deadline), and never longer than any RPC call. A
    /// node that lacks the method, or holds it for a whole RPC call's time, is not asked again by
    /// this instance.
    pub async fn send_raw_sync(&self, raw: &Bytes, until: std::time::Instant) -> SyncSent {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.send_sync.load(Relaxed) {
            return SyncSent::Unanswered;
        }
        let full = self.rpc.timeout();
        let limit = until
            .saturating_duration_since(std::time::Instant::now())
            .min(full);
        let answer = self
            .rpc
            .call_once(limit, |p| {
                let raw = raw.clone();
                Box::pin(async move { p.send_raw_transaction_sync(&raw).await })
            })
            .await;
        // Cut short by the caller's deadline, the node is not to blame.
        let cut_short = matches!(answer, Once::Timeout) && limit < full;
        let (sent, not_again) = sync_sent(answer);
        let not_again = not_again && !cut_short;
        if not_again {
            tracing::warn!(
                "the chain's RPC node lacks eth_sendRawTransactionSync, or held it past the RPC \
                 timeout; this instance sends and then looks up receipts from now on \
                 (X402_SEND_SYNC=off avoids the first try)"
            );
            self.send_sync.store(false, Relaxed);
        }
        sent
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
        self.read(|p| {
            let filter = filter.clone();
            Box::pin(async move { p.get_logs(&filter).await })
        })
        .await
    }

    /// The receipt of a transaction, if it is mined.
    pub async fn receipt(&self, hash: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.read(|p| Box::pin(async move { p.get_transaction_receipt(hash).await }))
            .await
    }
}

/// What a node's answer to `eth_sendRawTransactionSync` means, and whether the node is not to be
/// asked again: it lacks the method (JSON-RPC's "method not found", or an error naming it), or it
/// held the request past the whole call's timeout (it waits longer for a receipt than a send may
/// take here, as Arbitrum's nodes do by default).
fn sync_sent(answer: Once<TransactionReceipt>) -> (SyncSent, bool) {
    let (code, message) = match answer {
        Once::Value(receipt) => return (SyncSent::Mined(Box::new(receipt)), false),
        Once::Timeout => return (SyncSent::Unanswered, true),
        Once::Failed => return (SyncSent::Unanswered, false),
        Once::Error(code, message) => (code, message),
    };
    // EIP-7966: 4, taken but not mined within the wait; 5, taken but not ready to run (a nonce
    // gap, or funds). Checked before the table, whose words ("insufficient funds") 5 may use.
    if code == 4 || code == 5 {
        return (SyncSent::InPool, false);
    }
    match node_answer(code, &message) {
        NodeAnswer::Refused => (SyncSent::Refused(message), false),
        NodeAnswer::Revert => (SyncSent::InPool, false),
        NodeAnswer::Transient => {
            let lower = message.to_ascii_lowercase();
            let lacks = code == -32601
                || lower.contains("method not found")
                || lower.contains("not supported")
                || lower.contains("unsupported")
                || lower.contains("sendrawtransactionsync");
            (SyncSent::Unanswered, lacks)
        }
    }
}

/// Whether an estimate's revert is the node's gas cap: what a sender short of gas money and a call
/// that never ends both get.
fn beyond_allowance(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains("gas required exceeds allowance") || why.contains("out of gas")
}

/// The market's fees held under `cap`: what a first signature offers.
pub fn capped((max_fee, tip): (u128, u128), cap: u128) -> (u128, u128) {
    let max_fee = max_fee.min(cap);
    (max_fee, tip.min(max_fee))
}

#[cfg(test)]
mod tests {
    /// A caller that waited on a fetch takes its answer, a failure included; a failure from
    /// before it asked is not its answer, and an estimate past its TTL is nobody's.
    #[test]
    fn a_waiting_caller_takes_the_answer_of_the_fetch_it_waited_on() {
        use super::{ChainError, Duration, FeeCache};
        let ttl = Duration::from_secs(60);
        let mut cache = FeeCache::default();
        let before = std::time::Instant::now();
        cache.keep(&Err(ChainError::Timeout(Duration::from_secs(1))));
        std::thread::sleep(Duration::from_millis(1));
        let asked = std::time::Instant::now();
        assert_eq!(cache.since(asked, ttl), None, "failed before it asked");
        assert_eq!(
            cache.since(before, ttl),
            Some(Err(ChainError::Timeout(Duration::from_secs(1))))
        );
        cache.keep(&Ok((7, 1)));
        assert_eq!(cache.since(asked, ttl), Some(Ok((7, 1))));
        assert_eq!(cache.fresh(Duration::ZERO), None, "past its TTL");
    }

    /// The answers geth, reth and nethermind give when an estimate reaches the gas cap, and some
    /// reverts that are the payment's own.
    #[test]
    fn only_the_nodes_gas_cap_is_asked_about_again_without_a_fee() {
        for capped in [
            "gas required exceeds allowance (0)",
            "Gas required exceeds allowance (21000)",
            "out of gas",
        ] {
            assert!(super::beyond_allowance(capped), "{capped}");
        }
        for revert in [
            "execution reverted: FiatTokenV2: invalid signature",
            "execution reverted",
            "insufficient funds for gas * price + value",
        ] {
            assert!(!super::beyond_allowance(revert), "{revert}");
        }
    }

    /// eth_sendRawTransactionSync's answers as nodes give them: EIP-7966's codes for "taken, no
    /// receipt yet", the pool's refusals, and the ways a node says it lacks the method, which
    /// alone (with a wait past the call's timeout) stop this instance from asking again.
    #[test]
    fn a_sync_send_answer_says_what_became_of_the_bytes() {
        use super::{sync_sent, Once, SyncSent};
        let error = |code: i64, message: &str| Once::Error(code, message.to_owned());
        let cases: [(Once<_>, &str, bool); 11] = [
            (error(4, "The transaction was added to the mempool but wasn't processed in 2s."), "InPool", false),
            (error(5, "added to the mempool but not processed due to a missing nonce or insufficient funds"), "InPool", false),
            (error(-32000, "nonce too low: next nonce 5, tx nonce 4"), "Refused", false),
            (error(-32000, "replacement transaction underpriced"), "Refused", false),
            (error(3, "execution reverted"), "InPool", false),
            (error(-32601, "the method eth_sendRawTransactionSync does not exist/is not available"), "Unanswered", true),
            (error(-32600, "Unsupported method: eth_sendRawTransactionSync"), "Unanswered", true),
            (error(-32005, "rate limit exceeded"), "Unanswered", false),
            (error(-32603, "internal error"), "Unanswered", false),
            (Once::Failed, "Unanswered", false),
            (Once::Timeout, "Unanswered", true),
        ];
        for (answer, expected, not_again) in cases {
            let shown = format!("{answer:?}");
            let (sent, stop) = sync_sent(answer);
            let kind = match sent {
                SyncSent::Mined(_) => "Mined",
                SyncSent::InPool => "InPool",
                SyncSent::Refused(_) => "Refused",
                SyncSent::Unanswered => "Unanswered",
            };
            assert_eq!((kind, stop), (expected, not_again), "{shown}");
        }
    }

    #[test]
    fn a_chain_never_prints_its_rpc_url() {
        let chain = super::Chain::new(
            crate::config::RpcSource::Urls(vec![
                "https://base.example/v2/SECRET-KEY-123".into(),
                "https://other.example/?key=SECRET-KEY-456".into(),
            ]),
            None,
            std::time::Duration::from_secs(1),
        );
        let shown = format!("{chain:?}");
        assert!(!shown.contains("SECRET-KEY"), "{shown}");
    }

    /// Both URLs refuse the connection (nothing listens on ports 1 and 2): the call tries both
    /// and its error, which reaches logs and answers, names neither key.
    #[tokio::test]
    async fn a_failed_call_never_prints_an_rpc_url() {
        let chain = super::Chain::new(
            crate::config::RpcSource::Urls(vec![
                "http://127.0.0.1:1/v2/SECRET-KEY-123".into(),
                "http://user:SECRET-PW@127.0.0.1:2/".into(),
            ]),
            None,
            std::time::Duration::from_secs(2),
        );
        let error = chain
            .code_at(alloy::primitives::Address::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(!error.contains("SECRET"), "{error}");
        assert!(error.contains("chain RPC"), "{error}");
    }
}
