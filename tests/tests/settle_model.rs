//! A model-based test of the settle path (DESIGN I2, I3, I5, I6): seeded random interleavings of
//! `/settle` calls (new, duplicate, conflicting: same nonce, other terms; pending while the chain
//! does not mine; late, after the record finished), worker and replay steps, stopped and resumed
//! mining, and front-runners executing an authorization themselves. Every third worker step hands
//! the worker all payments as one SQS batch, so a lane's new payments are signed together as a
//! run. About half the `/settle` calls go to a handler that signs a new payment itself when the
//! lane's lease is free ("Signing in /settle"), so it contends with the worker for the lane.
//! After each case:
//!
//! - at most one caller was told `success` per authorization;
//! - every success names a mined transaction with a `Transfer` from the payer to **that request's**
//!   `payTo` of **its** value;
//! - at most one transaction of ours is mined per authorization;
//! - every record ends terminal.
//!
//! The settle handler, the worker and replay run in this process on the local stack (anvil, moto),
//! on a queue of the test's own that nothing else consumes: the test is the lane's only worker, so
//! the steps happen exactly when the case says. `X402_MODEL_CASES` (default 200) and
//! `X402_MODEL_SEED` (default 1) choose the cases; a failure names its seed, and
//! `X402_MODEL_SEED=<seed> X402_MODEL_CASES=1` runs that case alone.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::{
    primitives::{Address, B256, U256},
    rpc::types::{TransactionReceipt, TransactionRequest},
};
use common::*;
use facilitator::{
    protocol::parse_request,
    queue::{Queue, SettlementMessage},
    replay::Replayer,
    settle::{Settler, Timing},
    store::{State, Store},
    worker::Worker,
    Facilitator,
};
use serde_json::Value;

/// splitmix64: small, seeded and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One step of a case.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `/settle` of authorization `k` (`conflicting`: another authorization under its nonce).
    Settle {
        k: usize,
        conflicting: bool,
    },
    /// The worker takes every open record of the case once.
    Worker,
    Replay,
    StopMining,
    /// Mine what is pending and mine at once again.
    Mine,
    /// Somebody else sends `transferWithAuthorization` for authorization `k` themselves.
    FrontRun {
        k: usize,
    },
    Pause {
        ms: u64,
    },
}

fn ops(rng: &mut Rng, authorizations: usize) -> Vec<Op> {
    let n = 4 + rng.below(7);
    (0..n)
        .map(|_| {
            let k = rng.below(authorizations as u64) as usize;
            match rng.below(100) {
                0..=39 => Op::Settle {
                    k,
                    conflicting: rng.below(5) == 0,
                },
                40..=59 => Op::Worker,
                60..=69 => Op::Replay,
                70..=76 => Op::StopMining,
                77..=84 => Op::Mine,
                85..=89 => Op::FrontRun { k },
                _ => Op::Pause { ms: rng.below(120) },
            }
        })
        .collect()
}

/// The in-process settle path: a settle handler with a short deadline, the worker and replay, all
/// on the stack's tables and a queue of the test's own.
struct Path {
    settler: Arc<Settler>,
    /// The same, signing a payment itself when the lane's lease is free.
    settler_here: Arc<Settler>,
    worker: Worker,
    replayer: Replayer,
    store: Store,
}

impl Path {
    async fn new() -> Self {
        let aws = aws().await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("model-{}.fifo", std::process::id()))
            .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let mut config = config();
        config.settle_queue_url = Some(queue_url.clone());
        config.replay_min_age = Duration::ZERO;
        // One lane: a case's payments then share it, and a worker batch often holds a run.
        config.lane_keys.truncate(1);
        config.lane_runs = true;
        let settler = || {
            Settler::new(
                Facilitator::new(&config, &aws),
                facilitator::store::Store::from_config(&config, &aws),
                Queue::new(sqs.clone(), queue_url.clone()),
                config.lane_keys.clone(),
                Timing {
                    deadline: Duration::from_millis(700),
                    poll: Duration::from_millis(50),
                },
            )
        };
        Path {
            settler: Arc::new(settler()),
            settler_here: Arc::new(settler().signing_here(Worker::from_config(&config, &aws))),
            worker: Worker::from_config(&config, &aws),
            replayer: Replayer::from_config(&config, &aws).unwrap(),
            store: store().await,
        }
    }

    /// A worker step for each payment. Every other step hands the worker the record as first seen
    /// `queued` and a fresh simulation, as /settle's message carries them
    /// ([`SettlementMessage::created`]), however far the record and the chain have moved on
    /// since: the worker must act on them only while the record still holds.
    async fn work(
        &self,
        ids: &[String],
        first_seen: &mut HashMap<String, facilitator::store::PaymentRecord>,
        stale: bool,
    ) {
        for id in ids {
            if !first_seen.contains_key(id) {
                if let Some(record) = find_payment_record(id).await {
                    if record.state == State::Queued {
                        first_seen.insert(id.clone(), record);
                    }
                }
            }
            let message = SettlementMessage {
                id: id.clone(),
                replace: None,
                created: first_seen.get(id).filter(|_| stale).cloned().map(Box::new),
                // With /settle's simulation too, said to be fresh: the worker then signs without
                // simulating again, whatever happened on chain since (a front-runner's use).
                simulated: stale.then(|| facilitator::queue::Simulated {
                    gas: 100_000,
                    at_ms: facilitator::clock::now_ms(),
                }),
            };
            // A step that must be retried is simply retried by a later step, as SQS would.
            let _ = self.worker.process(&message).await;
        }
    }

    /// A worker step for all payments at once, as one SQS batch with each message on its
    /// record's lane and carrying the record as first seen `queued` (however stale), as
    /// `/settle`'s does: the lane's run signs them together ([`Worker::handle_batch`]). Returns
    /// how many lanes were handed more than one payment still `queued` from different payers: a
    /// run the worker forms.
    async fn work_as_batch(
        &self,
        ids: &[String],
        first_seen: &mut HashMap<String, facilitator::store::PaymentRecord>,
    ) -> usize {
        // As an event source gathering a batch: /settle calls just made have queued theirs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut queued: HashMap<String, std::collections::HashSet<Address>> = HashMap::new();
        let mut event = aws_lambda_events::sqs::SqsEvent::default();
        for (i, id) in ids.iter().enumerate() {
            let Some(record) = find_payment_record(id).await else {
                continue;
            };
            if record.state == State::Queued {
                first_seen
                    .entry(id.clone())
                    .or_insert_with(|| record.clone());
                queued
                    .entry(record.lane.clone())
                    .or_default()
                    .insert(record.payer);
            }
            let body = SettlementMessage {
                id: id.clone(),
                replace: None,
                created: first_seen.get(id).cloned().map(Box::new),
                simulated: None,
            };
            let mut message = aws_lambda_events::sqs::SqsMessage::default();
            message.message_id = Some(format!("model-{i}"));
            message.body = Some(serde_json::to_string(&body).unwrap());
            message
                .attributes
                .insert("MessageGroupId".into(), record.lane.clone());
            event.records.push(message);
        }
        // What failed is simply retried by a later step, as SQS would.
        let _ = self.worker.handle_batch(event).await;
        queued.values().filter(|payers| payers.len() > 1).count()
    }
}

/// What one `/settle` asked and was answered.
struct Asked {
    k: usize,
    pay_to: Address,
    value: U256,
    answer: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_keep_one_success_per_payment_and_finish_every_record() {
    let cases: u64 = std::env::var("X402_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("X402_MODEL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let path = Path::new().await;
    let _mining = MiningStopped::on_drop_only(); // mining on again however the test ends
    let mut outcomes: HashMap<&'static str, u32> = HashMap::new();
    for seed in first..first + cases {
        let tally = run_case(&path, seed).await;
        for outcome in tally {
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    println!("model: {cases} cases from seed {first}; answers and runs: {outcomes:?}");
}

async fn run_case(path: &Path, seed: u64) -> Vec<&'static str> {
    let s = stack();
    let mut rng = Rng(seed);
    // Up to three, so that a lane's run (several new payments in one worker batch) forms often.
    let count = 1 + rng.below(3) as usize;
    let payments: Vec<PaymentBuilder> = (0..count)
        .map(|_| PaymentBuilder::new(rng.below(4) as usize).sign())
        .collect();
    // The conflicting twin of each: same payer and nonce, another payee and amount.
    let twins: Vec<PaymentBuilder> = payments
        .iter()
        .map(|p| {
            let other = Address::from_slice(&random_nonce()[..20]);
            p.clone()
                .edit(|t| {
                    t.to = other;
                    t.pay_to = other;
                    t.value = U256::from(1_000u64);
                    t.amount = "1000".into();
                })
                .sign()
        })
        .collect();
    let ids: Vec<String> = payments.iter().map(PaymentBuilder::record_id).collect();
    let plan = ops(&mut rng, count);

    let mut calls = Vec::new();
    // The worker is handed /settle's copy of the record on every other step (not drawn from the
    // seed, so that each seed keeps the plan it had before the copy existed).
    let (mut first_seen, mut worker_steps, mut runs) = (HashMap::new(), 0u32, 0usize);
    for op in &plan {
        match *op {
            Op::Settle { k, conflicting } => {
                let p = if conflicting { &twins[k] } else { &payments[k] };
                let (pay_to, value, body) = (p.pay_to, p.value, p.body());
                let settler = match rng.below(2) {
                    0 => path.settler.clone(),
                    _ => path.settler_here.clone(),
                };
                calls.push(tokio::spawn(async move {
                    let request = parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
                    let answer = settler.settle(&request).await;
                    Asked {
                        k,
                        pay_to,
                        value,
                        answer: serde_json::to_value(answer.response).unwrap(),
                    }
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Op::Worker => {
                worker_steps += 1;
                // Which kind of step turns with the seed too: a case has one or two worker steps.
                match (seed + u64::from(worker_steps)) % 3 {
                    0 => runs += path.work_as_batch(&ids, &mut first_seen).await,
                    step => path.work(&ids, &mut first_seen, step == 1).await,
                }
            }
            Op::Replay => {
                path.replayer.run(None).await.unwrap();
            }
            Op::StopMining => stop_mining().await,
            Op::Mine => resume_mining().await,
            Op::FrontRun { k } => {
                // Not waited for: with mining stopped it sits in the pool beside ours.
                let call = TransactionRequest::default()
                    .from(s.deployer.address)
                    .to(s.token)
                    .input(payments[k].transfer_calldata().into())
                    .gas_limit(0x30000);
                send_unlocked(call).await;
            }
            Op::Pause { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    // Drain: the chain mines again, every call answers, and the worker and replay finish every
    // record; then one late /settle per authorization, which must not be a second success.
    resume_mining().await;
    let mut asked = Vec::new();
    for call in calls {
        asked.push(call.await.unwrap());
    }
    for round in 0.. {
        let mut open = false;
        for id in &ids {
            let id = facilitator::store::PaymentId::parse(id).unwrap();
            if let Some(record) = path.store.get(&id).await.unwrap() {
                open |= !record.state.is_terminal();
            }
        }
        if !open {
            break;
        }
        assert!(
            round < 50,
            "seed {seed}: records still open after draining: {plan:?}"
        );
        path.work(&ids, &mut first_seen, false).await;
        path.replayer.run(None).await.unwrap();
        mine().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (k, p) in payments.iter().enumerate() {
        let request = parse_request(&serde_json::to_vec(&p.body()).unwrap()).unwrap();
        let answer = path.settler.settle(&request).await;
        asked.push(Asked {
            k,
            pay_to: p.pay_to,
            value: p.value,
            answer: serde_json::to_value(answer.response).unwrap(),
        });
    }

    check_case(path, seed, &plan, &payments, &asked).await;
    let runs = std::iter::repeat_n("worker batch forming a lane's run", runs);
    asked
        .iter()
        .map(
            |a| match (&a.answer["success"], a.answer["errorReason"].as_str()) {
                (Value::Bool(true), _) => "success",
                (_, Some("invalid_exact_evm_nonce_already_used")) => "nonce_already_used",
                (_, Some("settlement_pending")) => "settlement_pending",
                (_, Some("unexpected_settle_error")) => "cancelled_or_unexpected",
                _ => "other_failure",
            },
        )
        .chain(runs)
        .collect()
}

async fn check_case(
    path: &Path,
    seed: u64,
    plan: &[Op],
    payments: &[PaymentBuilder],
    asked: &[Asked],
) {
    let s = stack();
    let lanes: Vec<Address> = s.lanes.iter().map(|l| l.address).collect();
    let context = |what: &str| format!("seed {seed}: {what}; plan {plan:?}");
    for (k, payment) in payments.iter().enumerate() {
        let successes: Vec<&Asked> = asked
            .iter()
            .filter(|a| a.k == k && a.answer["success"] == true)
            .collect();
        assert!(
            successes.len() <= 1,
            "{}",
            context(&format!(
                "authorization {k} was told success {} times",
                successes.len()
            ))
        );
        for success in &successes {
            let hash: B256 = success.answer["transaction"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let receipt = receipt(hash).await;
            assert!(
                receipt.as_ref().is_some_and(|r| r.status()),
                "{}",
                context(&format!("{hash} is not a mined success"))
            );
            assert!(
                receipt.as_ref().is_some_and(|r| transfers(r).contains(&(
                    payment.from,
                    success.pay_to,
                    success.value
                ))),
                "{}",
                context(&format!(
                    "{hash} did not pay this request's payTo its value: {receipt:?}"
                ))
            );
        }
        let record = path.store.get(&payment.payment_id()).await.unwrap();
        let Some(record) = record else {
            assert!(
                successes.is_empty(),
                "{}",
                context("a success without a record")
            );
            continue;
        };
        assert!(
            record.state.is_terminal(),
            "{}",
            context(&format!("{record:?} is open"))
        );
        let mut ours_mined = 0;
        for hash in record.hashes() {
            if let Some(receipt) = receipt(hash).await {
                ours_mined += usize::from(lanes.contains(&receipt.from));
            }
        }
        assert!(
            ours_mined <= 1,
            "{}",
            context(&format!(
                "{ours_mined} of our transactions mined for {record:?}"
            ))
        );
        if record.state == State::Settled {
            assert!(
                record.claimed_by.is_some() || successes.is_empty(),
                "{}",
                context("a success that was not claimed")
            );
        }
    }
}

/// The `Transfer(from, to, value)` logs of a receipt.
fn transfers(receipt: &TransactionReceipt) -> Vec<(Address, Address, U256)> {
    receipt
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<Transfer>().ok())
        .map(|log| {
            let transfer = log.inner.data;
            (transfer.from, transfer.to, transfer.value)
        })
        .collect()
}
