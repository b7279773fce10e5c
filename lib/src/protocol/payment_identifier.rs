//! The `payment-identifier` extension: an idempotency key a client puts in its payment
//! (`paymentPayload.extensions["payment-identifier"].info.id`), as the x402 repository's
//! `specs/extensions/payment_identifier.md` defines it.
//!
//! What it means here (docs/protocol-choices.md): the same identifier with the same payment gets
//! the same answer again, success included; the same identifier with another payment is a 409;
//! a payment whose extension says `required: true` and carries no identifier is a 400.

use serde_json::Value;

use super::{Payment, Reason, Rejection};

/// The extension's key in `extensions`, and in `/supported`'s list.
pub const EXTENSION: &str = "payment-identifier";
const MIN_LEN: usize = 16;
const MAX_LEN: usize = 128;

/// A valid identifier: 16–128 characters from `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIdentifier(String);

impl PaymentIdentifier {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a payment's identifier cannot be used; each is answered with a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierError(pub Rejection);

/// The payment's identifier: `Ok(None)` when the extension is absent or carries no `id` and does
/// not require one.
pub fn parse(payment: &Payment) -> Result<Option<PaymentIdentifier>, IdentifierError> {
    let Some(extension) = payment.extensions.as_ref().and_then(|e| e.get(EXTENSION)) else {
        return Ok(None);
    };
    let bad = |message: String| {
        IdentifierError(Rejection::new(Reason::InvalidPaymentIdentifier, message))
    };
    let info = match extension.get("info") {
        None | Some(Value::Null) => return Ok(None),
        Some(info @ Value::Object(_)) => info,
        Some(_) => {
            return Err(bad(format!(
                "extensions.{EXTENSION}.info must be an object"
            )))
        }
    };
    let required = info
        .get("required")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match info.get("id") {
        None | Some(Value::Null) if required => Err(IdentifierError(Rejection::new(
            Reason::PaymentIdentifierRequired,
            format!("extensions.{EXTENSION} is required by the resource server but carries no id"),
        ))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if valid(id) => Ok(Some(PaymentIdentifier(id.clone()))),
        Some(_) => Err(bad(format!(
            "extensions.{EXTENSION}.info.id must be {MIN_LEN} to {MAX_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
        ))),
    }
}

fn valid(id: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::protocol::parse_request;

    fn payment(extensions: Value) -> Payment {
        let requirements = json!({"scheme":"exact","network":"eip155:84532","amount":"1",
            "asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","maxTimeoutSeconds":60});
        let body = json!({"x402Version":2,"paymentRequirements":requirements,
            "paymentPayload":{"x402Version":2,"accepted":requirements,"payload":{},"extensions":extensions}});
        parse_request(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn reason(extensions: Value) -> Option<Reason> {
        parse(&payment(extensions)).err().map(|e| e.0.reason)
    }

    #[test]
    fn an_identifier_is_read_from_the_extension_info() {
        let id = "pay_7d5d747be160e280504c099d984bcfe0";
        let found = parse(&payment(
            json!({EXTENSION: {"info": {"required": false, "id": id}}}),
        ));
        assert_eq!(found.unwrap().unwrap().as_str(), id);
    }

    #[test]
    fn no_extension_or_no_id_means_no_identifier() {
        assert_eq!(parse(&payment(json!({}))), Ok(None));
        assert_eq!(parse(&payment(json!({"bazaar": {}}))), Ok(None));
        assert_eq!(
            parse(&payment(json!({EXTENSION: {"info": {"required": false}}}))),
            Ok(None)
        );
        assert_eq!(parse(&payment(json!({EXTENSION: {}}))), Ok(None));
    }

    #[test]
    fn a_required_identifier_that_is_missing_is_refused() {
        assert_eq!(
            reason(json!({EXTENSION: {"info": {"required": true}}})),
            Some(Reason::PaymentIdentifierRequired)
        );
    }

    #[test]
    fn identifiers_outside_the_format_are_refused() {
        for id in [
            json!("short"),
            json!("x".repeat(129)),
            json!("pay_with spaces_0123456"),
            json!(42),
        ] {
            assert_eq!(
                reason(json!({EXTENSION: {"info": {"id": id}}})),
                Some(Reason::InvalidPaymentIdentifier),
                "{id}"
            );
        }
        assert_eq!(
            reason(json!({EXTENSION: {"info": "x"}})),
            Some(Reason::InvalidPaymentIdentifier)
        );
        assert!(parse(&payment(
            json!({EXTENSION: {"info": {"id": "a".repeat(16)}}})
        ))
        .is_ok());
        assert!(parse(&payment(
            json!({EXTENSION: {"info": {"id": "A-_9".repeat(32)}}})
        ))
        .is_ok());
    }
}
