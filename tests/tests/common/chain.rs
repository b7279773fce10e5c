//! The chain, straight to anvil (not through the counting proxy, so the tests' own reads never
//! count against the facilitator's RPC budget): an alloy provider with anvil's API, typed reads
//! (transactions, receipts, nonces, balances), transactions from anvil's unlocked accounts, and
//! [`MiningStopped`], the one way a test holds the chain still.

use std::time::Duration;

use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes, B256, U256},
    providers::{ext::AnvilApi, Provider, RootProvider},
    rpc::{
        client::RpcClient,
        types::{Transaction, TransactionReceipt, TransactionRequest},
    },
    sol_types::SolCall,
    transports::http::Http,
};

use super::{
    http::http, payment::balanceOfCall, process::finish_detached, stack::stack, wait::eventually,
};

/// anvil, through the tests' shared HTTP client (usable from any test's runtime). No fillers: a
/// transaction request goes to the node as the test wrote it, and anvil fills in the rest.
pub fn anvil() -> RootProvider {
    let url = stack().anvil_url.parse().expect("ANVIL_URL is a URL");
    RootProvider::new(RpcClient::new(Http::with_client(http().clone(), url), true))
}

pub async fn block_number() -> u64 {
    anvil().get_block_number().await.unwrap()
}

/// The transaction, if the node knows it (in the pool or mined).
pub async fn transaction(hash: B256) -> Option<Transaction> {
    anvil().get_transaction_by_hash(hash).await.unwrap()
}

/// The receipt, once the transaction is mined.
pub async fn receipt(hash: B256) -> Option<TransactionReceipt> {
    anvil().get_transaction_receipt(hash).await.unwrap()
}

/// `address`'s transaction count at `at` (`BlockId::latest()` mined, `BlockId::pending()` with
/// the pool).
pub async fn chain_nonce(address: Address, at: BlockId) -> u64 {
    anvil()
        .get_transaction_count(address)
        .block_id(at)
        .await
        .unwrap()
}

pub async fn token_balance(token: Address, owner: Address) -> U256 {
    let call = TransactionRequest::default()
        .to(token)
        .input(Bytes::from(balanceOfCall { account: owner }.abi_encode()).into());
    // At the latest block, named: alloy sends no block by default, and anvil then answers from
    // the pending state, which counts a transfer still waiting in the pool.
    let out = anvil().call(call).block(BlockId::latest()).await.unwrap();
    balanceOfCall::abi_decode_returns(&out).unwrap()
}

/// Sends `tx` from one of anvil's unlocked (or impersonated) accounts, as written; not waited
/// for. Returns its hash.
pub async fn send_unlocked(tx: TransactionRequest) -> B256 {
    *anvil().send_transaction(tx).await.unwrap().tx_hash()
}

/// Sends a transaction from one of anvil's unlocked accounts and waits for it to be mined;
/// returns its hash.
///
/// One at a time per test binary: the tests of a binary run side by side and several send from
/// the same account (the deployer mints and front-runs for all of them); two sends in flight
/// would be given the same account nonce by anvil, and the second is refused as "replacement
/// transaction underpriced" (CI saw it in verify_permit2.rs).
pub async fn send_from_anvil_account(from: Address, to: Address, data: Bytes) -> B256 {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let tx = TransactionRequest::default()
        .from(from)
        .to(to)
        .input(data.into());
    let hash = send_unlocked(tx).await;
    let mined = eventually(
        "the setup transaction mined",
        100,
        Duration::from_millis(50),
        || async { receipt(hash).await.ok_or(hash) },
    )
    .await;
    assert!(mined.status(), "setup transaction reverted: {mined:?}");
    hash
}

alloy::sol! {
    function mint(address to, uint256 amount) external;
}

/// Mints `amount` of the stack's test USDC to `to` (its owner, the deployer, may), code or not.
pub async fn mint_usdc(to: Address, amount: U256) {
    let s = stack();
    send_from_anvil_account(
        s.deployer.address,
        s.token,
        mintCall { to, amount }.abi_encode().into(),
    )
    .await;
}

/// Mines one block with whatever is in the pool.
pub async fn mine() {
    anvil().evm_mine(None).await.unwrap();
}

/// Takes `hash` out of anvil's pool, as a node that forgot it would.
pub async fn drop_from_pool(hash: B256) {
    anvil().anvil_drop_transaction(hash).await.unwrap();
    assert!(
        transaction(hash).await.is_none(),
        "{hash} is gone from the pool"
    );
}

/// Stops anvil's automine: transactions wait in the pool until [`mine`] or [`resume_mining`].
pub async fn stop_mining() {
    anvil().anvil_set_auto_mine(false).await.unwrap();
}

/// Mines what is pending, then mines each transaction as it comes again.
pub async fn resume_mining() {
    mine().await;
    anvil().anvil_set_auto_mine(true).await.unwrap();
}

/// anvil's automine stopped; mining resumes (and whatever is pending is mined) however the test
/// ends, so later tests see a mining chain.
pub struct MiningStopped;

impl MiningStopped {
    pub async fn start() -> Self {
        stop_mining().await;
        MiningStopped
    }

    /// Only the guard, for a test that stops and resumes mining itself, often ([`stop_mining`],
    /// [`resume_mining`]); mining is as it was when this returns.
    pub fn on_drop_only() -> Self {
        MiningStopped
    }
}

impl Drop for MiningStopped {
    fn drop(&mut self) {
        finish_detached(async {
            let anvil = anvil();
            let _ = anvil.anvil_set_auto_mine(true).await;
            let _ = anvil.evm_mine(None).await;
        });
    }
}
