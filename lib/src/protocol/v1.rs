//! x402 v1 wire types (x402-protocol.md §2.2), kept so that v1 clients still get paid.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::amount::DecimalU256;

/// v1 requirements: `maxAmountRequired` instead of `amount`, resource fields inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    pub network: String,
    pub max_amount_required: DecimalU256,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub pay_to: String,
    /// Any JSON number, as in v2 (see there).
    pub max_timeout_seconds: serde_json::Number,
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A v1 payment: scheme and network at the top level, no `accepted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub payload: Value,
}
