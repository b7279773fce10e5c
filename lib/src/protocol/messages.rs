//! The facilitator's own request and response bodies (x402-protocol.md §2.3, §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{network::X402Version, reason::Reason};

/// `POST /verify` answer. Absent optionals are omitted, as the reference does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

impl VerifyResponse {
    pub fn valid(payer: String) -> Self {
        VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(payer),
        }
    }

    pub fn invalid(reason: Reason, message: Option<String>, payer: Option<String>) -> Self {
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason),
            invalid_message: message,
            payer,
        }
    }
}

/// `POST /settle` answer. `transaction` is `""` when nothing was broadcast.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    pub transaction: String,
    pub network: String,
    /// The amount charged, in the token's atomic units: `upto` answers carry it on success (the
    /// actual charge, `"0"` when nothing was settled); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

/// One (version, scheme, network) this deployment serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: X402Version,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// `GET /supported` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    pub extensions: Vec<String>,
    /// CAIP family pattern (`eip155:*`) to the addresses that send settlements.
    pub signers: BTreeMap<String, Vec<String>>,
}
