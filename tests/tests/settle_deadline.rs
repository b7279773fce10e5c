//! What `/settle` does when nothing is broadcast before its deadline: it cancels the record
//! atomically and says so, and the payment can then never settle unseen (DESIGN I5).
//!
//! A second local server is started with a 1.5 s deadline and a queue nobody consumes (the
//! dead-letter queue), so its payments stay `queued` until the deadline.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use facilitator::store::State;
use serde_json::json;

#[tokio::test]
async fn nothing_broadcast_by_the_deadline_is_cancelled_for_good() {
    let s = stack();
    // A queue nobody consumes (the dead-letter queue), and a /settle that does not sign itself
    // (as when the lane is leased), so the payment stays queued.
    let (_server, base) = start_local_server(&[
        ("X402_SETTLE_SIGNS", "off"),
        ("X402_SETTLE_QUEUE_URL", stack().settle_dlq_url.as_str()),
        ("X402_SETTLE_DEADLINE_MS", "1500"),
    ])
    .await;
    let payment = PaymentBuilder::new(2).sign();
    let balance = token_balance(s.token, payment.from).await;
    let block = block_number().await;

    let answer = post_raw(
        &format!("{base}/settle"),
        serde_json::to_vec(&payment.body()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.json["success"], false, "{:?}", answer.json);
    assert_eq!(
        answer.json["errorReason"], "unexpected_settle_error",
        "{:?}",
        answer.json
    );
    assert_eq!(answer.json["transaction"], "");

    let record = payment_record(&payment.record_id()).await;
    assert_eq!(record.state, State::Cancelled);
    assert!(
        record.open_shard.is_none(),
        "a cancelled record leaves replay's index"
    );

    // The regular facilitator, whose worker runs, follows the cancelled record: it does not revive it.
    let again = settle(&payment.body()).await;
    assert_eq!(
        (
            again.json["success"].clone(),
            again.json["errorReason"].clone()
        ),
        (json!(false), json!("unexpected_settle_error"))
    );
    assert_eq!(block_number().await, block, "nothing was ever broadcast");
    assert_eq!(token_balance(s.token, payment.from).await, balance);
}

/// A TCP proxy in front of moto that can be cut: every connection it holds is dropped and new ones
/// are refused, as a DynamoDB outage looks to the facilitator.
struct CuttableAws {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl CuttableAws {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = stack()
            .aws_endpoint_url
            .trim_start_matches("http://")
            .to_owned();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let (flag, held) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                held.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        CuttableAws {
            url,
            cut,
            connections,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }
}

/// DynamoDB gone at the deadline: the cancel cannot be written, so the payment may still be signed
/// later (the worker, or replay, finds it `queued`). `/settle` answers `settlement_pending` with no
/// transaction, within its deadline, instead of spinning on a write that keeps failing; neither
/// "cancelled" nor any failure would be true.
#[tokio::test]
async fn a_deadline_cancel_that_cannot_be_written_answers_pending_not_a_hang() {
    let aws = CuttableAws::start().await;
    let (_server, base) = start_local_server(&[
        ("AWS_ENDPOINT_URL", aws.url.as_str()),
        ("X402_SETTLE_SIGNS", "off"),
        ("X402_SETTLE_QUEUE_URL", stack().settle_dlq_url.as_str()),
        ("X402_SETTLE_DEADLINE_MS", "1500"),
    ])
    .await;
    let payment = PaymentBuilder::new(3).sign();
    let body = serde_json::to_vec(&payment.body()).unwrap();
    let url = format!("{base}/settle");
    let settling = tokio::spawn(async move {
        http()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .timeout(std::time::Duration::from_secs(15))
            .send()
            .await
    });
    let id = payment.record_id();
    eventually(
        "the payment recorded",
        100,
        std::time::Duration::from_millis(20),
        || async { find_payment_record(&id).await.map(drop).ok_or(()) },
    )
    .await;
    aws.cut();

    let response = settling
        .await
        .unwrap()
        .expect("/settle answered: it did not hang on the failing cancel");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (
            answer["success"].clone(),
            answer["errorReason"].clone(),
            answer["transaction"].clone()
        ),
        (json!(false), json!("settlement_pending"), json!("")),
        "{answer}"
    );
    let message = answer["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("could not be cancelled"), "{message}");

    // Still queued, as the answer said: end it here, so no later test's replay settles it.
    let record = payment_record(&id).await;
    assert_eq!(record.state, State::Queued);
    let failure = facilitator::store::Failure::new(
        facilitator::protocol::Reason::UnexpectedSettleError,
        "ended by the test",
    );
    assert!(store().await.cancel(&record.id, &failure).await.unwrap());
}
