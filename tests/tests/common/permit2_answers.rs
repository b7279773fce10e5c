//! What the `exact` Permit2 and `upto` tests check alike about the facilitator's answers to a
//! [`Permit2Builder`] payment: `/verify`'s reason behind its envelope, and a refusal that left
//! nothing behind (no record, no transaction, no balance change).

use std::time::Duration;

use alloy::primitives::U256;

use super::{
    chain::block_number,
    http::verify,
    permit2::{permit_balances, same_address, Permit2Builder},
    records::find_payment_record,
};

/// Verifies `payment` on the local server and returns the answer's reason (`None` when valid),
/// after checking the envelope every answer about a well-formed payment has: status 200 and the
/// payment's payer.
pub async fn permit2_reason(payment: &Permit2Builder) -> Option<String> {
    let answer = verify(&payment.body()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert!(
        same_address(&answer.json["payer"], payment.from),
        "{:?}",
        answer.json
    );
    match answer.json["isValid"].as_bool() {
        Some(true) => None,
        Some(false) => Some(answer.json["invalidReason"].as_str().unwrap().to_owned()),
        None => panic!("no isValid: {:?}", answer.json),
    }
}

/// Nothing was recorded for `payment`, sent since `block`, or moved since its balances were
/// `before`. Half a second passes first, so that a transaction sent after the answer would be
/// mined by then (anvil mines at once).
pub async fn assert_nothing_recorded_or_sent(
    payment: &Permit2Builder,
    before: (U256, U256),
    block: u64,
) {
    assert!(find_payment_record(&payment.record_id()).await.is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(block_number().await, block, "nothing was sent");
    assert_eq!(permit_balances(payment).await, before);
}
