//! Verify when the chain RPC misbehaves: it answers at once with a clear reason, never hangs and never
//! gives a 5xx, and recovers as soon as the RPC does. The faults are injected by the counting proxy in
//! front of anvil; this binary runs alone (cargo runs test binaries one after another), so no other
//! test sees them.

// Test helpers panic on set-up failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn verify_answers_clearly_when_the_rpc_fails_and_recovers_after() {
    // error: HTTP 503 from the RPC; drop: the connection closes; hang: no answer at all, which the
    // facilitator cuts at X402_RPC_TIMEOUT_MS (infra/test.sh sets 2 s).
    let mut answers = Vec::new();
    for mode in ["error", "drop", "hang"] {
        set_rpc_fault(mode, &[]).await;
        let payment = PaymentBuilder::new(0).sign();
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(30), verify(&payment.body())).await;
        answers.push((mode, answer));
    }
    set_rpc_fault("none", &[]).await;

    for (mode, answer) in answers {
        let answer = answer.unwrap_or_else(|_| panic!("verify hung with the RPC fault {mode}"));
        assert_eq!(answer.status, 200, "{mode}: {:?}", answer.json);
        assert_eq!(answer.json["isValid"], false, "{mode}: {:?}", answer.json);
        assert_eq!(
            answer.json["invalidReason"], "unexpected_verify_error",
            "{mode}: {:?}",
            answer.json
        );
        assert!(
            answer.json["invalidMessage"]
                .as_str()
                .unwrap()
                .contains("chain RPC"),
            "{mode}: {:?}",
            answer.json
        );
    }

    let payment = PaymentBuilder::new(0).sign();
    assert_eq!(
        verify(&payment.body()).await.json["isValid"],
        true,
        "verify recovers with the RPC"
    );
}
