//! Payers whose wallet does not exist yet (ERC-6492), against the project's CREATE2 factory of
//! test wallets, which the stack puts on the network's allow-list (`eip6492AllowedFactories`):
//! verify simulates the deployment and the transfer in one `eth_call`; settle deploys the wallet
//! and pays in one lane transaction through Multicall3. A factory not on the list is refused
//! before anything is sent.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes, B256, U256},
    providers::{ext::AnvilApi, Provider},
    signers::local::PrivateKeySigner,
    sol,
    sol_types::{SolCall, SolValue},
};
use common::*;
use serde_json::json;

/// The tests here count RPC requests and blocks: they must not run at the same time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

sol! {
    function transferWithAuthorization(
        address from, address to, uint256 value, uint256 validAfter, uint256 validBefore,
        bytes32 nonce, bytes signature) external;
    function deploy(address owner, bytes32 salt) external returns (address wallet);
    function walletAddress(address owner, bytes32 salt) external view returns (address);
}

/// The factory the stack allows (infra/stack/facilitator-env.sh).
fn allowed_factory() -> Address {
    config().networks[0].erc6492_factories[0]
}

/// The same factory's code at a fresh address that is on no list.
async fn unlisted_factory() -> Address {
    let code = anvil().get_code_at(allowed_factory()).await.unwrap();
    let factory = Address::from_slice(&random_nonce()[12..]);
    anvil().anvil_set_code(factory, code).await.unwrap();
    factory
}

/// A wallet that `factory` would deploy for a fresh owner, funded while it has no code yet (tokens
/// can be held by an address before its contract exists).
struct Counterfactual {
    owner: PrivateKeySigner,
    factory: Address,
    salt: B256,
    wallet: Address,
}

impl Counterfactual {
    async fn new(factory: Address) -> Self {
        let owner = PrivateKeySigner::random();
        let salt = random_nonce();
        let call = walletAddressCall {
            owner: owner.address(),
            salt,
        };
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(factory)
            .input(Bytes::from(call.abi_encode()).into());
        let answer = anvil().call(tx).await.unwrap();
        let wallet = walletAddressCall::abi_decode_returns(&answer).unwrap();
        mint_usdc(wallet, U256::from(10_000_000u64)).await;
        assert!(code_at(wallet).await.is_empty(), "not deployed yet");
        Counterfactual {
            owner,
            factory,
            salt,
            wallet,
        }
    }

    fn deploy_calldata(&self) -> Bytes {
        deployCall {
            owner: self.owner.address(),
            salt: self.salt,
        }
        .abi_encode()
        .into()
    }

    /// A payment from the wallet, signed by its owner and wrapped as ERC-6492 with the factory call.
    fn payment(&self) -> PaymentBuilder {
        let wallet = self.wallet;
        let signed = PaymentBuilder::with_signer(self.owner.clone())
            .edit(|p| p.from = wallet)
            .sign();
        let mut wrapped = (
            self.factory,
            self.deploy_calldata(),
            signed.signature.clone().unwrap(),
        )
            .abi_encode_params();
        wrapped.extend_from_slice(&[0x64, 0x92].repeat(16));
        signed.edit(|p| p.signature = Some(wrapped.into()))
    }

    /// Deploys the wallet through its factory, as anyone may.
    async fn deploy_now(&self) {
        send_from_anvil_account(
            stack().deployer.address,
            self.factory,
            self.deploy_calldata(),
        )
        .await;
        assert!(!code_at(self.wallet).await.is_empty(), "deployed");
    }
}

async fn code_at(address: Address) -> Bytes {
    anvil().get_code_at(address).await.unwrap()
}

async fn lane_nonces() -> Vec<u64> {
    let mut nonces = Vec::new();
    for lane in &stack().lanes {
        nonces.push(chain_nonce(lane.address, BlockId::pending()).await);
    }
    nonces
}

#[tokio::test]
async fn an_undeployed_wallet_from_an_allowed_factory_verifies_in_one_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let wallet = Counterfactual::new(allowed_factory()).await;
    let payment = wallet.payment();

    reset_rpc_counts().await;
    assert_eq!(verify_reason(&payment.body()).await, "valid");
    assert_eq!(
        rpc_counts().await["methods"],
        json!({"eth_call": 1}),
        "the deployment and the transfer are simulated in one Multicall3 eth_call"
    );
    assert!(
        code_at(wallet.wallet).await.is_empty(),
        "verify deploys nothing"
    );

    // The wallet judges the inner signature: someone else's key is refused.
    let stranger = Counterfactual {
        owner: PrivateKeySigner::random(),
        ..wallet
    };
    assert_eq!(
        verify_reason(&stranger.payment().body()).await,
        "invalid_exact_evm_transaction_simulation_failed",
        "a signature by a key that does not own the wallet the call deploys"
    );
}

#[tokio::test]
async fn a_factory_not_on_the_list_is_refused_and_nothing_is_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let wallet = Counterfactual::new(unlisted_factory().await).await;
    let payment = wallet.payment();
    assert_eq!(
        verify_reason(&payment.body()).await,
        "eip6492_factory_not_allowed"
    );

    let (block, nonces) = (block_number().await, lane_nonces().await);
    let answer = settle(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(
        (
            answer.json["success"].clone(),
            answer.json["errorReason"].clone(),
            answer.json["transaction"].clone()
        ),
        (
            json!(false),
            json!("eip6492_factory_not_allowed"),
            json!("")
        ),
        "{:?}",
        answer.json
    );
    assert!(find_payment_record(&payment.record_id()).await.is_none());
    assert_eq!(block_number().await, block, "no transaction was sent");
    assert_eq!(lane_nonces().await, nonces, "no lane nonce was consumed");
    assert!(code_at(wallet.wallet).await.is_empty());
}

#[tokio::test]
async fn settle_deploys_the_wallet_and_pays_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let wallet = Counterfactual::new(allowed_factory()).await;
    let payment = wallet.payment();
    let before = (
        token_balance(s.token, wallet.wallet).await,
        token_balance(s.token, s.payee.address).await,
    );

    reset_rpc_counts().await;
    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    let counts = rpc_counts().await;
    let count = |m: &str| counts["methods"][m].as_u64().unwrap_or(0);
    assert_eq!(
        (
            count("eth_getCode"),
            count("eth_call"),
            count("eth_estimateGas"),
            count("eth_sendRawTransaction")
        ),
        (0, 0, 1, 1),
        "the calls of any payment: one simulation (of the whole batch, from the lane), one broadcast: {counts}"
    );
    let hash: B256 = answer["transaction"].as_str().unwrap().parse().unwrap();
    let mined = receipt(hash).await.expect("mined");
    assert!(mined.status());
    assert_eq!(
        mined.to,
        Some(facilitator::evm::abi::MULTICALL3),
        "one lane transaction: Multicall3's aggregate3"
    );
    assert!(
        !code_at(wallet.wallet).await.is_empty(),
        "the factory deployed the wallet"
    );
    let price = U256::from(1_000_000u64);
    let after = (
        token_balance(s.token, wallet.wallet).await,
        token_balance(s.token, s.payee.address).await,
    );
    assert_eq!(after, (before.0 - price, before.1 + price));
    let gas_cap = config().networks[0].gas_caps.wallet_deployment;
    let limit = alloy::consensus::Transaction::gas_limit(&transaction(hash).await.unwrap());
    assert!(limit <= gas_cap, "gas limit {limit} over the cap {gas_cap}");
    println!(
        "deployment and first payment: {} gas used, limit {limit}, cap {gas_cap}",
        mined.gas_used
    );

    // Settling again is not a second success, and moves nothing.
    let again = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        (
            again["success"].clone(),
            again["errorReason"].clone(),
            again["transaction"].clone()
        ),
        (
            json!(false),
            json!("invalid_exact_evm_nonce_already_used"),
            json!("")
        ),
        "{again}"
    );
    assert_eq!(
        (
            token_balance(s.token, wallet.wallet).await,
            token_balance(s.token, s.payee.address).await,
        ),
        after
    );
}

#[tokio::test]
async fn a_payment_whose_wallet_was_deployed_meanwhile_still_settles() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let wallet = Counterfactual::new(allowed_factory()).await;
    let payment = wallet.payment();
    assert_eq!(verify_reason(&payment.body()).await, "valid");
    wallet.deploy_now().await;
    let before = token_balance(s.token, wallet.wallet).await;

    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(
        token_balance(s.token, wallet.wallet).await,
        before - U256::from(1_000_000u64)
    );
    let hash: B256 = answer["transaction"].as_str().unwrap().parse().unwrap();
    println!(
        "payment of a wallet already deployed, through the factory: {} gas used",
        receipt(hash).await.expect("mined").gas_used
    );
}

/// Deploys `wallet` and executes `payment`'s authorization directly at the token, with the inner
/// signature, as anyone holding the payment header could; returns that transaction.
async fn front_run(wallet: &Counterfactual, payment: &PaymentBuilder) -> B256 {
    let inner = PaymentBuilder::with_signer(wallet.owner.clone())
        .edit(|p| {
            p.from = payment.from;
            p.nonce = payment.nonce;
            p.valid_after = payment.valid_after;
            p.valid_before = payment.valid_before;
        })
        .sign();
    wallet.deploy_now().await;
    let foreign = send_from_anvil_account(
        stack().deployer.address,
        stack().token,
        transferWithAuthorizationCall {
            from: payment.from,
            to: payment.to,
            value: payment.value,
            validAfter: U256::from(payment.valid_after),
            validBefore: U256::from(payment.valid_before),
            nonce: payment.nonce,
            signature: inner.signature.clone().unwrap(),
        }
        .abi_encode()
        .into(),
    )
    .await;
    assert!(receipt(foreign).await.expect("mined").status());
    foreign
}

/// Somebody deploys the wallet and executes the payer's authorization (its inner signature) before
/// we do. The payee was paid: `/settle` answers success with that transaction, as for any EIP-3009
/// payment, and sends nothing.
#[tokio::test]
async fn a_front_run_wallet_payment_is_a_success_with_the_front_runners_transaction() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    let wallet = Counterfactual::new(allowed_factory()).await;
    let payment = wallet.payment();
    let foreign = front_run(&wallet, &payment).await;
    let (block, nonces) = (block_number().await, lane_nonces().await);
    let paid = token_balance(s.token, wallet.wallet).await;

    let answer = settle_to_the_end(&payment.body()).await;
    assert_eq!(
        (answer["success"].clone(), answer["transaction"].clone()),
        (json!(true), json!(foreign)),
        "{answer}"
    );
    assert_eq!(block_number().await, block, "we sent nothing");
    assert_eq!(lane_nonces().await, nonces);
    assert_eq!(token_balance(s.token, wallet.wallet).await, paid);
}

/// The same front-run between `/settle`'s queueing and the worker's simulation: Multicall3's batch
/// reverts with Multicall3's own message, so the worker asks the token whether the authorization is
/// used, and attributes it rather than failing the payment.
#[tokio::test]
async fn a_wallet_payment_front_run_before_the_worker_signs_is_attributed_not_failed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let wallet = Counterfactual::new(allowed_factory()).await;
    let payment = wallet.payment();
    let id = common::replay::record_payment(&payment, 0).await;
    assert_eq!(
        payment_record(&id).await.target(),
        facilitator::evm::abi::MULTICALL3
    );
    let foreign = front_run(&wallet, &payment).await;
    let (block, nonces) = (block_number().await, lane_nonces().await);

    let worker = facilitator::worker::Worker::from_config(&config(), &aws().await);
    let message = facilitator::queue::SettlementMessage {
        id: id.clone(),
        replace: None,
        created: None,
        simulated: None,
    };
    worker.process(&message).await.unwrap();
    let record = payment_record(&id).await;
    assert_eq!(
        (record.state, record.settled_by_other, record.tx_hash),
        (facilitator::store::State::Settled, true, Some(foreign)),
        "{record:?}"
    );
    assert_eq!(block_number().await, block, "we sent nothing");
    assert_eq!(lane_nonces().await, nonces);
}

/// A wrapper whose factory is the zero address carries no deployment: a wallet must be there, and
/// an address without code gets the reference's undeployed-wallet reason, whatever the list says.
#[tokio::test]
async fn a_wrapper_naming_no_factory_needs_a_deployed_wallet() {
    let _one = ONE_AT_A_TIME.lock().await;
    let wallet = Counterfactual::new(allowed_factory()).await;
    let no_factory = Counterfactual {
        factory: Address::ZERO,
        ..wallet
    };
    assert_eq!(
        verify_reason(&no_factory.payment().body()).await,
        "invalid_exact_evm_payload_undeployed_smart_wallet"
    );
}
