//! x402 wire types and the parsing of a facilitator request into one typed [`Payment`].
//!
//! Parsing happens in two layers so that every bad input gets the most useful answer:
//! an unusable envelope (not JSON, no `paymentPayload` / `paymentRequirements` object) is a 400;
//! an envelope whose contents are wrong (unknown version, a field of the wrong type, an amount that
//! is not a uint256) is a 200 with the x402 reason, because that is what the official clients can
//! read and act on (x402-protocol.md §3.5).

pub mod amount;
pub mod messages;
pub mod network;
pub mod payment_identifier;
pub mod reason;
pub mod v1;
pub mod v2;

use alloy::primitives::U256;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{value::RawValue, Value};

pub use amount::DecimalU256;
pub use messages::{SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
pub use network::{EvmNetwork, X402Version};
pub use reason::{Reason, Rejection};

/// A verify or settle request, version differences folded away.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub version: X402Version,
    /// The scheme the client says it paid with (v2 `accepted.scheme`, v1 `scheme`).
    pub accepted_scheme: String,
    /// The network the client says it paid on, as written (v2 CAIP-2, v1 name).
    pub accepted_network: String,
    /// The resource server's requirements: what the payment is checked against.
    pub requirements: Requirements,
    /// The scheme-specific payload (for EVM exact: `signature` + `authorization`).
    pub payload: Value,
    /// The payload's `extensions` (v2 only; v1 has none), as sent.
    pub extensions: Option<Value>,
}

/// Payment requirements of either version, with the amount already a `U256`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    pub scheme: String,
    /// As written: a CAIP-2 id in v2, a network name in v1.
    pub network: String,
    pub amount: U256,
    pub asset: String,
    pub pay_to: String,
    pub extra: Option<Value>,
}

/// Why a request could not be turned into a [`Payment`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The envelope itself is unusable: answer 400.
    #[error("{message}")]
    Malformed { reason: Reason, message: String },
    /// The envelope is fine but its contents are refused: answer 200 with the reason.
    #[error("{reason}: {message}")]
    Refused {
        reason: Reason,
        message: String,
        payer: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow, default)]
    payment_payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payment_requirements: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionPeek {
    #[serde(default)]
    x402_version: Option<Value>,
}

/// Parses a `/verify` or `/settle` body.
///
/// Fails with [`RequestError::Malformed`] when the body is not a JSON object holding
/// `paymentPayload` and `paymentRequirements` objects, and with [`RequestError::Refused`] for
/// everything past that (version, field types, amounts).
pub fn parse_request(body: &[u8]) -> Result<Payment, RequestError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| RequestError::Malformed {
        reason: Reason::InvalidPayload,
        message: format!("the body is not a JSON object of the form {{x402Version, paymentPayload, paymentRequirements}}: {e}"),
    })?;
    let payload = object(
        envelope.payment_payload,
        "paymentPayload",
        Reason::InvalidPayload,
    )?;
    let requirements = object(
        envelope.payment_requirements,
        "paymentRequirements",
        Reason::InvalidPaymentRequirements,
    )?;

    let version = payload_version(payload)?;
    match version {
        X402Version::V2 => {
            let (p, r): (v2::PaymentPayload, v2::PaymentRequirements) =
                typed(payload, requirements, |p: &v2::PaymentPayload| &p.payload)?;
            Ok(Payment {
                version,
                accepted_scheme: p.accepted.scheme,
                accepted_network: p.accepted.network,
                requirements: r.into(),
                payload: p.payload,
                extensions: p.extensions,
            })
        }
        X402Version::V1 => {
            let (p, r): (v1::PaymentPayloadV1, v1::PaymentRequirementsV1) =
                typed(payload, requirements, |p: &v1::PaymentPayloadV1| &p.payload)?;
            Ok(Payment {
                version,
                accepted_scheme: p.scheme,
                accepted_network: p.network,
                requirements: r.into(),
                payload: p.payload,
                extensions: None,
            })
        }
    }
}

/// Types a version's payload and requirements. A requirements failure still names the payer when
/// the (already typed) payload does.
fn typed<P: DeserializeOwned, R: DeserializeOwned>(
    payload: &RawValue,
    requirements: &RawValue,
    scheme_payload: fn(&P) -> &Value,
) -> Result<(P, R), RequestError> {
    let refused = |reason, what: &str, e: serde_json::Error, payer| RequestError::Refused {
        reason,
        message: format!("{what}: {e}"),
        payer,
    };
    let p: P = serde_json::from_str(payload.get())
        .map_err(|e| refused(Reason::InvalidPayload, "paymentPayload", e, None))?;
    let r: R = serde_json::from_str(requirements.get()).map_err(|e| {
        refused(
            Reason::InvalidPaymentRequirements,
            "paymentRequirements",
            e,
            payer_hint(scheme_payload(&p)),
        )
    })?;
    Ok((p, r))
}

impl From<v2::PaymentRequirements> for Requirements {
    fn from(r: v2::PaymentRequirements) -> Self {
        Requirements {
            scheme: r.scheme,
            network: r.network,
            amount: r.amount.0,
            asset: r.asset,
            pay_to: r.pay_to,
            extra: r.extra,
        }
    }
}

impl From<v1::PaymentRequirementsV1> for Requirements {
    fn from(r: v1::PaymentRequirementsV1) -> Self {
        Requirements {
            scheme: r.scheme,
            network: r.network,
            amount: r.max_amount_required.0,
            asset: r.asset,
            pay_to: r.pay_to,
            extra: r.extra,
        }
    }
}

fn object<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    reason: Reason,
) -> Result<&'a RawValue, RequestError> {
    match raw {
        Some(raw) if raw.get().starts_with('{') => Ok(raw),
        Some(_) => Err(RequestError::Malformed {
            reason,
            message: format!("{field} must be a JSON object"),
        }),
        None => Err(RequestError::Malformed {
            reason,
            message: format!("{field} is missing"),
        }),
    }
}

/// Reads `paymentPayload.x402Version`, which is what the reference routes on.
fn payload_version(payload: &RawValue) -> Result<X402Version, RequestError> {
    let refused = |message: String| RequestError::Refused {
        reason: Reason::InvalidX402Version,
        message,
        payer: None,
    };
    let peek: VersionPeek =
        serde_json::from_str(payload.get()).map_err(|e| refused(format!("paymentPayload: {e}")))?;
    match peek.x402_version {
        None | Some(Value::Null) => Err(refused("paymentPayload.x402Version is missing".into())),
        Some(Value::Number(n)) => match n
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .map(X402Version::try_from)
        {
            Some(Ok(version)) => Ok(version),
            _ => Err(refused(format!(
                "x402Version {n} is not supported; this facilitator speaks 1 and 2"
            ))),
        },
        Some(other) => Err(refused(format!(
            "x402Version must be the number 1 or 2, not {other}"
        ))),
    }
}

/// The network a request names, for answers given before it could be typed: `/settle` echoes it in
/// `network` (x402-protocol.md §2.3) rather than leave it empty. v2 `paymentPayload.accepted.network`,
/// else v1 `paymentPayload.network`, else `paymentRequirements.network`; `None` when the body is not
/// JSON or none of them is a string.
pub fn network_hint(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let payload = body.get("paymentPayload");
    let named = [
        payload
            .and_then(|p| p.get("accepted"))
            .and_then(|a| a.get("network")),
        payload.and_then(|p| p.get("network")),
        body.get("paymentRequirements")
            .and_then(|r| r.get("network")),
    ];
    let network = named.into_iter().flatten().find_map(Value::as_str);
    network.map(str::to_owned)
}

/// The payer named by an EVM payload, for error answers given before the payload is fully typed.
/// Only a well-formed 20-byte hex address is returned.
pub fn payer_hint(payload: &Value) -> Option<String> {
    let from = payload
        .get("authorization")
        .or_else(|| payload.get("permit2Authorization"))?
        .get("from")?
        .as_str()?;
    let hex = from.strip_prefix("0x")?;
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| from.to_string())
}

#[cfg(test)]
mod tests;
