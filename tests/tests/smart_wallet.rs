//! Payers that are contract wallets (ERC-1271), against the project's test wallet placed on anvil:
//! the token asks the wallet through the `bytes` overload of `transferWithAuthorization`, and verify
//! lets that decide. Also the answers for smart-wallet signatures that cannot be a wallet's.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::{
    primitives::{Address, Bytes, U256},
    providers::ext::AnvilApi,
    signers::local::PrivateKeySigner,
    sol,
    sol_types::{SolCall, SolValue},
};
use common::*;
use serde_json::{json, Value};

/// The tests here count RPC requests: they must not run at the same time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

sol! {
    function initialize(address owner) external;
    function mint(address to, uint256 amount) external;
}

/// Places the project's ERC-1271 test wallet, owned by `owner`, at a fresh address and funds it.
async fn place_wallet(owner: Address) -> Address {
    let s = stack();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.local/contracts/TestSmartWallet.json"
    );
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("the stack compiled the contracts"),
    )
    .unwrap();
    let wallet = Address::from_slice(&random_nonce()[12..]);
    let code: Bytes = serde_json::from_value(artifact["deployedBytecode"].clone()).unwrap();
    anvil().anvil_set_code(wallet, code).await.unwrap();
    send_from_anvil_account(
        s.deployer.address,
        wallet,
        initializeCall { owner }.abi_encode().into(),
    )
    .await;
    let amount = U256::from(10_000_000u64);
    send_from_anvil_account(
        s.deployer.address,
        s.token,
        mintCall { to: wallet, amount }.abi_encode().into(),
    )
    .await;
    wallet
}

/// `signature` wrapped as ERC-6492 (factory, factory calldata, inner signature ‖ magic).
fn wrap_6492(signature: &Bytes) -> Bytes {
    let mut wrapped = (
        Address::repeat_byte(0xfa),
        Bytes::from(vec![0xde, 0xad]),
        signature.clone(),
    )
        .abi_encode_params();
    wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
    wrapped.into()
}

async fn reason_of(payment: &PaymentBuilder) -> Value {
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    if answer.json["isValid"] == true {
        return json!("valid");
    }
    answer.json["invalidReason"].clone()
}

#[tokio::test]
async fn contract_wallets_pay_through_erc1271() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::from_bytes(&stack().payers[0].private_key.unwrap()).unwrap();
    let wallet = place_wallet(owner.address()).await;
    let from_wallet = || PaymentBuilder::with_signer(owner.clone()).edit(|p| p.from = wallet);

    reset_rpc_counts().await;
    let payment = from_wallet().sign();
    assert_eq!(
        reason_of(&payment).await,
        "valid",
        "the owner's 65-byte signature, judged by the wallet"
    );
    assert_eq!(
        rpc_counts().await["methods"],
        json!({"eth_getCode": 1, "eth_call": 1}),
        "a wallet's 65-byte signature costs one eth_getCode on top of the simulation"
    );

    let wrapped = from_wallet()
        .sign()
        .edit(|p| p.signature = Some(wrap_6492(p.signature.as_ref().unwrap())));
    assert_eq!(
        reason_of(&wrapped).await,
        "valid",
        "ERC-6492 wrapping of a deployed wallet's signature"
    );

    let stranger = PrivateKeySigner::random();
    let not_owner = PaymentBuilder::with_signer(stranger)
        .edit(|p| p.from = wallet)
        .sign();
    assert_eq!(
        reason_of(&not_owner).await,
        "invalid_exact_evm_transaction_simulation_failed",
        "the wallet refuses a signature by someone else, so the simulation fails"
    );
}

#[tokio::test]
async fn smart_wallet_signatures_without_a_wallet_get_their_reason() {
    let _one = ONE_AT_A_TIME.lock().await;
    // ERC-6492 for an address with no code: we deploy no wallets.
    let counterfactual = PaymentBuilder::new(1)
        .sign()
        .edit(|p| p.signature = Some(wrap_6492(p.signature.as_ref().unwrap())));
    assert_eq!(
        reason_of(&counterfactual).await,
        "eip6492_factory_not_allowed"
    );

    // A long signature for a plain key.
    let long = PaymentBuilder::new(1)
        .sign()
        .edit(|p| p.signature = Some(Bytes::from(vec![0x11u8; 100])));
    assert_eq!(
        reason_of(&long).await,
        "invalid_exact_evm_payload_undeployed_smart_wallet"
    );
}

#[tokio::test]
async fn with_contract_wallets_off_a_wallets_payment_is_refused_before_the_chain_is_asked() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::from_bytes(&stack().payers[0].private_key.unwrap()).unwrap();
    let wallet = place_wallet(owner.address()).await;
    let (_server, base) = start_local_server(&[("X402_CONTRACT_WALLETS", "off")]).await;

    reset_rpc_counts().await;
    let from_wallet = PaymentBuilder::with_signer(owner)
        .edit(|p| p.from = wallet)
        .sign();
    let answer = post_json(&base, "/verify", &from_wallet.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["isValid"], false);
    assert_eq!(answer.json["invalidReason"], "invalid_exact_evm_signature");
    let message = answer.json["invalidMessage"].as_str().unwrap_or_default();
    assert!(message.contains("no contract-wallet"), "{message}");
    assert_eq!(
        rpc_counts().await["rpc_requests"],
        0,
        "refused before the chain is asked"
    );

    // A plain key's payment is still good here (and the wallet's on the shared server, above).
    let answer = post_json(&base, "/verify", &PaymentBuilder::new(1).sign().body()).await;
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
}
