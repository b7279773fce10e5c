//! The payment lifecycle's shared steps: what `/settle`, the worker and replay all do to a record
//! (docs/settlement.md). Finishing a broadcast payment from its receipt ([`receipt`]), sending a
//! signed record's stored bytes, and expiring a record nothing was signed for. Each is a
//! conditional write on the state it leaves, so any of the three may race the others.
//!
//! The settle handler, the worker and replay import this module; it imports none of them.

pub mod receipt;

use alloy::primitives::{Bytes, B256};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::{
    evm::{hex, Chain, ChainError},
    protocol::Reason,
    store::{PaymentRecord, State, Store, StoreError},
};

/// A lifecycle step could not be done now; each keeps its cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record lacks what the step needs (it was written by something else than this code).
    #[error("{0}")]
    Malformed(String),
}

/// The attributes of a record settled by `tx`, the transaction the chain names as having used the
/// authorization (`lib/src/evm/attribution.rs`): `settled_by_other` unless it is one of ours.
pub fn settled_by(tx: B256, block: Option<u64>, ours: bool) -> Vec<(&'static str, AttributeValue)> {
    let mut fields = vec![("tx_hash", AttributeValue::S(format!("{tx:#x}")))];
    if let Some(block) = block {
        fields.push(("block_number", AttributeValue::N(block.to_string())));
    }
    if !ours {
        fields.push(("settled_by_other", AttributeValue::Bool(true)));
    }
    fields
}

/// What sending a signed record's stored bytes came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The node took the bytes (or already had them).
    Accepted,
    /// The node refused them (e.g. the nonce is used); re-sending the same bytes cannot help.
    Refused(String),
}

/// Sends a record's stored raw transaction, the same bytes every time (I3).
pub async fn send_stored(chain: &Chain, record: &PaymentRecord) -> Result<Sent, LifecycleError> {
    let raw: Bytes = record
        .raw_tx
        .as_deref()
        .and_then(hex::bytes)
        .ok_or_else(|| {
            LifecycleError::Malformed(format!("record {} has no raw_tx to send", record.id))
        })?;
    match chain.send_raw(raw).await? {
        Ok(()) => Ok(Sent::Accepted),
        // Already in the pool (a re-send of the same bytes): as good as sent.
        Err(message)
            if message.contains("already known") || message.contains("known transaction") =>
        {
            Ok(Sent::Accepted)
        }
        Err(message) => {
            tracing::error!(id = %record.id, %message, "the node refused a signed settlement");
            Ok(Sent::Refused(message))
        }
    }
}

/// Sends a `signed` record's bytes and moves it to `submitted`. A refused send leaves it `signed`
/// for the reconciliation to resolve against the chain. Returns what the send came to and whether
/// this call made the move.
pub async fn submit(
    chain: &Chain,
    store: &Store,
    record: &PaymentRecord,
) -> Result<(Sent, bool), LifecycleError> {
    let sent = send_stored(chain, record).await?;
    if sent != Sent::Accepted {
        return Ok((sent, false));
    }
    let moved = store
        .transition(&record.id, State::Signed, State::Submitted, &[])
        .await?;
    Ok((sent, moved))
}

/// `queued → expired`: the authorization's `validBefore` passed before anything was signed.
/// Returns whether this call made the move.
pub async fn expire_queued(store: &Store, id: &str) -> Result<bool, StoreError> {
    let fields = receipt::failure(
        Reason::ValidBefore,
        "the authorization expired before it could be sent",
    );
    store
        .transition(id, State::Queued, State::Expired, &fields)
        .await
}
