//! RPC failover (issue 14): a network configured with several RPC URLs keeps settling when the
//! first is down, answers errors or hangs, and a rotated key in the RPC secret is picked up at the
//! first 401.
//!
//! Each settlement test runs the whole path with the failover configuration on both sides: a local
//! server of the test's own (verify, record, queue, follow) and a worker in this process, fed from
//! a queue of the test's own, both configured with the two URLs. Tests here run one at a time:
//! they set the RPC proxy's faults, which every process on the stack sees.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{own_queue::OwnQueue, replay::*, *};
use facilitator::{config::RpcSource, worker::Worker};
use futures_util::future::join_all;
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A URL on which nothing listens (a port just freed), with a key in its path to show that it is
/// never printed.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/v2/DEAD-KEY")
}

/// `X402_NETWORKS` for the stack's network and token with `rpc` (the fields naming the RPC).
fn networks(rpc: Value) -> String {
    let mut entry = json!({"network": NETWORK, "assets": [stack().token.to_string()]});
    for (field, value) in rpc.as_object().unwrap() {
        entry[field] = value.clone();
    }
    json!([entry]).to_string()
}

/// Settles `payments` at once through a local server and a worker both configured with `urls`:
/// every `/settle` answer, in order.
async fn settle_through(urls: &[String], payments: &[PaymentBuilder]) -> Vec<Value> {
    let queue = OwnQueue::create("failover", 10).await;
    let (_server, base) = start_local_server(&[
        ("X402_NETWORKS", &networks(json!({ "rpcUrls": urls }))),
        ("X402_SETTLE_QUEUE_URL", &queue.url),
    ])
    .await;
    let mut config = config();
    config.networks[0].rpc = RpcSource::Urls(urls.to_vec());
    let worker = Worker::from_config(&config, &aws().await);

    let bodies: Vec<Value> = payments.iter().map(PaymentBuilder::body).collect();
    let settles = tokio::spawn(async move {
        join_all(bodies.iter().map(|b| post_json(&base, "/settle", b))).await
    });
    // The event source mapping's turns, until every /settle has answered (each answers by its
    // deadline whatever happens, so this ends).
    while !settles.is_finished() {
        queue.deliver_once(&worker).await;
    }
    let answers = settles.await.unwrap();
    answers
        .into_iter()
        .map(|answer| {
            assert_eq!(answer.status, 200, "{:?}", answer.json);
            answer.json
        })
        .collect()
}

fn assert_every_payment_settled(payments: &[PaymentBuilder], answers: &[Value]) {
    assert_eq!(payments.len(), answers.len());
    for (payment, answer) in payments.iter().zip(answers) {
        assert_eq!(
            answer["success"],
            true,
            "{} was not settled: {answer}",
            payment.record_id()
        );
    }
}

#[tokio::test]
async fn settlements_go_through_the_second_url_when_the_first_is_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let payments: Vec<PaymentBuilder> = (0..3).map(|p| PaymentBuilder::new(p).sign()).collect();
    let mut before = Vec::new();
    for payment in &payments {
        before.push(balances(payment).await.0);
    }
    reset_rpc_counts().await;
    // First a URL where nothing listens, then the counting proxy in front of anvil.
    let urls = [dead_url(), stack().rpc_proxy_url.clone()];
    let answers = settle_through(&urls, &payments).await;
    assert_every_payment_settled(&payments, &answers);
    for ((payment, answer), before) in payments.iter().zip(&answers).zip(before) {
        let after = balances(payment).await.0;
        assert_eq!(after, before - payment.value, "one transfer: {answer}");
        assert!(
            !answer.to_string().contains("DEAD-KEY"),
            "an answer printed a URL's key: {answer}"
        );
    }
    // Everything went to the second URL: the simulation and the sends are counted there.
    let counts = rpc_counts().await;
    println!("the second URL saw: {counts}");
    // Each payment sent once: by the worker, or by /settle with its receipt waited for.
    let sends = ["eth_sendRawTransaction", "eth_sendRawTransactionSync"]
        .iter()
        .map(|m| counts["methods"][m].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(sends, payments.len() as u64, "{counts}");
    // /settle's simulation: `eth_estimateGas` from the lane (or `eth_call` when it cannot run
    // from the lane), one per payment at least.
    let simulations = ["eth_call", "eth_estimateGas"]
        .iter()
        .map(|m| counts["methods"][m].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(simulations >= payments.len() as u64, "{counts}");
}

#[tokio::test]
async fn settlements_go_through_the_second_url_when_the_first_answers_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    reset_rpc_counts().await;
    // The counting proxy first, answering HTTP 503 to everything; anvil itself second.
    let fault = RpcFault::set("error", &[]).await;
    let urls = [stack().rpc_proxy_url.clone(), stack().anvil_url.clone()];
    let payments = vec![PaymentBuilder::new(3).sign(), PaymentBuilder::new(0).sign()];
    let answers = settle_through(&urls, &payments).await;
    drop(fault);
    assert_every_payment_settled(&payments, &answers);
    let counts = rpc_counts().await;
    println!("the first URL was asked (and answered 503): {counts}");
    assert!(
        counts["http_requests"].as_u64().unwrap() >= 1,
        "the first URL was never tried: {counts}"
    );
}

/// The RPC secret names the proxy under an old key; the provider stops taking it (HTTP 401) and
/// the secret is changed to a new URL. The next request fails over to the new URL at once, not
/// after the secret's five-minute TTL.
#[tokio::test]
async fn a_rotated_key_in_the_rpc_secret_is_read_at_the_first_401() {
    let _one = ONE_AT_A_TIME.lock().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws().await);
    let name = format!("x402/rpc/test-{}", &random_nonce().to_string()[2..12]);
    let old = json!([format!("{}/v2/OLD-KEY", stack().rpc_proxy_url)]).to_string();
    secrets
        .create_secret()
        .name(&name)
        .secret_string(&old)
        .send()
        .await
        .unwrap();
    let (_server, base) =
        start_local_server(&[("X402_NETWORKS", &networks(json!({ "rpcSecret": name })))]).await;

    reset_rpc_counts().await;
    let first = post_json(&base, "/verify", &PaymentBuilder::new(0).sign().body()).await;
    assert_eq!(first.json["isValid"], true, "{:?}", first.json);
    assert!(rpc_counts().await["http_requests"].as_u64().unwrap() >= 1);

    let fault = RpcFault::set("unauthorized", &[]).await;
    secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string(json!([stack().anvil_url]).to_string())
        .send()
        .await
        .unwrap();
    reset_rpc_counts().await;
    let second = post_json(&base, "/verify", &PaymentBuilder::new(1).sign().body()).await;
    let refused = rpc_counts().await["http_requests"].as_u64().unwrap();
    drop(fault);
    let _ = secrets
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await;
    assert!(refused >= 1, "the old URL was not asked after the rotation");
    assert_eq!(second.status, 200);
    assert_eq!(second.json["isValid"], true, "{:?}", second.json);
    assert!(
        !second.json.to_string().contains("OLD-KEY"),
        "{:?}",
        second.json
    );
}

/// The first URL takes the request and never answers. The attempt there gets half the call's
/// timeout (infra/test.sh sets 2 s), and the second URL answers within the other half: the
/// payment verifies, where with one URL it would be `unexpected_verify_error`.
#[tokio::test]
async fn a_hung_first_url_costs_half_the_timeout_and_the_second_answers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let urls = [stack().rpc_proxy_url.clone(), stack().anvil_url.clone()];
    let (_server, base) =
        start_local_server(&[("X402_NETWORKS", &networks(json!({ "rpcUrls": urls })))]).await;
    reset_rpc_counts().await;
    let fault = RpcFault::set("hang", &[]).await;
    let answer = post_json(&base, "/verify", &PaymentBuilder::new(2).sign().body()).await;
    let hung = rpc_counts().await["http_requests"].as_u64().unwrap();
    drop(fault);
    assert!(hung >= 1, "the first URL was never asked");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json["isValid"], true, "{:?}", answer.json);
}
