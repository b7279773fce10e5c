//! The project's ERC-1271 test wallet (`TestSmartWallet.sol`) on anvil, as the contract-wallet
//! tests use it whatever the payment's kind (EIP-3009 or Permit2): placed at a fresh address, its
//! `hostile` switch, and a settlement during which the wallet turns hostile.

use alloy::{
    primitives::{Address, Bytes, B256, U256},
    providers::ext::AnvilApi,
    rpc::types::TransactionReceipt,
    sol_types::SolCall,
};
use serde_json::Value;

use super::{
    chain::{anvil, mine, receipt, send_from_anvil_account, MiningStopped},
    http::{settle, Answer},
    records::wait_sent,
    stack::stack,
};

alloy::sol! {
    function initialize(address owner) external;
}

/// Places the project's ERC-1271 test wallet (`TestSmartWallet.sol`, as the stack compiled it),
/// owned by `owner`, at a fresh address; it holds nothing yet.
pub async fn place_test_wallet(owner: Address) -> Address {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.local/contracts/TestSmartWallet.json"
    );
    let artifact: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("the stack compiled the contracts"),
    )
    .unwrap();
    let wallet = Address::from_slice(&super::payment::random_nonce()[12..]);
    let code: Bytes = serde_json::from_value(artifact["deployedBytecode"].clone()).unwrap();
    anvil().anvil_set_code(wallet, code).await.unwrap();
    send_from_anvil_account(
        stack().deployer.address,
        wallet,
        initializeCall { owner }.abi_encode().into(),
    )
    .await;
    wallet
}

/// Sets the test wallet's `hostile` switch (storage slot 1): it then burns the gas it is given and
/// refuses every signature, as its owner could make it do between simulation and mining by
/// front-running the facilitator's transaction with one of its own.
pub async fn set_hostile(wallet: Address, hostile: bool) {
    let value = B256::from(U256::from(u8::from(hostile)));
    anvil()
        .anvil_set_storage_at(wallet, U256::from(1), value)
        .await
        .unwrap();
}

/// One settlement from a wallet that passes every simulation and reverts when mined: `/settle` is
/// asked for `body` (the payment recorded as `id`) with mining stopped, `wallet` turns hostile once
/// the worker's transaction is in the pool, the block is mined, and the wallet behaves again.
/// Returns `/settle`'s answer, unchecked, and the mined receipt.
pub async fn settle_against_a_hostile_wallet(
    body: Value,
    id: String,
    wallet: Address,
) -> (Answer, TransactionReceipt) {
    let _mining = MiningStopped::start().await;
    let settling = tokio::spawn(async move { settle(&body).await });
    let sent = wait_sent(&id).await;
    set_hostile(wallet, true).await;
    mine().await;
    let answer = settling.await.unwrap();
    set_hostile(wallet, false).await;
    let hash = sent.tx_hash.unwrap();
    (answer, receipt(hash).await.expect("mined"))
}
