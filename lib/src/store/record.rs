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
    /// The network's CAIP-2 id (answers echo the network as each request names it).
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
    /// The block of the mined transaction, once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
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
    /// The whole payment this record is for ([`crate::evm::Checked::digest`]): the authorization,
    /// its signature, the token, the network and the requirements' `payTo` and amount. A request
    /// is answered from this record only if its payment has the same digest (DESIGN I2). Empty in
    /// records written before digests were kept: those are compared by `calldata`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Who was told `success` for this payment ([`Claimant`]): at most one caller, or every
    /// caller that presents the same `payment-identifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// The authorization was executed by a transaction that is not this facilitator's (a
    /// front-runner's), and that transaction paid the payee: `tx_hash` names it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled_by_other: bool,
}

/// Who claims a payment's success ([`PaymentRecord::claimed_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimant {
    /// One `/settle` request: no other request can hold its claim.
    Request(String),
    /// Every request that carries this `payment-identifier` (already bound to this payment).
    Identifier(String),
}

impl Claimant {
    /// A claimant no other request will ever be: 128 random bits.
    pub fn new_request() -> Self {
        let mut bytes = [0u8; 16];
        // Without randomness the request still gets a claimant of its own: the time in
        // nanoseconds and a per-process counter are unique enough within one instance, and the
        // claim only has to differ from the other callers'.
        if getrandom::fill(&mut bytes).is_err() {
            use std::sync::atomic::{AtomicU64, Ordering};
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let seed = format!("{nanos}:{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            bytes.copy_from_slice(&alloy::primitives::keccak256(seed)[..16]);
        }
        Claimant::Request(alloy::hex::encode(bytes))
    }

    /// The value stored in `claimed_by`.
    pub fn stored(&self) -> String {
        match self {
            Claimant::Request(token) => format!("req:{token}"),
            Claimant::Identifier(id) => format!("pid:{id}"),
        }
    }
}

/// How long a finished record is kept after its authorization expired.
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;

/// What `/settle` records for a new payment, before anything is signed.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub id: &'a PaymentId,
    /// The network's CAIP-2 id: how the worker and replay find its chain.
    pub network: &'a str,
    pub asset: Address,
    pub payer: Address,
    pub pay_to: Address,
    pub value: alloy::primitives::U256,
    pub valid_before: u64,
    pub calldata: &'a alloy::primitives::Bytes,
    pub digest: B256,
    pub lane: &'a str,
}

impl PaymentRecord {
    /// The record of a payment just accepted: `queued`, open, nothing signed. The only place a
    /// record is built.
    pub fn queued(new: &NewPayment<'_>, now_ms: u64) -> Self {
        PaymentRecord {
            id: new.id.to_string(),
            state: State::Queued,
            network: new.network.to_owned(),
            asset: format!("{:#x}", new.asset),
            payer: format!("{:#x}", new.payer),
            pay_to: format!("{:#x}", new.pay_to),
            value: new.value.to_string(),
            valid_before: new.valid_before,
            calldata: new.calldata.to_string(),
            lane: new.lane.to_owned(),
            lane_nonce: None,
            raw_tx: None,
            tx_hash: None,
            sender: None,
            replaced: vec![],
            block_number: None,
            reason: None,
            message: None,
            created_at: now_ms,
            updated_at: now_ms,
            open_shard: Some("open".to_owned()),
            expires_at: new.valid_before.saturating_add(RETENTION_SECS),
            digest: format!("{:#x}", new.digest),
            claimed_by: None,
            settled_by_other: false,
        }
    }

    /// The record of a payment found already executed on chain by `tx`, somebody else's
    /// transaction that paid the payee: `settled` at once and claimed by `claimant`.
    pub fn settled_by_other(
        new: &NewPayment<'_>,
        tx: B256,
        block: Option<u64>,
        claimant: &Claimant,
        now_ms: u64,
    ) -> Self {
        PaymentRecord {
            state: State::Settled,
            tx_hash: Some(format!("{tx:#x}")),
            open_shard: None,
            claimed_by: Some(claimant.stored()),
            settled_by_other: true,
            block_number: block,
            ..Self::queued(new, now_ms)
        }
    }

    /// Whether `digest` (of a request's payment) is the payment this record is for. A record kept
    /// from before digests compares the calldata, which encodes the whole authorization and its
    /// signature.
    pub fn is_payment(&self, digest: B256, calldata: &alloy::primitives::Bytes) -> bool {
        if self.digest.is_empty() {
            return self.calldata == calldata.to_string();
        }
        self.digest == format!("{digest:#x}")
    }

    /// Every transaction this payment was signed as, the current one first.
    pub fn hashes(&self) -> impl Iterator<Item = &str> {
        self.tx_hash
            .as_deref()
            .into_iter()
            .chain(self.replaced.iter().rev().map(String::as_str))
    }

    /// What the payment moves, typed; `None` if a stored address or amount does not parse.
    pub fn transfer(&self) -> Option<crate::evm::Transfer> {
        use crate::evm::hex;
        Some(crate::evm::Transfer {
            asset: hex::address(&self.asset)?,
            from: hex::address(&self.payer)?,
            to: hex::address(&self.pay_to)?,
            value: self.value.parse().ok()?,
        })
    }

    /// Whether `hash` is one of this payment's own transactions.
    pub fn is_ours(&self, hash: B256) -> bool {
        let hash = format!("{hash:#x}");
        self.hashes().any(|h| h.eq_ignore_ascii_case(&hash))
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
