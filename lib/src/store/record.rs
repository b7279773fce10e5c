//! The payment record, typed, and its id. How it is written as a DynamoDB item is [`super::item`]'s
//! business alone.

use alloy::primitives::{Address, Bytes, B256, U256};
use serde::{Deserialize, Serialize};

use super::item;
use crate::{evm::Transfer, protocol::Reason};

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

/// One authorization's id: network, token, payer and nonce. The same authorization always has the
/// same id, whoever submits it and however often. Stored as `<network>#<token>#<payer>#<nonce>`,
/// hex in lowercase, for an EIP-3009 authorization (its `bytes32` nonce), and as
/// `<network>#<token>#<payer>#<nonce>#permit2` for an `exact` Permit2 payment, whose `uint256`
/// Permit2 nonce is written as its 32 big-endian bytes. The suffix keeps the two apart: the token
/// tracks EIP-3009 nonces and Permit2 tracks its own per owner, so the same 32 bytes under both are
/// two different authorizations, and each must have its own record (docs/settlement.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentId {
    text: String,
    /// The nonce, the id's fourth part.
    nonce: B256,
    /// Whether the nonce is a Permit2 nonce (the payment goes through the exact Permit2 proxy).
    permit2: bool,
}

/// The last part of a Permit2 payment's id.
const PERMIT2_SUFFIX: &str = "permit2";

impl PaymentId {
    /// An EIP-3009 authorization's id.
    pub fn new(network: &str, asset: Address, payer: Address, nonce: B256) -> Self {
        PaymentId {
            text: format!("{network}#{asset:#x}#{payer:#x}#{nonce:#x}"),
            nonce,
            permit2: false,
        }
    }

    /// An `exact` Permit2 payment's id: its Permit2 nonce, as 32 big-endian bytes, and the suffix.
    pub fn permit2(network: &str, asset: Address, payer: Address, nonce: U256) -> Self {
        let nonce = B256::from(nonce);
        PaymentId {
            text: format!("{network}#{asset:#x}#{payer:#x}#{nonce:#x}#{PERMIT2_SUFFIX}"),
            nonce,
            permit2: true,
        }
    }

    /// An id as stored or queued; `None` if it is not one (a `payment-identifier` binding's key,
    /// or anything else).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('#');
        let (Some(network), Some(asset), Some(payer), Some(nonce)) = (
            parts.next(),
            parts.next().and_then(crate::evm::hex::address),
            parts.next().and_then(crate::evm::hex::address),
            parts.next().and_then(crate::evm::hex::b256),
        ) else {
            return None;
        };
        match (parts.next(), parts.next()) {
            (None, _) => Some(PaymentId::new(network, asset, payer, nonce)),
            (Some(PERMIT2_SUFFIX), None) => Some(PaymentId::permit2(
                network,
                asset,
                payer,
                U256::from_be_bytes(nonce.0),
            )),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The authorization's nonce: EIP-3009's, or a Permit2 nonce's 32 big-endian bytes.
    pub fn nonce(&self) -> B256 {
        self.nonce
    }

    /// Whether this is an `exact` Permit2 payment's id.
    pub fn is_permit2(&self) -> bool {
        self.permit2
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a payment ended without paying, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

/// The longest message a record keeps, in bytes: a node's revert text can be any length, and a
/// record must stay far below DynamoDB's 400 KB item limit, or the write that ends it fails forever.
pub const MESSAGE_LIMIT: usize = 1024;

impl Failure {
    /// A failure, its message cut to [`MESSAGE_LIMIT`] bytes (on a character boundary).
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MESSAGE_LIMIT {
            let mut end = MESSAGE_LIMIT - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        Failure { reason, message }
    }
}

/// The mined transaction that decided a payment, and its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub tx: B256,
    pub block: Option<u64>,
}

/// How a broadcast payment ended, as its receipt (or the chain's record of its authorization) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The payee was paid; `by_other` when the transaction is not this facilitator's.
    Settled {
        by_other: bool,
    },
    Failed(Failure),
    Expired(Failure),
}

/// A payment as stored in `x402-payments` (docs/settlement.md "The record"). Times are unix
/// milliseconds, except `valid_before` and `expires_at` (seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    #[serde(with = "item::id")]
    pub id: PaymentId,
    pub state: State,
    /// The network's CAIP-2 id (answers echo the network as each request names it).
    pub network: String,
    #[serde(with = "item::hex")]
    pub asset: Address,
    #[serde(with = "item::hex")]
    pub payer: Address,
    #[serde(with = "item::hex")]
    pub pay_to: Address,
    #[serde(with = "item::decimal")]
    pub value: U256,
    pub valid_before: u64,
    /// The settlement's call: `transferWithAuthorization` (to the token), or the exact Permit2
    /// proxy's `settle` (to [`PaymentRecord::target`]).
    #[serde(with = "item::hex")]
    pub calldata: Bytes,
    /// The contract the settlement transaction calls, when it is not `asset`: the exact Permit2
    /// proxy for a Permit2 payment. Absent for EIP-3009 payments (and in records written before
    /// it existed), which call the token. Read it through [`PaymentRecord::target`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::opt_hex"
    )]
    pub target: Option<Address>,
    pub lane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_nonce: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::opt_hex"
    )]
    pub raw_tx: Option<Bytes>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::opt_hex"
    )]
    pub tx_hash: Option<B256>,
    /// The lane's address, written with the transaction: whose nonce `lane_nonce` is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::opt_hex"
    )]
    pub sender: Option<Address>,
    /// Hashes of this payment's earlier transactions, oldest first: superseded by a replacement at
    /// the same lane nonce (a fee bump or a cancellation), or signed at a lane nonce that another
    /// transaction used. At most one transaction per lane nonce can be mined, and it may be any of
    /// them, so the receipt is looked for under every hash.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "item::hex_list"
    )]
    pub replaced: Vec<B256>,
    /// The block of the mined transaction, once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::reason"
    )]
    pub reason: Option<Reason>,
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
    /// is answered from this record only if its payment has the same digest (DESIGN I2). Absent in
    /// records written before digests were kept: those are compared by `calldata`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "item::opt_hex"
    )]
    pub digest: Option<B256>,
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
    pub value: U256,
    pub valid_before: u64,
    pub calldata: &'a Bytes,
    /// The contract `calldata` calls when it is not `asset` ([`PaymentRecord::target`]).
    pub target: Option<Address>,
    pub digest: B256,
    pub lane: &'a str,
}

impl PaymentRecord {
    /// The record of a payment just accepted: `queued`, open, nothing signed. The only place a
    /// record is built.
    pub fn queued(new: &NewPayment<'_>, now_ms: u64) -> Self {
        PaymentRecord {
            id: new.id.clone(),
            state: State::Queued,
            network: new.network.to_owned(),
            asset: new.asset,
            payer: new.payer,
            pay_to: new.pay_to,
            value: new.value,
            valid_before: new.valid_before,
            calldata: new.calldata.clone(),
            target: new.target,
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
            open_shard: Some(super::OPEN_SHARD.to_owned()),
            expires_at: new.valid_before.saturating_add(RETENTION_SECS),
            digest: Some(new.digest),
            claimed_by: None,
            settled_by_other: false,
        }
    }

    /// The record of a payment found already executed on chain by `mined`, somebody else's
    /// transaction that paid the payee: `settled` at once and claimed by `claimant`.
    pub fn settled_by_other(
        new: &NewPayment<'_>,
        mined: Mined,
        claimant: &Claimant,
        now_ms: u64,
    ) -> Self {
        PaymentRecord {
            state: State::Settled,
            tx_hash: Some(mined.tx),
            open_shard: None,
            claimed_by: Some(claimant.stored()),
            settled_by_other: true,
            block_number: mined.block,
            ..Self::queued(new, now_ms)
        }
    }

    /// Whether `digest` (of a request's payment) is the payment this record is for. A record kept
    /// from before digests compares the calldata, which encodes the whole authorization and its
    /// signature.
    pub fn is_payment(&self, digest: B256, calldata: &Bytes) -> bool {
        match self.digest {
            Some(own) => own == digest,
            None => self.calldata == *calldata,
        }
    }

    /// Every transaction this payment was signed as, the current one first.
    pub fn hashes(&self) -> impl Iterator<Item = B256> + '_ {
        self.tx_hash
            .into_iter()
            .chain(self.replaced.iter().rev().copied())
    }

    /// What the payment moves.
    pub fn transfer(&self) -> Transfer {
        Transfer {
            asset: self.asset,
            from: self.payer,
            to: self.pay_to,
            value: self.value,
        }
    }

    /// The contract the settlement transaction calls: `target`, or the token when there is none.
    pub fn target(&self) -> Address {
        self.target.unwrap_or(self.asset)
    }

    /// Whether the payment's signature may be a contract wallet's: one the token (or Permit2) asks
    /// the payer's code about when the transaction runs, rather than checks itself. A record whose
    /// network does not parse is taken for a wallet's (the larger cap, the stricter attribution).
    pub fn signed_by_contract(&self) -> bool {
        let Some(chain_id) = self.chain_id() else {
            return true;
        };
        !crate::evm::permit2::signer::signed_by_key(&self.calldata, chain_id)
    }

    /// The EVM chain id of the record's network; `None` if `network` is no `eip155:` id.
    pub fn chain_id(&self) -> Option<u64> {
        crate::protocol::EvmNetwork::from_caip2(&self.network)
            .ok()
            .map(|n| n.chain_id())
    }

    /// Whether `hash` is one of this payment's own transactions.
    pub fn is_ours(&self, hash: B256) -> bool {
        self.hashes().any(|h| h == hash)
    }

    /// The authorization's nonce ([`PaymentId::nonce`]).
    pub fn authorization_nonce(&self) -> B256 {
        self.id.nonce()
    }

    /// The reason for an authorization found already used: `permit2_invalid_nonce` for a Permit2
    /// payment, as the reference answers, else `invalid_exact_evm_nonce_already_used`.
    pub fn used_reason(&self) -> Reason {
        match self.id.is_permit2() {
            true => Reason::Permit2InvalidNonce,
            false => Reason::NonceAlreadyUsed,
        }
    }

    /// The failure a terminal record keeps; for a record without one, what its state says.
    pub fn failure(&self) -> Failure {
        Failure::new(
            self.reason.unwrap_or(Reason::UnexpectedSettleError),
            self.message
                .clone()
                .unwrap_or_else(|| format!("the payment is {}", self.state.as_str())),
        )
    }
}

/// A record in `state` for the decision tests: token, payer and payee of the local stack, lane
/// `lane-0`, `validBefore` 1000 s, and, once signed, transaction `0x0909…`.
#[cfg(test)]
pub(crate) fn sample(state: State) -> PaymentRecord {
    use alloy::primitives::address;
    let (token, payer) = (
        address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    );
    let id = PaymentId::new("eip155:84532", token, payer, B256::repeat_byte(1));
    let calldata = Bytes::from(vec![0xe3, 0xee, 0x16, 0x0e]);
    let queued = PaymentRecord::queued(
        &NewPayment {
            id: &id,
            network: "eip155:84532",
            asset: token,
            payer,
            pay_to: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            value: U256::from(10_000),
            valid_before: 1_000,
            calldata: &calldata,
            target: None,
            digest: B256::repeat_byte(2),
            lane: "lane-0",
        },
        0,
    );
    PaymentRecord {
        state,
        tx_hash: (state != State::Queued).then(|| B256::repeat_byte(9)),
        ..queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    fn id() -> PaymentId {
        PaymentId::new(
            "eip155:84532",
            address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            B256::repeat_byte(0xab),
        )
    }

    #[test]
    fn ids_are_lowercase_and_stable() {
        assert_eq!(
            id().as_str(),
            format!(
                "eip155:84532#0x036cbd53842c5426634e7929541ec2318f3dcf7e#0x70997970c51812dc3a010c7d01b50e0d17dc79c8#0x{}",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn an_id_parses_back_to_itself_and_nothing_else_parses() {
        assert_eq!(PaymentId::parse(id().as_str()), Some(id()));
        assert_eq!(id().nonce(), B256::repeat_byte(0xab));
        assert_eq!(PaymentId::parse("pid#eip155:84532#0xabc#key"), None);
        assert_eq!(PaymentId::parse(&format!("{}#more", id())), None);
    }

    #[test]
    fn a_permit2_id_differs_from_the_eip3009_id_of_the_same_nonce_bytes_and_parses_back() {
        let eip3009 = id();
        let permit2 = PaymentId::permit2(
            "eip155:84532",
            address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            U256::from_be_bytes([0xab; 32]),
        );
        assert_ne!(permit2, eip3009);
        assert_eq!(permit2.as_str(), format!("{eip3009}#permit2"));
        assert_eq!(permit2.nonce(), eip3009.nonce());
        assert!(permit2.is_permit2() && !eip3009.is_permit2());
        assert_eq!(PaymentId::parse(permit2.as_str()), Some(permit2.clone()));
        assert_eq!(PaymentId::parse(&format!("{permit2}#more")), None);
        let small = PaymentId::permit2("eip155:84532", Address::ZERO, Address::ZERO, U256::from(7));
        assert!(small
            .as_str()
            .ends_with(&format!("#0x{}07#permit2", "00".repeat(31))));
    }

    #[test]
    fn a_record_without_a_target_calls_its_token() {
        let mut record = sample(State::Queued);
        assert_eq!(record.target(), record.asset);
        record.target = Some(crate::evm::abi::EXACT_PERMIT2_PROXY);
        assert_eq!(record.target(), crate::evm::abi::EXACT_PERMIT2_PROXY);
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

    #[test]
    fn a_long_failure_message_is_cut_on_a_character_boundary() {
        let failure = Failure::new(Reason::TransactionFailed, "é".repeat(4000));
        assert!(failure.message.len() <= MESSAGE_LIMIT);
        assert!(failure.message.ends_with("..."));
        let short = Failure::new(Reason::TransactionFailed, "reverted");
        assert_eq!(short.message, "reverted");
    }
}
