//! The payment record as stored, and its id.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

/// A payment's state (docs/settlement.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Recorded and queued; nothing signed. `/settle` may still cancel it.
    Queued,
    /// Signed and written ahead; maybe not broadcast yet.
    Signed,
    /// Broadcast; waiting for a receipt.
    Submitted,
    Settled,
    Failed,
    Expired,
    Cancelled,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Signed => "signed",
            State::Submitted => "submitted",
            State::Settled => "settled",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    /// No transition leaves a terminal state.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Settled | State::Failed | State::Expired | State::Cancelled
        )
    }
}

/// One authorization's id: network, token, payer and EIP-3009 nonce. The same authorization always
/// has the same id, whoever submits it and however often.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentId(String);

impl PaymentId {
    pub fn new(network: &str, asset: Address, payer: Address, nonce: B256) -> Self {
        PaymentId(format!("{network}#{asset:#x}#{payer:#x}#{nonce:#x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A payment as stored in `x402-payments`. Hex values are `0x`-prefixed lowercase strings, amounts
/// decimal strings, times unix milliseconds (seconds for `valid_before` and `expires_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub id: String,
    pub state: State,
    /// The network as the payment named it (CAIP-2 or v1 name), echoed in answers.
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub pay_to: String,
    pub value: String,
    pub valid_before: u64,
    pub calldata: String,
    pub lane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_nonce: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_tx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    /// The lane's address, written with the transaction: whose nonce `lane_nonce` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Hashes of this payment's earlier transactions, oldest first: superseded by a replacement at
    /// the same lane nonce (a fee bump or a cancellation), or signed at a lane nonce that another
    /// transaction used. At most one transaction per lane nonce can be mined, and it may be any of
    /// them, so the receipt is looked for under every hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Present only while the record is not terminal (the sparse `open-by-age` index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_shard: Option<String>,
    /// DynamoDB TTL, seconds.
    pub expires_at: u64,
}

/// How long a finished record is kept after its authorization expired.
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;

impl PaymentRecord {
    /// Every transaction this payment was signed as, the current one first.
    pub fn hashes(&self) -> impl Iterator<Item = &str> {
        self.tx_hash
            .as_deref()
            .into_iter()
            .chain(self.replaced.iter().rev().map(String::as_str))
    }

    /// The EIP-3009 nonce of the authorization, the last part of the id.
    pub fn authorization_nonce(&self) -> Option<&str> {
        self.id.rsplit('#').next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_and_stable() {
        let id = PaymentId::new(
            "eip155:84532",
            alloy::primitives::address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            alloy::primitives::address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            B256::repeat_byte(0xab),
        );
        assert_eq!(
            id.as_str(),
            format!(
                "eip155:84532#0x036cbd53842c5426634e7929541ec2318f3dcf7e#0x70997970c51812dc3a010c7d01b50e0d17dc79c8#0x{}",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn terminal_states() {
        assert!(
            !State::Queued.is_terminal()
                && !State::Signed.is_terminal()
                && !State::Submitted.is_terminal()
        );
        assert!(State::Settled.is_terminal() && State::Failed.is_terminal());
        assert!(State::Expired.is_terminal() && State::Cancelled.is_terminal());
    }
}
