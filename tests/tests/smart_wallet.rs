//! Payers that are contract wallets (ERC-1271), against the project's test wallet placed on anvil:
//! the token asks the wallet through the `bytes` overload of `transferWithAuthorization`, and verify
//! lets that decide. Also the answers for smart-wallet signatures that cannot be a wallet's.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::{
    primitives::{Address, Bytes, U256},
    signers::local::PrivateKeySigner,
    sol_types::SolValue,
};
use common::*;
use serde_json::json;

/// The tests here count RPC requests: they must not run at the same time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Places the project's ERC-1271 test wallet, owned by `owner`, at a fresh address and funds it.
async fn place_wallet(owner: Address) -> Address {
    let wallet = place_test_wallet(owner).await;
    mint_usdc(wallet, U256::from(10_000_000u64)).await;
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

#[tokio::test]
async fn contract_wallets_pay_through_erc1271() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::from_bytes(&stack().payers[0].private_key.unwrap()).unwrap();
    let wallet = place_wallet(owner.address()).await;
    let from_wallet = || PaymentBuilder::with_signer(owner.clone()).edit(|p| p.from = wallet);

    reset_rpc_counts().await;
    let payment = from_wallet().sign();
    assert_eq!(
        verify_reason(&payment.body()).await,
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
        verify_reason(&wrapped.body()).await,
        "valid",
        "ERC-6492 wrapping of a deployed wallet's signature"
    );

    let stranger = PrivateKeySigner::random();
    let not_owner = PaymentBuilder::with_signer(stranger)
        .edit(|p| p.from = wallet)
        .sign();
    assert_eq!(
        verify_reason(&not_owner.body()).await,
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
        verify_reason(&counterfactual.body()).await,
        "eip6492_factory_not_allowed"
    );

    // A long signature for a plain key.
    let long = PaymentBuilder::new(1)
        .sign()
        .edit(|p| p.signature = Some(Bytes::from(vec![0x11u8; 100])));
    assert_eq!(
        verify_reason(&long.body()).await,
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

#[tokio::test]
async fn a_wallet_that_passes_simulation_and_reverts_on_chain_costs_at_most_its_cap_and_is_refused()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::from_bytes(&stack().payers[0].private_key.unwrap()).unwrap();
    let wallet = place_wallet(owner.address()).await;
    let from_wallet = || {
        PaymentBuilder::with_signer(owner.clone())
            .edit(|p| p.from = wallet)
            .sign()
    };
    let policy = config().payer_reverts;
    let cap = config().networks[0].gas_caps.contract_wallet;

    let (mut gas, mut wei) = (0u64, U256::ZERO);
    for round in 1..=policy.limit {
        let payment = from_wallet();
        let (settled, mined) =
            settle_against_a_hostile_wallet(payment.body(), payment.record_id(), wallet).await;
        assert_eq!(settled.status, 200, "{:?}", settled.json);
        let answer = settled.json;
        assert_eq!(answer["success"], false, "round {round}: {answer:?}");
        assert_eq!(
            answer["errorReason"], "invalid_exact_evm_transaction_failed",
            "round {round}: {answer:?}"
        );
        assert!(!mined.status(), "round {round}: the settlement reverted");
        gas += mined.gas_used;
        wei += U256::from(mined.gas_used) * U256::from(mined.effective_gas_price);
        let limit = alloy::consensus::Transaction::gas_limit(
            &transaction(mined.transaction_hash).await.unwrap(),
        );
        assert!(
            mined.gas_used * 10 >= limit * 9,
            "round {round}: the wallet burned the gas it was given ({} of {limit})",
            mined.gas_used
        );
    }
    println!(
        "the lanes paid {gas} gas ({wei} wei) for {} hostile settlements; the bound is {cap} gas \
         (maxGasContractWallet) x {} = {}",
        policy.limit,
        policy.limit,
        cap * u64::from(policy.limit)
    );
    assert!(gas <= cap * u64::from(policy.limit), "{gas} gas");

    // Behaving again, the wallet passes simulation, and is refused: by /verify and by /settle,
    // which record nothing.
    let next = from_wallet();
    let verified = verify(&next.body()).await;
    assert_eq!(verified.json["isValid"], false, "{:?}", verified.json);
    assert_eq!(
        verified.json["invalidReason"],
        "invalid_exact_evm_signature"
    );
    let message = verified.json["invalidMessage"].as_str().unwrap_or_default();
    assert!(message.contains("reverted on chain"), "{message}");
    let settled = settle(&next.body()).await;
    assert_eq!(settled.json["success"], false, "{:?}", settled.json);
    assert_eq!(settled.json["errorReason"], "invalid_exact_evm_signature");
    assert!(find_payment_record(&next.record_id()).await.is_none());

    // The payer's own key is not refused: only its wallet's payments are.
    let by_key = PaymentBuilder::new(0).sign();
    assert_eq!(verify_reason(&by_key.body()).await, "valid");
}

/// The revert counts against moto's DynamoDB: recorders racing on one payer each count theirs (the
/// count is what the refusal is decided by), and a revert after a quiet longer than the refusal time
/// starts a new count.
#[tokio::test]
async fn revert_counts_are_exact_under_racing_recorders_and_start_afresh_after_a_quiet_period() {
    let policy = facilitator::config::RevertPolicy {
        limit: 3,
        refuse_for: std::time::Duration::from_secs(2),
    };
    let store = store().await.with_payer_policy(policy);
    let network = config().networks[0].network.caip2().to_owned();
    let payer = Address::from_slice(&random_nonce()[12..]);
    let now = now();

    let busy = BusyMachine::start();
    let recorders: Vec<_> = (0..8)
        .map(|_| {
            let (store, network) = (store.clone(), network.clone());
            tokio::spawn(async move { store.count_revert(&network, payer, now).await })
        })
        .collect();
    let mut seen = Vec::new();
    for recorder in recorders {
        seen.push(recorder.await.unwrap().unwrap().reverts);
    }
    drop(busy);
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=8).collect::<Vec<_>>(),
        "each recorder counted once"
    );
    let (standing, until) = store
        .payer_refusal(&network, payer, now)
        .await
        .unwrap()
        .expect("refused past the limit");
    assert_eq!((standing.reverts, until), (8, now + 2));
    assert_eq!(
        store.payer_refusal(&network, payer, now + 2).await.unwrap(),
        None
    );

    // Two seconds (the refusal time) after the last revert, the next one starts a new count.
    let later = store.count_revert(&network, payer, now + 3).await.unwrap();
    assert_eq!(later.reverts, 1);
    assert_eq!(
        store.payer_refusal(&network, payer, now + 3).await.unwrap(),
        None
    );
}
