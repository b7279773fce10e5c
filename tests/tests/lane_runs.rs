//! A lane's run (issue 16): the new payments one batch brings for a lane are signed at
//! consecutive nonces, written ahead in one DynamoDB transaction and sent together. Each payment
//! must still settle exactly once; a crash at each step must leave what one payment's crash leaves;
//! a run that cannot be written ahead, or holds a payment that cannot be signed, must go on one
//! payment at a time, with no gap in the lane's nonces.
//!
//! The worker runs in this process on a queue of the test's own (nothing else consumes it), so a
//! test decides what one batch holds. Tests here run one at a time: they share the first lane.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
};
use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{
    store::{Failure, PaymentId, PaymentRecord, State},
    worker::{Step, Worker},
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records one payment per builder on the first lane and queues each on `queue` as `/settle`
/// does, with the record as created; returns their ids in queue order.
async fn queue_payments(queue: &OwnQueue, payments: &[PaymentBuilder]) -> Vec<String> {
    let mut ids = Vec::new();
    for payment in payments {
        let id = record_payment(payment, 0).await;
        let record = payment_record(&id).await;
        queue.queue().enqueue_created(&record, None).await.unwrap();
        ids.push(id);
    }
    ids
}

/// A worker on the test's queue.
async fn worker(queue: &OwnQueue) -> Worker {
    let mut config = config();
    config.settle_queue_url = Some(queue.url.clone());
    config.lane_runs = true;
    Worker::from_config(&config, &aws().await)
}

fn lane() -> String {
    config().lane_keys[0].clone()
}

/// The first lane's next nonce as the lanes table has it (0: never used on this network).
async fn table_nonce() -> u64 {
    lanes_table()
        .await
        .into_iter()
        .find(|row| row.lane == lane())
        .map_or(0, |row| row.next_nonce(NETWORK))
}

/// Delivers batches until every record is past `signed` and replay has finished them, or 30 s.
async fn settle_all(queue: &OwnQueue, worker: &Worker, ids: &[String]) -> Vec<PaymentRecord> {
    let started = Instant::now();
    loop {
        queue.deliver_as_lambda(worker).await;
        replay().await;
        let records = records(ids).await;
        if records.iter().all(|r| r.state.is_terminal()) {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not finished in 30 s: {:?}",
            records.iter().map(|r| r.state).collect::<Vec<_>>()
        );
    }
}

async fn records(ids: &[String]) -> Vec<PaymentRecord> {
    let mut records = Vec::new();
    for id in ids {
        records.push(payment_record(id).await);
    }
    records
}

/// The lane nonces the records hold, sorted.
fn nonces(records: &[PaymentRecord]) -> Vec<u64> {
    let mut nonces: Vec<u64> = records.iter().filter_map(|r| r.lane_nonce).collect();
    nonces.sort_unstable();
    nonces
}

/// Every payer's and payee's token balance, to compare before and after.
async fn balances_of(payments: &[PaymentBuilder]) -> HashMap<Address, U256> {
    let mut balances = HashMap::new();
    for payment in payments {
        for owner in [payment.from, payment.pay_to] {
            balances.insert(owner, token_balance(stack().token, owner).await);
        }
    }
    balances
}

/// Each of `paid` moved its value once from its payer to its payee, and nothing else moved.
async fn paid_once(payments: &[PaymentBuilder], paid: &[usize], before: &HashMap<Address, U256>) {
    let mut expected = before.clone();
    for payment in paid.iter().map(|i| &payments[*i]) {
        *expected.get_mut(&payment.from).unwrap() -= payment.value;
        *expected.get_mut(&payment.pay_to).unwrap() += payment.value;
    }
    assert_eq!(balances_of(payments).await, expected, "each paid once");
}

/// Every record settled, at consecutive lane nonces from the table's `counter` (0: the lane's
/// first payments, from the chain's count), and the counter stepped past them all: no gap, no
/// reuse, no nonce taken for a payment that did not join. Returns the nonces.
async fn settled_in_step(settled: &[PaymentRecord], counter: u64) -> Vec<u64> {
    assert!(
        settled.iter().all(|r| r.state == State::Settled),
        "{settled:?}"
    );
    let held = nonces(settled);
    assert!(
        consecutive(&held) && held.len() == settled.len(),
        "{held:?}"
    );
    assert!(
        counter == 0 || held[0] == counter,
        "{held:?} from {counter}"
    );
    assert_eq!(table_nonce().await, held[0] + held.len() as u64, "{held:?}");
    held
}

fn consecutive(nonces: &[u64]) -> bool {
    nonces.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

#[tokio::test]
async fn a_lanes_backlog_is_signed_at_consecutive_nonces_and_each_payment_settles_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run", 10).await;
    // Four payers in one run, the first with two payments (its balance covers both).
    let payments: Vec<PaymentBuilder> = [0, 1, 2, 3, 0]
        .iter()
        .map(|p| PaymentBuilder::new(*p).sign())
        .collect();
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;
    let counter = table_nonce().await;

    let worker = worker(&queue).await;
    assert_eq!(
        queue.deliver_as_lambda(&worker).await,
        (5, 0),
        "one batch, nothing failed"
    );
    let signed = records(&ids).await;
    let held = nonces(&signed);
    println!("one batch of 5 on {}: lane nonces {held:?}", lane());
    assert_eq!(held.len(), 5, "every payment signed: {signed:?}");
    assert!(consecutive(&held), "no gap, no reuse: {held:?}");
    assert!(
        counter == 0 || held[0] == counter,
        "from the table's counter {counter}"
    );
    assert_eq!(
        table_nonce().await,
        held[0] + 5,
        "the counter stepped past all five"
    );

    let settled = settle_all(&queue, &worker, &ids).await;
    assert!(
        settled.iter().all(|r| r.state == State::Settled),
        "{settled:?}"
    );
    paid_once(&payments, &[0, 1, 2, 3, 4], &before).await;
}

#[tokio::test]
async fn a_crash_at_each_step_of_a_run_leaves_what_one_payments_crash_leaves() {
    let _one = ONE_AT_A_TIME.lock().await;
    for step in [Step::Signed, Step::WrittenAhead, Step::Broadcast] {
        let queue = OwnQueue::create("run-crash", 10).await;
        let payments: Vec<PaymentBuilder> = (0..4).map(|p| PaymentBuilder::new(p).sign()).collect();
        let before = balances_of(&payments).await;
        let ids = queue_payments(&queue, &payments).await;
        let (counter, block) = (table_nonce().await, block_number().await);

        let crashing = worker(&queue).await.stop_after(step);
        assert_eq!(
            queue.deliver_as_lambda(&crashing).await,
            (4, 4),
            "{step:?}: every message comes back"
        );
        let left = records(&ids).await;
        let states: Vec<State> = left.iter().map(|r| r.state).collect();
        match step {
            // One crash after signing leaves nothing written: the signatures are thrown away.
            Step::Signed => {
                assert!(states.iter().all(|s| *s == State::Queued), "{states:?}");
                assert_eq!(table_nonce().await, counter, "no nonce taken");
                assert_eq!(block_number().await, block, "nothing sent");
            }
            // The whole run written ahead together, at consecutive nonces, and nothing sent: a
            // one-at-a-time worker would have stopped after the first.
            Step::WrittenAhead => {
                assert!(states.iter().all(|s| *s == State::Signed), "{states:?}");
                let held = nonces(&left);
                assert!(consecutive(&held) && held.len() == 4, "{held:?}");
                assert_eq!(table_nonce().await, held[0] + 4);
                assert_eq!(block_number().await, block, "nothing sent");
            }
            // Sent (anvil mines at once) but still `signed`: replay finishes them.
            Step::Broadcast => {
                assert!(states.iter().all(|s| *s == State::Signed), "{states:?}");
                assert!(block_number().await > block, "sent and mined");
            }
        }
        println!("{step:?}: {states:?}, lane nonces {:?}", nonces(&left));

        let settled = settle_all(&queue, &worker(&queue).await, &ids).await;
        assert!(
            settled.iter().all(|r| r.state == State::Settled),
            "{step:?}: {settled:?}"
        );
        let held = nonces(&settled);
        assert!(consecutive(&held), "{step:?}: no gap {held:?}");
        assert_eq!(table_nonce().await, held[0] + 4, "{step:?}");
        paid_once(&payments, &[0, 1, 2, 3], &before).await;
    }
}

#[tokio::test]
async fn a_payment_that_cannot_be_signed_leaves_the_run_and_fails_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run-refused", 10).await;
    // A payer with no tokens: its simulation reverts, so it never takes a lane nonce.
    let broke = PaymentBuilder::with_signer(PrivateKeySigner::random()).sign();
    let payments = vec![
        PaymentBuilder::new(0).sign(),
        broke,
        PaymentBuilder::new(1).sign(),
    ];
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;
    let counter = table_nonce().await;

    let worker = worker(&queue).await;
    assert_eq!(queue.deliver_as_lambda(&worker).await, (3, 0));
    let refused = payment_record(&ids[1]).await;
    assert_eq!(refused.state, State::Failed, "{refused:?}");
    assert!(
        refused.reason.is_some() && refused.raw_tx.is_none(),
        "{refused:?}"
    );
    let settled = settle_all(&queue, &worker, &[ids[0].clone(), ids[2].clone()]).await;
    let held = nonces(&settled);
    println!("refused: {:?}; the others at {held:?}", refused.reason);
    settled_in_step(&settled, counter).await;
    paid_once(&payments, &[0, 2], &before).await;
}

#[tokio::test]
async fn a_run_that_loses_its_write_ahead_goes_on_one_payment_at_a_time_without_a_gap() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run-lost", 10).await;
    let payments: Vec<PaymentBuilder> = (0..4).map(|p| PaymentBuilder::new(p).sign()).collect();
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;
    // The second payment is cancelled after it was queued (as /settle does at its deadline): the
    // message's copy still says `queued`, so the run includes it and its write-ahead fails whole.
    let cancelled = PaymentId::parse(&ids[1]).unwrap();
    let failure = Failure::new(
        facilitator::protocol::Reason::UnexpectedSettleError,
        "cancelled by the test",
    );
    assert!(store().await.cancel(&cancelled, &failure).await.unwrap());
    let counter = table_nonce().await;

    let worker = worker(&queue).await;
    assert_eq!(queue.deliver_as_lambda(&worker).await, (4, 0));
    let after = records(&ids).await;
    assert_eq!(after[1].state, State::Cancelled);
    assert!(
        after[1].raw_tx.is_none(),
        "nothing signed for it: {:?}",
        after[1]
    );
    let others = [ids[0].clone(), ids[2].clone(), ids[3].clone()];
    let settled = settle_all(&queue, &worker, &others).await;
    let held = settled_in_step(&settled, counter).await;
    println!("after the lost run, one by one at {held:?}");
    // The cancelled one paid nothing.
    paid_once(&payments, &[0, 2, 3], &before).await;
}

/// A run on a lane whose chain nonce moved 2 past the table (a restored table): the node refuses
/// the run's first two transactions as "nonce too low" and takes the other two; the refused two are
/// signed again after them, each payment settles once, and the table ends in step with the chain.
#[tokio::test]
async fn a_run_the_chain_is_partly_past_signs_the_refused_payments_again_after_it() {
    use alloy::{eips::BlockId, providers::ext::AnvilApi};
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run-behind", 10).await;
    let lane_address = stack()
        .lanes
        .iter()
        .find(|l| l.key_id == lane())
        .expect("the first lane")
        .address;
    let pending = chain_nonce(lane_address, BlockId::pending()).await;
    store()
        .await
        .raise_lane_nonce(&lane(), NETWORK, pending)
        .await
        .unwrap();
    anvil()
        .anvil_set_nonce(lane_address, pending + 2)
        .await
        .unwrap();
    let payments: Vec<PaymentBuilder> = (0..4).map(|p| PaymentBuilder::new(p).sign()).collect();
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;

    let worker = worker(&queue).await;
    let settled = settle_all(&queue, &worker, &ids).await;
    let held = nonces(&settled);
    let replaced: Vec<usize> = settled.iter().map(|r| r.replaced.len()).collect();
    println!(
        "table at {pending}, chain at {}: settled at {held:?}, hashes replaced {replaced:?}",
        pending + 2
    );
    assert!(
        settled.iter().all(|r| r.state == State::Settled),
        "{settled:?}"
    );
    assert_eq!(
        held,
        (pending + 2..pending + 6).collect::<Vec<_>>(),
        "no gap, no reuse"
    );
    assert_eq!(
        replaced.iter().sum::<usize>(),
        2,
        "two signed again, once each"
    );
    assert_eq!(table_nonce().await, pending + 6);
    assert_eq!(
        chain_nonce(lane_address, BlockId::latest()).await,
        pending + 6
    );
    paid_once(&payments, &[0, 1, 2, 3], &before).await;
}

alloy::sol! {
    function mint(address to, uint256 value) external;
}

/// A payer whose balance covers one of its two payments: the first joins the run, the second goes
/// alone after it, where its simulation sees the first paid and fails it before any nonce is taken:
/// the lane never sends a transfer that reverts.
#[tokio::test]
async fn a_payers_payments_beyond_its_balance_leave_the_run_and_never_revert_on_chain() {
    use alloy::sol_types::SolCall;
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run-balance", 10).await;
    let payer = PrivateKeySigner::random();
    let first = PaymentBuilder::with_signer(payer.clone()).sign();
    let second = PaymentBuilder::with_signer(payer).sign();
    // Enough for one and a half payments.
    let funds = first.value + first.value / U256::from(2);
    let mint = mintCall {
        to: first.from,
        value: funds,
    };
    send_from_anvil_account(
        stack().deployer.address,
        stack().token,
        mint.abi_encode().into(),
    )
    .await;
    let payments = vec![first, PaymentBuilder::new(1).sign(), second];
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;
    let counter = table_nonce().await;

    let worker = worker(&queue).await;
    assert_eq!(queue.deliver_as_lambda(&worker).await, (3, 0));
    let refused = payment_record(&ids[2]).await;
    println!(
        "the payer's second payment: {:?} {:?}",
        refused.state, refused.reason
    );
    assert_eq!(refused.state, State::Failed, "{refused:?}");
    assert!(refused.raw_tx.is_none(), "never signed: {refused:?}");
    let settled = settle_all(&queue, &worker, &ids[..2]).await;
    // Two nonces taken, not three.
    settled_in_step(&settled, counter).await;
    paid_once(&payments, &[0, 1], &before).await;
}

/// The same payment's message twice in one batch (a repeated send under another deduplication
/// id), beside another payment: the repeat goes alone, the payment is signed once, at one nonce,
/// and both settle once.
#[tokio::test]
async fn a_repeated_message_in_a_batch_signs_its_payment_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let queue = OwnQueue::create("run-repeat", 10).await;
    let payments: Vec<PaymentBuilder> = (0..2).map(|p| PaymentBuilder::new(p).sign()).collect();
    let before = balances_of(&payments).await;
    let ids = queue_payments(&queue, &payments).await;
    let record = payment_record(&ids[0]).await;
    let repeat = facilitator::queue::SettlementMessage {
        id: ids[0].clone(),
        replace: None,
        created: Some(Box::new(record.clone())),
        simulated: None,
    };
    queue
        .sqs
        .send_message()
        .queue_url(&queue.url)
        .message_body(serde_json::to_string(&repeat).unwrap())
        .message_group_id(&record.lane)
        .message_deduplication_id("a-repeated-send")
        .send()
        .await
        .unwrap();
    let counter = table_nonce().await;

    let worker = worker(&queue).await;
    assert_eq!(queue.deliver_as_lambda(&worker).await, (3, 0));
    let settled = settle_all(&queue, &worker, &ids).await;
    let held = settled_in_step(&settled, counter).await;
    println!("two payments, three messages: lane nonces {held:?}");
    assert!(settled.iter().all(|r| r.replaced.is_empty()), "{settled:?}");
    paid_once(&payments, &[0, 1], &before).await;
}
