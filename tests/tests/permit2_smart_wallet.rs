//! `exact` Permit2 payments whose payer is a deployed contract wallet (ERC-1271), against the
//! project's test wallet placed on anvil: the signature is not the payer key's, so the local
//! checks pass it on and Permit2 asks the wallet (`isValidSignature`) in the one simulation; a
//! refusal there is `invalid_permit2_signature`, an EOA's wrong signature included.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
    sol_types::SolCall,
};
use common::{replay::*, *};
use facilitator::store::State;
use serde_json::json;

/// The tests here count RPC requests: they must not run at the same time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test wallet owned by `owner`, holding 1,000 permit tokens, that has approved Permit2 for
/// all of them.
async fn funded_wallet(owner: Address) -> Address {
    let wallet = place_test_wallet(owner).await;
    let mint = permit2::abi::mintCall {
        to: wallet,
        value: one_permit_token() * U256::from(1000),
    };
    let s = stack();
    send_from_anvil_account(s.deployer.address, s.permit_token, mint.abi_encode().into()).await;
    approve_permit2_as(wallet, U256::MAX).await;
    wallet
}

/// A Permit2 payment from `wallet`, signed by `signer`.
fn from_wallet(signer: &PrivateKeySigner, wallet: Address) -> Permit2Builder {
    Permit2Builder::new(signer.clone())
        .edit(|p| p.from = wallet)
        .sign()
}

/// `/settle` refuses `payment` with `invalid_permit2_signature`: no record, no transaction,
/// nothing moved.
async fn settle_refuses_the_signature(payment: &Permit2Builder) {
    let (before, block) = (permit_balances(payment).await, block_number().await);
    let answer = settle(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(
        outcome(&answer.json),
        (json!(false), json!("invalid_permit2_signature"), json!("")),
        "{:?}",
        answer.json
    );
    assert_nothing_recorded_or_sent(payment, before, block).await;
}

#[tokio::test]
async fn a_deployed_wallets_permit2_payment_verifies_in_one_call_and_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::random();
    let wallet = funded_wallet(owner.address()).await;
    let warm = from_wallet(&owner, wallet);
    assert_eq!(verify_reason(&warm.body()).await, "valid");

    let payment = from_wallet(&owner, wallet);
    reset_rpc_counts().await;
    assert_eq!(
        verify_reason(&payment.body()).await,
        "valid",
        "the owner's signature, judged by the wallet when Permit2 asks it"
    );
    assert_eq!(
        rpc_counts().await["methods"],
        json!({"eth_call": 1}),
        "as a key's payment: the one batch, whose simulation asks the wallet"
    );

    let before = permit_balances(&payment).await;
    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert!(same_address(&answer["payer"], wallet), "{answer}");
    moved_once(before, permit_balances(&payment).await, payment.permitted);
    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled);
    assert!(
        record.signed_by_contract(),
        "the worker gives it the contract-wallet gas cap and attributes its reverts to the payer"
    );
    let mined = receipt(answer["transaction"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(mined.to, Some(EXACT_PERMIT2_PROXY));

    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        outcome(&again),
        (json!(false), json!("permit2_invalid_nonce"), json!("")),
        "{again}"
    );
    moved_once(before, permit_balances(&payment).await, payment.permitted);
}

#[tokio::test]
async fn a_strangers_signature_for_a_wallet_is_an_invalid_permit2_signature() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::random();
    let wallet = funded_wallet(owner.address()).await;
    let payment = from_wallet(&PrivateKeySigner::random(), wallet);
    reset_rpc_counts().await;
    assert_eq!(
        verify_reason(&payment.body()).await,
        "invalid_permit2_signature",
        "the wallet refuses it, so Permit2 reverts with InvalidContractSignature"
    );
    assert_eq!(rpc_counts().await["methods"], json!({"eth_call": 1}));
    settle_refuses_the_signature(&payment).await;
}

#[tokio::test]
async fn an_eoas_wrong_signature_is_still_an_invalid_permit2_signature() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payer = approved_payer().await;
    let payment = from_wallet(&PrivateKeySigner::random(), payer.address());
    reset_rpc_counts().await;
    assert_eq!(
        verify_reason(&payment.body()).await,
        "invalid_permit2_signature",
        "Permit2's ecrecover gives another signer: InvalidSigner"
    );
    assert_eq!(rpc_counts().await["methods"], json!({"eth_call": 1}));
    settle_refuses_the_signature(&payment).await;
}

#[tokio::test]
async fn with_contract_wallets_off_a_wallets_permit2_payment_is_refused_before_the_chain_is_asked()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::random();
    let wallet = funded_wallet(owner.address()).await;
    let (_server, base) = start_local_server(&[("X402_CONTRACT_WALLETS", "off")]).await;

    reset_rpc_counts().await;
    let payment = from_wallet(&owner, wallet);
    for path in ["/verify", "/settle"] {
        let answer = post_json(&base, path, &payment.body()).await;
        assert_eq!(answer.status, 200, "{path}: {:?}", answer.json);
        let (reason, message) = match path {
            "/verify" => ("invalidReason", "invalidMessage"),
            _ => ("errorReason", "errorMessage"),
        };
        assert_eq!(answer.json[reason], "invalid_permit2_signature", "{path}");
        let message = answer.json[message].as_str().unwrap_or_default();
        assert!(message.contains("no contract-wallet"), "{path}: {message}");
    }
    assert_eq!(
        rpc_counts().await["rpc_requests"],
        0,
        "refused before the chain is asked"
    );
    assert!(find_payment_record(&payment.record_id()).await.is_none());
}

#[tokio::test]
async fn a_wallet_reverting_its_permit2_settlements_costs_at_most_its_cap_and_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let owner = PrivateKeySigner::random();
    let wallet = funded_wallet(owner.address()).await;
    let cap = config().networks[0].gas_caps.contract_wallet;
    for round in 1..=config().payer_reverts.limit {
        let payment = from_wallet(&owner, wallet);
        let (answer, mined) =
            settle_against_a_hostile_wallet(payment.body(), payment.record_id(), wallet).await;
        assert_eq!(
            answer.json["success"], false,
            "round {round}: {:?}",
            answer.json
        );
        assert!(!mined.status(), "round {round}: the settlement reverted");
        assert!(
            mined.gas_used <= cap,
            "round {round}: {} gas",
            mined.gas_used
        );
    }
    // Behaving again, the wallet passes simulation, and is refused at /verify and /settle.
    let next = from_wallet(&owner, wallet);
    let verified = verify(&next.body()).await;
    assert_eq!(verified.json["isValid"], false, "{:?}", verified.json);
    let message = verified.json["invalidMessage"].as_str().unwrap_or_default();
    assert!(message.contains("reverted on chain"), "{message}");
    let settled = settle(&next.body()).await;
    assert_eq!(settled.json["success"], false, "{:?}", settled.json);
    assert!(find_payment_record(&next.record_id()).await.is_none());
}
