//! `/settle` signing a payment itself when its lane is free (issue 16; docs/settlement.md,
//! "Signing in /settle"): the lane's lease decides who signs, the counter's condition still keeps
//! every nonce to one transaction, and a `/settle` that dies at any step leaves what a worker's
//! crash leaves, for replay to finish.
//!
//! Each test's `/settle` queues on a queue of the test's own that nothing consumes unless the test
//! hands it to a worker, so "nothing was queued" is checked, not assumed. Tests here run one at a
//! time: they lease the stack's lanes.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{
    clock::now_ms,
    protocol::parse_request,
    queue::SettlementMessage,
    settle::Settler,
    store::{LaneLease, PaymentRecord, State},
    worker::{Step, WorkError, Worker},
    Config,
};
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HELD_BY_HAND: &str = "test-holder";

fn config_on(queue: &OwnQueue) -> Config {
    let mut config = config();
    config.settle_queue_url = Some(queue.url.clone());
    config
}

/// Another local server whose `/settle` signs when the lane is free and queues on `queue`.
async fn signing_server(queue: &OwnQueue) -> (LocalServer, String) {
    start_local_server(&[
        ("X402_SETTLE_SIGNS", "on"),
        ("X402_SETTLE_QUEUE_URL", &queue.url),
    ])
    .await
}

/// A settle handler in this process on `queue`, signing here with a worker that stops after
/// `step` as if `/settle`'s process died there.
async fn dying_settler(queue: &OwnQueue, step: Step, lease: Duration) -> Settler {
    let mut config = config_on(queue);
    config.lane_lease = lease;
    let aws = aws().await;
    Settler::from_config(&config, &aws)
        .unwrap()
        .signing_here(Worker::from_config(&config, &aws).stop_after(step))
}

async fn settle_in_process(settler: &Settler, payment: &PaymentBuilder) -> Value {
    let request = parse_request(&serde_json::to_vec(&payment.body()).unwrap()).unwrap();
    serde_json::to_value(settler.settle(&request).await.response).unwrap()
}

/// The lane's row in the lanes table: its next nonce on the test network, and its lease there
/// (until when), if one is written.
async fn lane_row(lane: &str) -> (u64, Option<u64>) {
    let row = lanes_table()
        .await
        .into_iter()
        .find(|row| row.lane == lane)
        .unwrap_or_else(|| panic!("no row for lane {lane}"));
    let lease = row
        .item
        .get(&format!("lease#{NETWORK}"))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok());
    (row.next_nonce(NETWORK), lease)
}

/// Waits until nobody holds `lane`'s lease (a worker that failed an attempt may hold it a lease
/// longer), so that the test's `/settle` finds it free.
async fn wait_lane_free(lane: &str) {
    eventually(
        "the lane's lease free",
        100,
        Duration::from_millis(50),
        || async {
            match lane_row(lane).await.1 {
                Some(until) if until >= now_ms() => Err(format!("leased until {until}")),
                _ => Ok(()),
            }
        },
    )
    .await;
}

/// Leases every lane by hand for a minute, as if another signer were working them.
async fn lease_every_lane() {
    let store = store().await;
    for lane in &config().lane_keys {
        let now = now_ms();
        let taken = store
            .take_lane_lease(lane, NETWORK, HELD_BY_HAND, (now, now + 60_000))
            .await
            .unwrap();
        assert!(
            matches!(taken, LaneLease::Taken { .. }),
            "{lane}: {taken:?}"
        );
    }
}

async fn release_every_lane() {
    let store = store().await;
    for lane in &config().lane_keys {
        store
            .release_lane_lease(lane, NETWORK, HELD_BY_HAND)
            .await
            .unwrap();
    }
}

fn success_with(answer: &Value, record: &PaymentRecord) {
    assert_eq!(answer["success"], json!(true), "{answer}");
    assert_eq!(
        answer["transaction"],
        json!(format!("{:#x}", record.tx_hash.unwrap())),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_on_a_free_lane_is_signed_and_sent_by_settle_itself() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-free", 3).await;
    let (_server, base) = signing_server(&queue).await;
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let lane = config().lane_keys[lane_index(&payment)].clone();
    wait_lane_free(&lane).await;
    let lane_before = lane_row(&lane).await;

    let answer = post_json(&base, "/settle", &payment.body()).await;

    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    success_with(&answer.json, &record);
    assert_eq!(queue.depth().await, 0, "nothing went through the queue");
    moved_once(before, balances(&payment).await, payment.value);
    // Signed at the lane's counter, which stepped past it; the lease was given back with it.
    assert_eq!(record.lane_nonce, Some(lane_before.0), "{record:?}");
    assert_eq!(
        lane_row(&record.lane).await,
        (lane_before.0 + 1, None),
        "counter stepped, lease given back"
    );
}

/// The lane the payment goes to (`/settle` picks it from the payment's id).
fn lane_index(payment: &PaymentBuilder) -> usize {
    let lanes = config().lane_keys;
    let lane = facilitator::settle::lane_for(&payment.payment_id(), &lanes).to_owned();
    lanes.iter().position(|l| *l == lane).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_lane_sends_the_payment_through_the_queue_and_the_worker_waits_its_turn() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-leased", 3).await;
    let (_server, base) = signing_server(&queue).await;
    let payment = PaymentBuilder::new(1).sign();
    let before = balances(&payment).await;
    lease_every_lane().await;

    let body = payment.body();
    let settling = tokio::spawn(async move { post_json(&base, "/settle", &body).await });
    let id = payment.record_id();
    eventually(
        "the payment queued",
        100,
        Duration::from_millis(50),
        || async {
            match queue.depth().await {
                1 => Ok(()),
                n => Err(format!("{n} messages")),
            }
        },
    )
    .await;
    assert_eq!(payment_record(&id).await.state, State::Queued);

    // While another signer holds the lane, the worker does not sign there either.
    let worker = Worker::from_config(&config_on(&queue), &aws().await);
    let message = SettlementMessage {
        id: id.clone(),
        replace: None,
        created: None,
        simulated: None,
    };
    let busy = worker
        .process_within(&message, Duration::from_millis(300))
        .await;
    assert!(matches!(busy, Err(WorkError::LaneBusy { .. })), "{busy:?}");
    assert_eq!(payment_record(&id).await.state, State::Queued);

    release_every_lane().await;
    assert_eq!(queue.deliver_once(&worker).await, (1, 0));
    let answer = settling.await.unwrap();
    let record = payment_record(&id).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    success_with(&answer.json, &record);
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_that_dies_after_its_write_ahead_leaves_the_payment_to_replay() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-written", 3).await;
    let settler = dying_settler(&queue, Step::WrittenAhead, Duration::from_secs(1)).await;
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    wait_lane_free(&config().lane_keys[lane_index(&payment)]).await;

    let died = settle_in_process(&settler, &payment).await;

    assert_eq!(died["success"], json!(false), "{died}");
    let id = payment.record_id();
    let record = payment_record(&id).await;
    assert_eq!(record.state, State::Signed, "{record:?}");
    let hash = record.tx_hash.unwrap();
    assert!(transaction(hash).await.is_none(), "nothing was sent");
    assert_eq!(queue.depth().await, 0, "nothing was queued");
    // The write-ahead gave the lease back: the lane is free for the next signer.
    assert_eq!(lane_row(&record.lane).await.1, None);

    // Replay sends the stored bytes (I3), and the payment settles once with them.
    let mut settled = record;
    for _ in 0..20 {
        replay().await;
        settled = payment_record(&id).await;
        if settled.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(settled.state, State::Settled, "{settled:?}");
    assert_eq!(settled.tx_hash, Some(hash), "the bytes written ahead");
    moved_once(before, balances(&payment).await, payment.value);
    // Nobody was told success yet: the next /settle is, from the record.
    let answer = settle(&payment.body()).await;
    success_with(&answer.json, &settled);
    moved_once(before, balances(&payment).await, payment.value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_that_dies_holding_the_lease_costs_the_lane_only_the_lease() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-signed", 3).await;
    let settler = dying_settler(&queue, Step::Signed, Duration::from_millis(800)).await;
    let payment = PaymentBuilder::new(3).sign();
    let before = balances(&payment).await;
    let lane = config().lane_keys[lane_index(&payment)].clone();
    wait_lane_free(&lane).await;
    let (counter, _) = lane_row(&lane).await;

    let died = settle_in_process(&settler, &payment).await;

    assert_eq!(died["success"], json!(false), "{died}");
    let id = payment.record_id();
    assert_eq!(payment_record(&id).await.state, State::Queued);
    assert_eq!(queue.depth().await, 0, "nothing was queued");
    let (after, lease) = lane_row(&lane).await;
    assert_eq!(after, counter, "nothing written ahead");
    assert!(lease.is_some(), "the dead /settle's lease is still there");

    // Replay queues the payment that has no message (on the stack's queue, to the stack's
    // worker), which waits out the dead lease, then signs at the nonce the dead /settle signed at
    // and never used: no gap.
    replay().await;
    wait_sent(&id).await;
    let answer = settle(&payment.body()).await;
    let record = payment_record(&id).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    success_with(&answer.json, &record);
    assert_eq!(record.lane_nonce, Some(counter), "{record:?}");
    assert_eq!(lane_row(&lane).await.0, counter + 1);
    moved_once(before, balances(&payment).await, payment.value);
}

/// The lane's lease is asked for beside the record's create. A repeated `/settle` that finds the
/// record there gives back the lease it took, signs nothing, and leaves the record as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_settle_gives_back_the_lease_it_took_beside_the_create() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-again", 3).await;
    // The first /settle queues the payment where nothing consumes it, and cancels it at its
    // deadline: the authorization stays unused on chain, so a second /settle passes the
    // simulation and reaches the create, as a concurrent repeat does.
    let (_server, base) = start_local_server(&[
        ("X402_SETTLE_SIGNS", "off"),
        ("X402_SETTLE_QUEUE_URL", &queue.url),
        ("X402_SETTLE_DEADLINE_MS", "1500"),
    ])
    .await;
    let payment = PaymentBuilder::new(1).sign();
    let first = post_json(&base, "/settle", &payment.body()).await;
    assert_eq!(first.json["success"], json!(false), "{:?}", first.json);
    let id = payment.record_id();
    assert_eq!(payment_record(&id).await.state, State::Cancelled);
    let lane = config().lane_keys[lane_index(&payment)].clone();
    wait_lane_free(&lane).await;
    let (counter, _) = lane_row(&lane).await;
    let block = block_number().await;

    let config = config_on(&queue);
    let aws = aws().await;
    let settler = Settler::from_config(&config, &aws)
        .unwrap()
        .signing_here(Worker::from_config(&config, &aws));
    let again = settle_in_process(&settler, &payment).await;

    assert_eq!(
        (again["success"].clone(), again["errorReason"].clone()),
        (json!(false), json!("unexpected_settle_error")),
        "{again}"
    );
    assert_eq!(
        lane_row(&lane).await,
        (counter, None),
        "nothing written ahead, and the lease taken beside the create given back"
    );
    assert_eq!(payment_record(&id).await.state, State::Cancelled);
    assert_eq!(block_number().await, block, "nothing was broadcast");
}

/// A settle handler in this process on `queue`, signing here; a fresh one has its own chain
/// client, so what it learned of the node (that it lacks `eth_sendRawTransactionSync`) is its own.
async fn signing_settler(queue: &OwnQueue) -> Settler {
    let config = config_on(queue);
    let aws = aws().await;
    Settler::from_config(&config, &aws)
        .unwrap()
        .signing_here(Worker::from_config(&config, &aws))
}

/// The counting proxy's count of `method` since its last reset.
async fn rpc_count(method: &str) -> u64 {
    rpc_counts().await["methods"][method].as_u64().unwrap_or(0)
}

/// `/settle` sends a payment it signed with `eth_sendRawTransactionSync` (EIP-7966; anvil has
/// it): the receipt comes with the send's answer, so the payment is settled with no receipt
/// lookup, two chain requests in all (the simulation and the send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_signed_here_is_sent_and_confirmed_in_one_request() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-sync", 3).await;
    let settler = signing_settler(&queue).await;
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    wait_lane_free(&config().lane_keys[lane_index(&payment)]).await;
    reset_rpc_counts().await;

    let answer = settle_in_process(&settler, &payment).await;

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    success_with(&answer, &record);
    let counts = rpc_counts().await;
    assert_eq!(
        (
            rpc_count("eth_sendRawTransactionSync").await,
            rpc_count("eth_sendRawTransaction").await,
            rpc_count("eth_getTransactionReceipt").await,
        ),
        (1, 0, 0),
        "sent and confirmed in one request: {counts}"
    );
    assert_eq!(queue.depth().await, 0, "nothing went through the queue");
    moved_once(before, balances(&payment).await, payment.value);
}

/// A node without `eth_sendRawTransactionSync` (the proxy answers JSON-RPC's "method not found",
/// as geth does for a method it lacks): the payment is sent the usual way and its receipt looked
/// up, and the same handler does not ask the node for the method again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_sync_send_gets_a_send_and_receipt_lookups_and_is_not_asked_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-nosync", 3).await;
    let settler = signing_settler(&queue).await;
    let missing = RpcFault::set("missing", &["eth_sendRawTransactionSync"]).await;
    let mut sends = Vec::new();
    for i in [2, 3] {
        let payment = PaymentBuilder::new(i).sign();
        let before = balances(&payment).await;
        wait_lane_free(&config().lane_keys[lane_index(&payment)]).await;
        reset_rpc_counts().await;
        let answer = settle_in_process(&settler, &payment).await;
        let record = payment_record(&payment.record_id()).await;
        success_with(&answer, &record);
        moved_once(before, balances(&payment).await, payment.value);
        sends.push((
            rpc_count("eth_sendRawTransactionSync").await,
            rpc_count("eth_sendRawTransaction").await,
            rpc_count("eth_getTransactionReceipt").await >= 1,
        ));
    }
    drop(missing);
    assert_eq!(
        sends,
        [(1, 1, true), (0, 1, true)],
        "asked once, then sent the usual way with its receipt looked up"
    );
}

/// A node that holds the send that waits for its receipt (the proxy hangs it): the wait stops at
/// `/settle`'s deadline, not at the RPC timeout, the bytes go the usual way, and the payment is
/// paid once. Cut short by the deadline, the node is not blamed: the next payment asks it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_waits_for_its_receipt_stops_at_the_settle_deadline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("here-sync-deadline", 3).await;
    let mut config = config_on(&queue);
    config.settle_deadline = Duration::from_millis(1500);
    config.rpc_timeout = Duration::from_secs(10);
    let aws = aws().await;
    let settler = Settler::from_config(&config, &aws)
        .unwrap()
        .signing_here(Worker::from_config(&config, &aws));
    let payment = PaymentBuilder::new(2).sign();
    let before = balances(&payment).await;
    wait_lane_free(&config.lane_keys[lane_index(&payment)]).await;

    let held = RpcFault::set("hang", &["eth_sendRawTransactionSync"]).await;
    let started = std::time::Instant::now();
    let answer = settle_in_process(&settler, &payment).await;
    let took = started.elapsed();
    drop(held);

    assert!(
        took < Duration::from_secs(5),
        "answered {took:?} after the request, not at the 10 s RPC timeout: {answer}"
    );
    assert!(
        answer["success"] == json!(true) || answer["errorReason"] == json!("settlement_pending"),
        "{answer}"
    );
    // Pending at the deadline is an honest answer too; the client's retry then finds it settled.
    let answer = match answer["success"] == json!(true) {
        true => answer,
        false => settle_in_process(&settler, &payment).await,
    };
    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Settled, "{record:?}");
    assert_eq!(
        answer["transaction"],
        json!(format!("{:#x}", record.tx_hash.unwrap())),
        "{answer}"
    );
    moved_once(before, balances(&payment).await, payment.value);

    let next = PaymentBuilder::new(3).sign();
    wait_lane_free(&config.lane_keys[lane_index(&next)]).await;
    reset_rpc_counts().await;
    let again = settle_in_process(&settler, &next).await;
    assert_eq!(again["success"], json!(true), "{again}");
    assert_eq!(
        rpc_count("eth_sendRawTransactionSync").await,
        1,
        "asked again: {}",
        rpc_counts().await
    );
}
