//! Honest `/settle` answers (DESIGN I2, I5): one success per payment and only to that payment,
//! whatever the timing, on the local stack. Each test asserts the exact answers and what moved on
//! chain. Tests here run one at a time: they share the RPC proxy's fault switch and compare
//! balances.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, U256};
use common::{replay::*, *};
use facilitator::store::State;
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PRICE: u64 = 1_000_000;

fn used_nonce(answer: &Value) -> (Value, Value, Value) {
    (
        answer["success"].clone(),
        answer["errorReason"].clone(),
        answer["transaction"].clone(),
    )
}

fn is_used_nonce(answer: &Value) -> bool {
    used_nonce(answer)
        == (
            json!(false),
            json!("invalid_exact_evm_nonce_already_used"),
            json!(""),
        )
}

fn assert_success_with(answer: &Value, hash: &str) {
    assert_eq!(
        (answer["success"].clone(), answer["transaction"].clone()),
        (json!(true), json!(hash)),
        "{answer}"
    );
}

/// The payment identifier extension as a client echoes it with an id.
fn identifier(id: &str) -> Value {
    json!({"payment-identifier": {"info": {"required": false, "id": id}}})
}

fn new_identifier() -> String {
    format!("pay_{}", &alloy::hex::encode(random_nonce())[..32])
}

/// The payer signs A1 (to the payee) and A2 (another amount to another merchant) under the same
/// nonce. A2 verifies while the nonce is unused; once A1 settles, A2 is never told success, gets
/// no transaction and changes nothing.
#[tokio::test]
async fn a_second_authorization_under_a_used_nonce_is_never_told_success() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    for (front_end, base) in front_ends() {
        let merchant_2 = Address::from_slice(&random_nonce()[..20]);
        let a1 = PaymentBuilder::new(0).sign();
        let a2 = a1
            .clone()
            .edit(|p| {
                p.to = merchant_2;
                p.pay_to = merchant_2;
                p.value = U256::from(500_000u64);
                p.amount = "500000".into();
            })
            .sign();
        assert_eq!(
            post_json(&base, "/verify", &a2.body()).await.json["isValid"],
            true,
            "{front_end}: A2 verifies while its nonce is unused"
        );

        let settled = post_json(&base, "/settle", &a1.body()).await;
        assert_eq!(
            settled.json["success"], true,
            "{front_end}: {:?}",
            settled.json
        );
        let record = store().await.get(&a1.payment_id()).await.unwrap().unwrap();
        let block = block_number().await;

        let answer = post_json(&base, "/settle", &a2.body()).await;
        assert_eq!(answer.status, 200);
        assert!(
            is_used_nonce(&answer.json),
            "{front_end}: {:?}",
            answer.json
        );
        assert_eq!(token_balance(s.token, merchant_2).await, U256::ZERO);
        assert_eq!(block_number().await, block, "{front_end}: nothing was sent");
        assert_eq!(
            store().await.get(&a1.payment_id()).await.unwrap().unwrap(),
            record,
            "{front_end}: the one record is unchanged"
        );
    }
}

/// A payment answered `settlement_pending` (anvil not mining), mined before its `validBefore`,
/// and asked for again after `validBefore` has passed: the retry is answered from the record, not
/// refused by the clock.
#[tokio::test]
async fn a_retry_after_settlement_pending_and_past_valid_before_is_the_success() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_server, base) = start_local_server(&[("X402_SETTLE_DEADLINE_MS", "2000")]).await;
    let payment = PaymentBuilder::new(2)
        .edit(|p| p.valid_before = now() + 9)
        .sign();
    let before = balances(&payment).await;

    let mining = MiningStopped::start().await;
    let pending = post_json(&base, "/settle", &payment.body()).await;
    assert_eq!(
        pending.json["errorReason"], "settlement_pending",
        "{:?}",
        pending.json
    );
    let hash = pending.json["transaction"].as_str().unwrap().to_owned();
    mine().await;
    drop(mining);
    until_after(payment.valid_before + 1).await;

    let retry = post_json(&base, "/settle", &payment.body()).await;
    assert_success_with(&retry.json, &hash);
    moved_once(before, balances(&payment).await, U256::from(PRICE));
    // Claimed: one more request is not a second success.
    assert!(is_used_nonce(&settle(&payment.body()).await.json));
}

/// `payment-identifier`: the same id with the same payment gets the same success again; the same
/// id with another payment is a 409; a payment that requires an id and has none is a 400; the
/// same payment without the id is not told success again.
#[tokio::test]
async fn a_payment_identifier_gets_the_same_answer_and_a_conflict_gets_409() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (front_end, base) in front_ends() {
        let id = new_identifier();
        let payment = PaymentBuilder::new(1).sign();
        let before = balances(&payment).await;
        let body = payment.body_with_extensions(identifier(&id));

        let first = post_json(&base, "/settle", &body).await;
        assert_eq!(first.json["success"], true, "{front_end}: {:?}", first.json);
        let again = post_json(&base, "/settle", &body).await;
        assert_eq!(
            (again.status, &again.json),
            (200, &first.json),
            "{front_end}"
        );
        moved_once(before, balances(&payment).await, U256::from(PRICE));

        let without_id = post_json(&base, "/settle", &payment.body()).await;
        assert!(
            is_used_nonce(&without_id.json),
            "{front_end}: {:?}",
            without_id.json
        );

        let other = PaymentBuilder::new(1).sign();
        let conflict = post_json(
            &base,
            "/settle",
            &other.body_with_extensions(identifier(&id)),
        )
        .await;
        assert_eq!(conflict.status, 409, "{front_end}: {:?}", conflict.json);
        assert_eq!(
            (
                conflict.json["success"].clone(),
                conflict.json["errorReason"].clone()
            ),
            (json!(false), json!("payment_identifier_conflict"))
        );
        assert!(
            store()
                .await
                .get(&other.payment_id())
                .await
                .unwrap()
                .is_none(),
            "{front_end}: the conflicting payment is not recorded"
        );

        let required =
            other.body_with_extensions(json!({"payment-identifier": {"info": {"required": true}}}));
        let refused = post_json(&base, "/settle", &required).await;
        assert_eq!(refused.status, 400, "{front_end}: {:?}", refused.json);
        assert_eq!(refused.json["errorReason"], "payment_identifier_required");
        let verified = post_json(&base, "/verify", &required).await;
        assert_eq!(
            (
                verified.json["isValid"].clone(),
                verified.json["invalidReason"].clone()
            ),
            (json!(false), json!("payment_identifier_required"))
        );
    }
}

/// Somebody else executes the payer's authorization before we do (a front-runner with the
/// payment header). The payee was paid: `/settle` answers success with that transaction, once.
#[tokio::test]
async fn a_front_run_authorization_is_a_success_with_the_front_runners_transaction() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = stack();
    for (front_end, base) in front_ends() {
        let payment = PaymentBuilder::new(3).sign();
        let before = balances(&payment).await;
        let foreign =
            send_from_anvil_account(s.deployer.address, s.token, payment.transfer_calldata()).await;
        moved_once(before, balances(&payment).await, U256::from(PRICE));
        let block = block_number().await;

        let answer = post_json(&base, "/settle", &payment.body()).await;
        assert_eq!(
            (
                answer.json["success"].clone(),
                answer.json["transaction"].clone()
            ),
            (json!(true), json!(foreign)),
            "{front_end}: {:?}",
            answer.json
        );
        let record = store()
            .await
            .get(&payment.payment_id())
            .await
            .unwrap()
            .unwrap();
        assert!(
            record.state == State::Settled && record.settled_by_other,
            "{record:?}"
        );
        assert!(is_used_nonce(
            &post_json(&base, "/settle", &payment.body()).await.json
        ));
        assert_eq!(block_number().await, block, "{front_end}: we sent nothing");
        moved_once(before, balances(&payment).await, U256::from(PRICE));
    }
}

/// A node that has not seen our mined transaction yet (its receipt answered as unknown) never
/// makes the payment fail: `/settle` says pending with the hash, replay finds the transaction
/// logged as ours and waits for its receipt, and once the node catches up the payment settles.
#[tokio::test]
async fn a_lagging_node_never_makes_a_mined_payment_fail() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_server, base) = start_local_server(&[("X402_SETTLE_DEADLINE_MS", "2000")]).await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    // A send that would wait for the receipt lags too (answered `null`): the bytes go the usual
    // way, and the receipt is looked up from the lagging node.
    let lagging = RpcFault::set(
        "lag",
        &["eth_getTransactionReceipt", "eth_sendRawTransactionSync"],
    )
    .await;

    let pending = post_json(&base, "/settle", &payment.body()).await;
    assert_eq!(
        pending.json["errorReason"], "settlement_pending",
        "{:?}",
        pending.json
    );
    let hash = pending.json["transaction"].as_str().unwrap().to_owned();
    moved_once(before, balances(&payment).await, U256::from(PRICE));

    let summary = replay().await;
    assert!(summary.errors >= 1, "{summary:?}");
    let record = store()
        .await
        .get(&payment.payment_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.state,
        State::Signed,
        "no failure recorded: {record:?}"
    );

    drop(lagging);
    let settled = post_json(&base, "/settle", &payment.body()).await;
    assert_success_with(&settled.json, &hash);
    moved_once(before, balances(&payment).await, U256::from(PRICE));
}

/// A node's error answer sent with HTTP 200 (a rate limit) is not a revert: /settle's
/// simulation (`eth_estimateGas` from the lane) is tried again and the payment settles; verify
/// says it could not check, not that the payment is bad.
#[tokio::test]
async fn a_node_error_sent_with_http_200_is_retried_not_failed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _lifted = RpcFault::set("none", &[]).await;
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;

    set_rpc_fault_for("node_error", &["eth_call"], Some(1)).await;
    let verified = verify(&payment.body()).await;
    assert_eq!(
        (
            verified.json["isValid"].clone(),
            verified.json["invalidReason"].clone()
        ),
        (json!(false), json!("unexpected_verify_error")),
        "{:?}",
        verified.json
    );

    set_rpc_fault_for("node_error", &["eth_estimateGas"], Some(2)).await;
    let settled = settle(&payment.body()).await;
    assert_eq!(settled.json["success"], true, "{:?}", settled.json);
    moved_once(before, balances(&payment).await, U256::from(PRICE));
    let record = store()
        .await
        .get(&payment.payment_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.state, record.reason), (State::Settled, None));
}

/// A lane that cannot pay for gas at the fee it would offer: geth answers its `eth_estimateGas`
/// "gas required exceeds allowance", as it would a transfer that never ends. The payer is not told
/// its payment is bad: `/settle` says it could not settle now, naming the lane, and writes and
/// sends nothing; once the lane can pay, the same payment settles.
#[tokio::test]
async fn a_lane_short_of_gas_money_is_not_blamed_on_the_payer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _lifted = RpcFault::set("none", &[]).await;
    let payment = PaymentBuilder::new(1).sign();
    let (before, block) = (balances(&payment).await, block_number().await);

    set_rpc_fault_for("poor", &["eth_estimateGas"], None).await;
    let refused = settle(&payment.body()).await;
    set_rpc_fault_for("none", &[], None).await;
    println!("lane out of gas money: {}", refused.json);
    assert_eq!(
        (
            refused.json["success"].clone(),
            refused.json["errorReason"].clone()
        ),
        (json!(false), json!("unexpected_settle_error")),
        "our fault, not the payment's: {:?}",
        refused.json
    );
    assert_eq!(
        store().await.get(&payment.payment_id()).await.unwrap(),
        None,
        "no record"
    );
    assert_eq!(block_number().await, block, "nothing sent");
    assert_eq!(balances(&payment).await, before);

    let settled = settle(&payment.body()).await;
    assert_eq!(settled.json["success"], true, "{:?}", settled.json);
    moved_once(before, balances(&payment).await, U256::from(PRICE));
}

/// A v1 request settles on the network it names (`base-sepolia`, echoed back), and is the same
/// payment as the v2 request for the same authorization: that one is not a second success.
#[tokio::test]
async fn a_v1_payment_settles_and_is_the_same_payment_as_its_v2_twin() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (front_end, base) in front_ends() {
        let payment = PaymentBuilder::new(3).sign();
        let before = balances(&payment).await;
        let settled = post_json(&base, "/settle", &payment.body_v1()).await;
        assert_eq!(
            (
                settled.json["success"].clone(),
                settled.json["network"].clone()
            ),
            (json!(true), json!("base-sepolia")),
            "{front_end}: {:?}",
            settled.json
        );
        moved_once(before, balances(&payment).await, U256::from(PRICE));
        let record = store()
            .await
            .get(&payment.payment_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.network, "eip155:84532", "{front_end}");
        assert!(is_used_nonce(
            &post_json(&base, "/settle", &payment.body()).await.json
        ));
    }
}
