//! The lane lifecycle on the local stack (docs/runbook.md, "Signer lanes"): a lane that is not
//! active gets no new payments; activating it gives it its share; draining one sends new payments
//! elsewhere while its open payment finishes; a drained lane with nothing open retires. The states
//! are moved with the operator's tool (`lanes`, infra/lanes), as the runbook says, and the payments
//! go through a local server that reads the lanes' states for every payment.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use facilitator::{settle::lane_for, store::LaneState};
use serde_json::Value;

/// Runs the lanes tool with the test environment; its output, or a panic with its error.
fn lanes_tool(args: &[&str]) -> String {
    let binary = std::env::var("X402_LANES_BIN").expect("X402_LANES_BIN is set by infra/test.sh");
    let output = std::process::Command::new(binary)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "lanes {args:?} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

fn lanes_tool_refuses(args: &[&str]) -> String {
    let binary = std::env::var("X402_LANES_BIN").unwrap();
    let output = std::process::Command::new(binary)
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "lanes {args:?} should refuse");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The tests here move the stack's lanes: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every lane active again however the test ends, as the stack started.
struct LanesRestored;

impl Drop for LanesRestored {
    fn drop(&mut self) {
        finish_detached(async {
            use alloy::providers::ext::AnvilApi;
            // A swept lane gets its gas back: 1000 ETH, as the stack gave it.
            let thousand_eth =
                alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(21u64));
            for lane in &stack().lanes {
                let _ = anvil().anvil_set_balance(lane.address, thousand_eth).await;
            }
            let store = store().await;
            for lane in config().lane_keys {
                let _ = store
                    .set_lane_state(&lane, &LaneState::ALL, LaneState::Active)
                    .await;
            }
        });
    }
}

/// A signed payment that `lane_for` puts on `lane` among `among`.
fn payment_routed(among: &[String], lane: &str) -> PaymentBuilder {
    loop {
        let payment = PaymentBuilder::new(2).sign();
        if lane_for(&payment.payment_id(), among) == lane {
            return payment;
        }
    }
}

fn ms(millis: u64) -> std::time::Duration {
    std::time::Duration::from_millis(millis)
}

async fn settled_on(base: &str, payment: &PaymentBuilder) -> String {
    let answer = post_json(base, "/settle", &payment.body()).await;
    assert_eq!(
        answer.json["success"],
        Value::Bool(true),
        "{:?}",
        answer.json
    );
    payment_record(&payment.record_id()).await.lane
}

#[tokio::test]
async fn lanes_go_from_funding_to_active_to_draining_to_retired() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _restore = LanesRestored;
    let lanes = config().lane_keys;
    assert!(lanes.len() >= 2, "the local stack has two lanes");
    let (first, second) = (lanes[0].clone(), lanes[1].clone());
    let (_server, base) = start_local_server(&[("X402_LANE_STATE_TTL_MS", "0")]).await;
    let store = store().await;

    // A new lane waits in `funding`: every payment goes to the other one, including one that both
    // lanes being active would have put on it.
    assert!(store
        .set_lane_state(&second, &[LaneState::Active], LaneState::Funding)
        .await
        .unwrap());
    let would_go_second = payment_routed(&lanes, &second);
    assert_eq!(settled_on(&base, &would_go_second).await, first);
    assert!(lanes_tool(&["list"]).contains("funding"));

    // Activated, it takes its share.
    lanes_tool(&["activate", "1"]);
    assert_eq!(
        settled_on(&base, &payment_routed(&lanes, &second)).await,
        second
    );

    // Draining the first lane while a payment on it is in flight: new payments go to the second,
    // and the open one still settles.
    let in_flight = payment_routed(&lanes, &first);
    let mining = MiningStopped::start().await;
    let body = in_flight.body();
    let base_for_flight = base.clone();
    let flight = tokio::spawn(async move { post_json(&base_for_flight, "/settle", &body).await });
    let id = in_flight.record_id();
    wait_sent(&id).await;
    lanes_tool(&["drain", &first]);
    assert!(
        lanes_tool_refuses(&["retire", &first]).contains("open payments"),
        "a lane with an open payment does not retire"
    );
    drop(mining);
    let answer = flight.await.unwrap();
    assert_eq!(
        answer.json["success"],
        Value::Bool(true),
        "{:?}",
        answer.json
    );
    assert_eq!(payment_record(&in_flight.record_id()).await.lane, first);
    assert_eq!(
        settled_on(&base, &payment_routed(&lanes, &first)).await,
        second
    );

    // Nothing open on it: it retires, and it takes no payment until an operator activates it.
    lanes_tool(&["retire", "0"]);
    let listed = lanes_tool(&["list"]);
    println!("{listed}");
    assert!(listed.contains("retired"), "{listed}");
    assert!(lanes_tool_refuses(&["activate", "0"]).contains("is retired"));
    assert_eq!(
        settled_on(&base, &payment_routed(&lanes, &first)).await,
        second
    );

    // Its gas goes to the sweep address, through the worker (the only signer): all of it but the
    // most the transfer's gas could cost.
    let to = config().sweep_addresses[0];
    let lane = stack().lanes[0].address;
    let (lane_before, to_before) = (balance_of(lane).await, balance_of(to).await);
    lanes_tool(&["sweep", "0", &format!("{to:#x}")]);
    let swept = eventually("the sweep mined", 300, ms(100), || async {
        let moved = balance_of(to).await - to_before;
        if moved.is_zero() {
            Err(moved)
        } else {
            Ok(moved)
        }
    })
    .await;
    let left = balance_of(lane).await;
    println!("swept {swept} wei of {lane_before} to {to:#x}; {left} wei left on the lane");
    // The fee cap (100 gwei) times a transfer's 21 000 gas is the most that may stay behind.
    let headroom = alloy::primitives::U256::from(21_000u64 * 100_000_000_000u64);
    assert!(
        left <= headroom,
        "at most the gas headroom stays behind: {left}"
    );
    assert!(
        lanes_tool_refuses(&["sweep", "1", &format!("{to:#x}")]).contains("not retired"),
        "an active lane is not swept"
    );
}

async fn balance_of(address: alloy::primitives::Address) -> alloy::primitives::U256 {
    use alloy::providers::Provider;
    anvil().get_balance(address).await.unwrap()
}

/// Replay makes a funded `funding` lane active (the stack's lanes hold 1000 ETH, far above the
/// default 0.005), and leaves a drained one alone: only `funding` is ever activated by it.
#[tokio::test]
async fn replay_activates_a_funded_lane_and_never_a_drained_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _restore = LanesRestored;
    let lanes = config().lane_keys;
    let store = store().await;
    assert!(store
        .set_lane_state(&lanes[1], &[LaneState::Active], LaneState::Funding)
        .await
        .unwrap());
    assert!(store
        .set_lane_state(&lanes[0], &[LaneState::Active], LaneState::Draining)
        .await
        .unwrap());

    let replayer = facilitator::replay::Replayer::from_config(&config(), &aws().await).unwrap();
    let summary = replayer.run(None).await.unwrap();
    assert!(
        !summary.skipped,
        "another replay run held the lease: {summary:?}"
    );

    let states = store.lane_states(&lanes).await.unwrap();
    assert_eq!(states[&lanes[1]], LaneState::Active, "funded: activated");
    assert_eq!(
        states[&lanes[0]],
        LaneState::Draining,
        "drained: left alone"
    );
}

/// A lane key KMS cannot read (deleted, disabled, a policy mistake) costs its own lane only:
/// `/supported` lists every other lane's address, and `/settle` still knows each other lane's.
#[tokio::test]
async fn a_lane_key_kms_cannot_read_costs_only_its_own_lane() {
    let mut config = config();
    let unreadable = "00000000-0000-4000-8000-000000000000".to_owned();
    config.lane_keys.push(unreadable.clone());
    let facilitator = facilitator::Facilitator::new(&config, &aws().await);

    let supported = facilitator
        .supported()
        .await
        .expect("answers without the broken lane");
    let signers = &supported.signers["eip155:*"];
    println!(
        "signers with one unreadable key among {}: {signers:?}",
        config.lane_keys.len()
    );
    assert_eq!(signers.len(), config.lane_keys.len() - 1);
    for key in &config.lane_keys[..config.lane_keys.len() - 1] {
        let address = facilitator.lanes().address_of(key).await.unwrap();
        assert!(address.is_some(), "{key}");
    }
    assert!(facilitator.lanes().address_of(&unreadable).await.is_err());
}
