//! Replay makes progress every run (issue 14), on the local stack: one network's RPC hanging
//! does not keep replay from finishing another network's records in the same run, and the next
//! run goes on where the last stopped; an item that does not decode is quarantined (skipped and
//! counted, never written) while the records around it are finished; and of two runs started at
//! once, only one works.
//!
//! The second network is a network id the stack's chain does not have, served by a "black hole"
//! RPC of the test's own: it accepts connections and never answers, as a node does whose provider
//! is down behind a load balancer, so every call waits for `X402_RPC_TIMEOUT_MS`. Its records are
//! written straight into DynamoDB (as `signed`, so replay must ask the chain about them) and
//! deleted however the test ends. Tests run one at a time: they share the payments table's index.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use alloy::primitives::{keccak256, Address, Bytes, B256};
use aws_sdk_dynamodb::types::AttributeValue;
use common::{replay::*, *};
use facilitator::{
    clock::now_ms,
    config::{NetworkConfig, RpcSource},
    protocol::{EvmNetwork, Reason},
    replay::{Replayer, Summary},
    store::{Created, IndexPosition, NewPayment, PaymentId, PaymentRecord, State},
    worker::{Step, Worker},
    Config,
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The network whose RPC never answers.
const DOWN: &str = "eip155:424242";

/// An RPC endpoint that takes connections and never answers; its URL.
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Held, so the connections stay open and unanswered until the process ends.
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.extend(connection.ok());
        }
    });
    url
}

/// The stack's configuration with the network that is down served first (so that without a
/// share of its own each run would spend all its time there), a short RPC timeout, and no grace.
fn two_networks() -> Config {
    let mut config = config();
    let mut down: NetworkConfig = config.networks[0].clone();
    down.network = EvmNetwork::from_caip2(DOWN).unwrap();
    down.rpc = RpcSource::url(black_hole());
    config.networks.insert(0, down);
    config.rpc_timeout = Duration::from_secs(1);
    config.replay_min_age = Duration::ZERO;
    config
}

async fn replayer_of(config: &Config) -> Replayer {
    Replayer::from_config(config, &aws().await).unwrap()
}

/// A run that must stop `seconds` from now, as the Lambda's deadline makes it.
async fn run_for(replayer: &Replayer, seconds: u64) -> Summary {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    replayer
        .run(Some(deadline))
        .await
        .expect("replay reads its index")
}

/// Items of the payments table deleted when the test ends, however it ends.
struct Written(Vec<String>);

impl Drop for Written {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.0);
        finish_detached(async move {
            let client = dynamodb().await;
            for id in ids {
                let _ = client
                    .delete_item()
                    .table_name(&stack().payments_table)
                    .key("id", AttributeValue::S(id))
                    .send()
                    .await;
            }
        });
    }
}

/// A `signed` record on the network that is down, `age_ms` old: replay must ask that network's
/// chain for the lane's nonce before anything else, and waits for the timeout.
async fn signed_on_down_network(k: u64, age_ms: u64) -> String {
    let nonce = keccak256(format!("replay-progress-{}-{k}", now_ms()));
    let (token, payer) = (stack().token, stack().payers[0].address);
    let id = PaymentId::new(DOWN, token, payer, nonce);
    let calldata = Bytes::from(vec![0xe3, 0xee, 0x16, 0x0e]);
    let new = NewPayment {
        id: &id,
        network: DOWN,
        asset: token,
        payer,
        pay_to: stack().payee.address,
        value: alloy::primitives::U256::from(1),
        valid_before: now() + 3600,
        calldata: &calldata,
        target: None,
        digest: B256::repeat_byte(2),
        lane: &config().lane_keys[0],
    };
    let record = PaymentRecord {
        state: State::Signed,
        sender: Some(stack().lanes[0].address),
        lane_nonce: Some(0),
        raw_tx: Some(Bytes::from(vec![0x02])),
        tx_hash: Some(keccak256(nonce)),
        ..PaymentRecord::queued(&new, now_ms() - age_ms)
    };
    assert_eq!(store().await.create(&record).await.unwrap(), Created::New);
    id.to_string()
}

/// A payment on the stack's network whose worker died after the broadcast: mined, but its record
/// still `signed`. One replay run settles it from the receipt.
async fn mined_but_signed(payment: &PaymentBuilder) -> String {
    let id = record_payment(payment, 0).await;
    let worker = Worker::from_config(&config(), &aws().await).stop_after(Step::Broadcast);
    let message = facilitator::queue::SettlementMessage {
        id: id.clone(),
        replace: None,
        created: None,
        simulated: None,
    };
    assert!(
        worker.process(&message).await.is_err(),
        "the worker stopped"
    );
    assert_eq!(payment_record(&id).await.state, State::Signed);
    id
}

/// Where the down network's sweep goes on next run.
async fn down_cursor() -> Option<IndexPosition> {
    store().await.replay_cursor(DOWN).await.unwrap()
}

#[tokio::test]
async fn one_network_down_does_not_keep_replay_from_finishing_another_in_the_same_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Twelve records on the network that is down, older than anything on the other, each costing
    // the RPC timeout (1 s): more than a whole run's time (6 s before its deadline's margin).
    let mut written = Written(Vec::new());
    for k in 0..12 {
        written
            .0
            .push(signed_on_down_network(k, 600_000 - k * 1000).await);
    }
    written.0.push(format!("replay#cursor#{DOWN}"));
    let payment = PaymentBuilder::new(0).sign();
    let before = balances(&payment).await;
    let id = mined_but_signed(&payment).await;
    let before_settle = payment_record(&id).await;
    let replayer = replayer_of(&two_networks()).await;

    let first = run_for(&replayer, 8).await;
    println!("first run: {first:?}");
    assert!(first.errors >= 1, "the down network was tried: {first:?}");
    assert!(first.more, "and left records for the next run: {first:?}");
    assert!(first.settled >= 1, "the other network's record: {first:?}");
    let settled = payment_record(&id).await;
    assert_eq!(settled.state, State::Settled);
    assert_eq!(settled.tx_hash, before_settle.tx_hash);
    let stopped_at = down_cursor()
        .await
        .expect("the down network's sweep stopped midway");
    assert!(
        written.0[..12].contains(&stopped_at.id),
        "the cursor names one of its records: {stopped_at:?}"
    );
    assert_ne!(
        stopped_at.id, written.0[11],
        "records are left after it: {stopped_at:?}"
    );

    // The next run goes on after the cursor, not from the oldest record again.
    let second = run_for(&replayer, 8).await;
    println!("second run: {second:?}");
    assert!(second.errors >= 1, "{second:?}");
    let moved = down_cursor().await;
    println!("cursor after the first run {stopped_at:?}, after the second {moved:?}");
    // Further along (or, had it reached the end, back to the oldest for the run after).
    if let Some(at) = moved {
        assert!(
            at.updated_at > stopped_at.updated_at,
            "the second run went further: {at:?}"
        );
    }
    moved_once(before, balances(&payment).await, payment.value);
}

/// A payment on the stack's network recorded long ago whose authorization ran out: one replay run
/// expires it, with no chain call.
async fn expired_queued(payer: usize) -> String {
    let payment = PaymentBuilder::new(payer)
        .edit(|p| p.valid_before = now() - 5)
        .sign();
    record_payment(&payment, 120_000).await
}

#[tokio::test]
async fn an_item_that_does_not_decode_is_quarantined_and_the_others_are_finished() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Open, older than everything else, on the stack's network, with an amount that is no number.
    let poison = PaymentId::new(
        NETWORK,
        stack().token,
        Address::repeat_byte(0x99),
        keccak256(format!("poison-{}", now_ms())),
    )
    .to_string();
    let _written = Written(vec![poison.clone()]);
    let item = std::collections::HashMap::from([
        ("id".to_owned(), AttributeValue::S(poison.clone())),
        ("open_shard".to_owned(), AttributeValue::S("open".into())),
        (
            "updated_at".to_owned(),
            AttributeValue::N((now_ms() - 900_000).to_string()),
        ),
        ("network".to_owned(), AttributeValue::S(NETWORK.into())),
        ("state".to_owned(), AttributeValue::S("queued".into())),
        ("value".to_owned(), AttributeValue::S("not a number".into())),
    ]);
    dynamodb()
        .await
        .put_item()
        .table_name(&stack().payments_table)
        .set_item(Some(item.clone()))
        .send()
        .await
        .unwrap();
    let id = expired_queued(1).await;

    let summary = replay().await;
    assert_eq!(summary.quarantined, 1, "{summary:?}");
    assert!(summary.expired >= 1, "the record after it: {summary:?}");
    assert_eq!(payment_record(&id).await.state, State::Expired);
    assert_eq!(payment_record(&id).await.reason, Some(Reason::ValidBefore));
    assert_eq!(
        payment_item(&poison).await,
        Some(item.clone()),
        "never written"
    );

    // Skipped again on every pass, until someone mends or removes it.
    let again = replay().await;
    assert_eq!(again.quarantined, 1, "{again:?}");
    assert_eq!(payment_item(&poison).await, Some(item), "never written");
}

#[tokio::test]
async fn of_two_replay_runs_started_at_once_only_one_works() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A record on the network that is down keeps the run that works busy for the RPC timeout, so
    // the two runs surely overlap; an expired one gives it something to finish.
    let written = Written(vec![
        signed_on_down_network(100, 600_000).await,
        format!("replay#cursor#{DOWN}"),
    ]);
    let id = expired_queued(2).await;
    let config = two_networks();
    let (one, two) = (replayer_of(&config).await, replayer_of(&config).await);

    let (a, b) = tokio::join!(one.run(None), two.run(None));
    let (a, b) = (a.unwrap(), b.unwrap());
    println!("the two runs: {a:?} and {b:?}");
    let (worked, skipped) = match (a.skipped, b.skipped) {
        (false, true) => (a, b),
        (true, false) => (b, a),
        both => panic!("exactly one run works, not {both:?}: {a:?} {b:?}"),
    };
    assert_eq!(
        skipped,
        Summary {
            skipped: true,
            ..Summary::default()
        },
        "the other did nothing"
    );
    assert!(worked.expired >= 1, "{worked:?}");
    assert!(worked.errors >= 1, "it tried the down network: {worked:?}");
    assert_eq!(payment_record(&id).await.state, State::Expired);

    // The lease was given back at the end: the next run works.
    let next = replayer_of(&config).await.run(None).await.unwrap();
    assert!(!next.skipped, "{next:?}");
    drop(written);
}
