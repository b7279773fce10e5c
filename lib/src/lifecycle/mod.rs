//! The payment lifecycle's shared steps: what `/settle`, the worker and replay all do to a record
//! (docs/settlement.md). Finishing a broadcast payment from its receipt ([`receipt`]), sending a
//! signed record's stored bytes, and expiring a record nothing was signed for. Each is a
//! conditional write on the state it leaves, so any of the three may race the others.
//!
//! The settle handler, the worker and replay import this module; it imports none of them.

pub mod receipt;

use crate::{
    evm::{Chain, ChainError, SyncSent},
    protocol::Reason,
    store::{Failure, Mined, PaymentId, PaymentRecord, State, Store, StoreError},
};

/// A lifecycle step could not be done now; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record lacks what the step needs (it was written by something else than this code).
    #[error("record {id} {problem}")]
    Malformed {
        id: PaymentId,
        problem: &'static str,
    },
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
    let raw = stored_bytes(record)?;
    Ok(match chain.send_raw(raw).await? {
        Ok(()) => Sent::Accepted,
        Err(message) => refusal(record, message),
    })
}

/// What sending a signed record's bytes and waiting for their receipt came to.
#[derive(Debug)]
pub enum Delivered {
    /// Mined while the send waited: the receipt, to finish the record from.
    Mined(Box<alloy::rpc::types::TransactionReceipt>),
    /// Sent; the receipt is to be looked up.
    Sent(Sent),
}

/// [`send_stored`] for a caller that waits for the receipt anyway (`/settle`, for a payment it
/// signed): asks the node to send and wait in one request (`eth_sendRawTransactionSync`,
/// [`Chain::send_raw_sync`]) until `until` at the latest, and sends the usual way when that gives
/// no usable answer.
pub async fn send_stored_and_wait(
    chain: &Chain,
    record: &PaymentRecord,
    until: std::time::Instant,
) -> Result<Delivered, LifecycleError> {
    let raw = stored_bytes(record)?;
    Ok(match chain.send_raw_sync(&raw, until).await {
        SyncSent::Mined(receipt) => Delivered::Mined(receipt),
        SyncSent::InPool => Delivered::Sent(Sent::Accepted),
        SyncSent::Refused(message) => Delivered::Sent(refusal(record, message)),
        SyncSent::Unanswered => Delivered::Sent(send_stored(chain, record).await?),
    })
}

fn stored_bytes(record: &PaymentRecord) -> Result<alloy::primitives::Bytes, LifecycleError> {
    record.raw_tx.clone().ok_or(LifecycleError::Malformed {
        id: record.id.clone(),
        problem: "has no raw_tx to send",
    })
}

/// A node's refusal of a record's bytes, as [`Sent`] says it.
fn refusal(record: &PaymentRecord, message: String) -> Sent {
    // Already in the pool (a re-send of the same bytes): as good as sent.
    if message.contains("already known") || message.contains("known transaction") {
        return Sent::Accepted;
    }
    tracing::error!(id = %record.id, %message, "the node refused a signed settlement");
    Sent::Refused(message)
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
    let moved = store.submit(&record.id).await?;
    Ok((sent, moved))
}

/// `queued → expired`: the authorization's `validBefore` passed before anything was signed.
/// Returns whether this call made the move.
pub async fn expire_queued(store: &Store, id: &PaymentId) -> Result<bool, StoreError> {
    let failure = Failure::new(
        Reason::ValidBefore,
        "the authorization expired before it could be sent",
    );
    store.expire(id, State::Queued, &failure).await
}

/// Who used a payment's authorization, as the chain's `AuthorizationUsed` log says
/// ([`crate::evm::attribution`]): asked when the token has the authorization as used and no
/// receipt of ours settles the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsedBy {
    /// One of this payment's own transactions (a lagging node hid its receipt); `paid`: it moved
    /// exactly the payment.
    Ours { mined: Mined, paid: bool },
    /// Somebody else's transaction (a front-runner's); `paid` as above.
    Theirs { mined: Mined, paid: bool },
    /// No log within the lookback: cancelled on chain, or used before the lookback.
    Nobody,
}

/// Finds who used the record's authorization.
///
/// A Permit2 nonce leaves no log of its use (Permit2 only flips a bit), so for a Permit2 payment
/// only the record's own transactions can be named: their receipts are looked for, and a mined
/// one is `Ours` (`paid` as for EIP-3009). Anything else is `Nobody`: a front-runner that called
/// the proxy with the same permit is not attributed, and the payment fails with
/// `permit2_invalid_nonce` (docs/settlement.md, "Permit2").
pub async fn used_by(chain: &Chain, record: &PaymentRecord) -> Result<UsedBy, LifecycleError> {
    if record.id.is_permit2() {
        return used_by_own(chain, record).await;
    }
    let transfer = record.transfer();
    let found =
        crate::evm::attribution::find_use(chain, &transfer, record.authorization_nonce()).await?;
    Ok(match found {
        None => UsedBy::Nobody,
        Some(u) => classify(
            record,
            Mined {
                tx: u.tx,
                block: u.receipt.block_number,
            },
            transfer.made_by(&u.receipt),
        ),
    })
}

/// The first of the record's own transactions that the chain has a receipt for.
async fn used_by_own(chain: &Chain, record: &PaymentRecord) -> Result<UsedBy, LifecycleError> {
    let transfer = record.transfer();
    for hash in record.hashes() {
        if let Some(receipt) = chain.receipt(hash).await? {
            let mined = Mined {
                tx: hash,
                block: receipt.block_number,
            };
            return Ok(UsedBy::Ours {
                mined,
                paid: receipt.to == Some(record.target()) && transfer.made_by(&receipt),
            });
        }
    }
    Ok(UsedBy::Nobody)
}

/// Whether the record's authorization is used on chain: the token's `authorizationState` for
/// EIP-3009, Permit2's nonce bitmap for a Permit2 payment (a bit set by a settlement or by the
/// owner's `invalidateUnorderedNonces`).
pub async fn authorization_used(chain: &Chain, record: &PaymentRecord) -> Result<bool, String> {
    use alloy::sol_types::SolCall;

    use crate::evm::abi::{IEip3009, IPermit2, PERMIT2};
    let nonce = record.authorization_nonce();
    let (to, data) = match record.id.is_permit2() {
        true => (
            PERMIT2,
            IPermit2::nonceBitmapCall {
                owner: record.payer,
                wordPos: alloy::primitives::U256::from_be_bytes(nonce.0) >> 8,
            }
            .abi_encode(),
        ),
        false => (
            record.asset,
            IEip3009::authorizationStateCall {
                authorizer: record.payer,
                nonce,
            }
            .abi_encode(),
        ),
    };
    let data = match chain
        .call(None, to, data.into())
        .await
        .map_err(|e| e.to_string())?
    {
        crate::evm::CallOutcome::Returned(data) => data,
        crate::evm::CallOutcome::Reverted { message } => {
            return Err(format!(
                "reading whether the authorization is used reverted: {message}"
            ))
        }
    };
    match record.id.is_permit2() {
        true => IPermit2::nonceBitmapCall::abi_decode_returns(&data)
            .map(|word| word.bit(usize::from(nonce.0[31])))
            .map_err(|e| format!("nonceBitmap answered {data}: {e}")),
        false => IEip3009::authorizationStateCall::abi_decode_returns(&data)
            .map_err(|e| format!("authorizationState answered {data}: {e}")),
    }
}

/// Whose `mined` is (pure).
pub fn classify(record: &PaymentRecord, mined: Mined, paid: bool) -> UsedBy {
    match record.is_ours(mined.tx) {
        true => UsedBy::Ours { mined, paid },
        false => UsedBy::Theirs { mined, paid },
    }
}

/// The EIP-1559 transaction inside a stored raw transaction (EIP-2718 encoded): what a
/// replacement copies and outbids, and what replay compares with the chain's base fee. `None` for
/// anything else.
pub fn decode_eip1559(raw: &alloy::primitives::Bytes) -> Option<alloy::consensus::TxEip1559> {
    use alloy::eips::eip2718::Decodable2718;
    let envelope = alloy::consensus::TxEnvelope::decode_2718(&mut raw.as_ref()).ok()?;
    envelope.as_eip1559().map(|signed| signed.tx().clone())
}
