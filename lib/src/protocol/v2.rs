//! x402 v2 wire types (x402-protocol.md §2.1). Scheme-specific parts (`payload`, `extra`,
//! `extensions`) stay raw JSON here; the scheme that handles a payment types them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::amount::DecimalU256;

/// What a resource server asks for, and what a client echoes back as `accepted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    pub amount: DecimalU256,
    pub asset: String,
    pub pay_to: String,
    /// Kept as the JSON number it was: the official schema allows any positive number, and the
    /// facilitator never uses it (x402-protocol.md §12.3).
    pub max_timeout_seconds: serde_json::Number,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// The resource a payment is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// The requirements the client says it accepted. The facilitator reads only `scheme` and
/// `network` from this echo (it checks the payment against the server's own `paymentRequirements`),
/// so the rest is kept as it came instead of being refused for a quirk the reference tolerates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub scheme: String,
    pub network: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// A client's signed payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    pub accepted: Accepted,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}
