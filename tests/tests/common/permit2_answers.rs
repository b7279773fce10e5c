//! What the `exact` Permit2 and `upto` tests check alike about the facilitator's answers to a
//! [`Permit2Builder`] payment: `/verify`'s reason behind its envelope.

use super::{
    http::verify,
    permit2::{same_address, Permit2Builder},
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
