//! Finishing a broadcast payment from its receipt, and naming the reason of a revert.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::{
    evm::{attribution, hex, Chain, Transfer},
    protocol::Reason,
    store::{Claimant, PaymentRecord, State, Store},
};

/// What a mined transaction of the payment's means for its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The payee was paid: by our transaction, or by `other`'s when ours lost to a front-runner.
    Settled {
        other: Option<alloy::primitives::B256>,
    },
    /// What was mined is the zero-value self-transfer that cancelled an expired authorization.
    Cancelled,
    /// Our transaction reverted, and nobody else's paid the payee.
    Reverted,
    /// Our transaction succeeded without the matching `Transfer`.
    NoTransfer,
}

/// The verdict on a mined transaction of the payment (pure: the facts are read before). `other`
/// is the transaction that used the authorization, when ours reverted and someone else's made
/// exactly the payment.
pub fn verdict(
    to_token: bool,
    status: bool,
    transfer_seen: bool,
    other: Option<alloy::primitives::B256>,
) -> Verdict {
    match (to_token, status, transfer_seen) {
        (false, _, _) => Verdict::Cancelled,
        (true, true, true) => Verdict::Settled { other: None },
        (true, true, false) => Verdict::NoTransfer,
        (true, false, _) => match other {
            Some(other) => Verdict::Settled { other: Some(other) },
            None => Verdict::Reverted,
        },
    }
}

/// Looks for the receipt of a `signed` or `submitted` record under each of its hashes (a
/// replacement may have lost to the transaction it replaced) and, if one is mined, moves the record
/// on by its [`verdict`] (DESIGN I5). A reverted transaction of ours is checked against the chain's
/// record of who used the authorization: a front-runner's transaction that paid the payee settles
/// the payment with its hash. `claim`: a `/settle` follower claims the success it records (DESIGN
/// I2). Returns the record as it is afterwards, or `None` while nothing is mined.
pub async fn finish(
    chain: &Chain,
    store: &Store,
    record: &PaymentRecord,
    claim: Option<&Claimant>,
) -> Result<Option<PaymentRecord>, String> {
    if record.tx_hash.is_none() {
        return Err(format!(
            "record {} is {} without a transaction hash",
            record.id,
            record.state.as_str()
        ));
    }
    let transfer = record
        .transfer()
        .ok_or_else(|| format!("record {} has a malformed payment", record.id))?;
    let mut mined = None;
    for text in record.hashes() {
        let hash = hex::b256(text)
            .ok_or_else(|| format!("record {} has a malformed hash {text}", record.id))?;
        if let Some(receipt) = chain.receipt(hash).await.map_err(|e| e.to_string())? {
            mined = Some((text.to_owned(), receipt));
            break;
        }
    }
    let Some((hash, receipt)) = mined else {
        return Ok(None);
    };
    let to_token = receipt.to == Some(transfer.asset);
    let other = if to_token && !receipt.status() {
        paid_by_other(chain, record, &transfer).await?
    } else {
        None
    };
    let verdict = verdict(
        to_token,
        receipt.status(),
        transfer.in_logs(receipt.inner.logs()),
        other.map(|(tx, _)| tx),
    );
    let mut fields = Vec::new();
    let (to, tx, block) = match verdict {
        Verdict::Settled { other: None } => (State::Settled, hash, receipt.block_number),
        Verdict::Settled { other: Some(tx) } => {
            fields.push(("settled_by_other", AttributeValue::Bool(true)));
            (
                State::Settled,
                format!("{tx:#x}"),
                other.and_then(|(_, b)| b),
            )
        }
        Verdict::Cancelled => {
            fields.extend(failure(
                Reason::ValidBefore,
                "the authorization expired before its transaction was mined; a zero-value \
                 self-transfer used the lane nonce instead, and nothing was paid",
            ));
            (State::Expired, hash, receipt.block_number)
        }
        Verdict::Reverted => {
            fields.extend(failure(
                Reason::TransactionFailed,
                "the settlement transaction reverted",
            ));
            (State::Failed, hash, receipt.block_number)
        }
        Verdict::NoTransfer => {
            fields.extend(failure(
                Reason::TransferEventMismatch,
                "the transaction succeeded but emitted no matching Transfer event",
            ));
            (State::Failed, hash, receipt.block_number)
        }
    };
    // The record names the transaction that decided it, always: an earlier one may have won over
    // its replacement, and the caller's copy of the record may predate a replacement.
    fields.push(("tx_hash", AttributeValue::S(tx)));
    if let Some(block) = block {
        fields.push(("block_number", AttributeValue::N(block.to_string())));
    }
    match store
        .finish_broadcast_and_read(&record.id, to, &fields, claim)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(finished) => {
            // Counted once per transaction: by whoever records its outcome.
            crate::metrics::gas_used(&record.network, receipt.gas_used);
            Ok(Some(finished))
        }
        // A concurrent follower (or replay) moved it first: the record says what happened.
        None => store.get(&record.id).await.map_err(|e| e.to_string()),
    }
}

/// The transaction that used the record's authorization, if it is not one of ours and it paid
/// the payee exactly; with its block.
pub(crate) async fn paid_by_other(
    chain: &Chain,
    record: &PaymentRecord,
    transfer: &Transfer,
) -> Result<Option<(alloy::primitives::B256, Option<u64>)>, String> {
    let nonce = record
        .authorization_nonce()
        .and_then(hex::b256)
        .ok_or_else(|| format!("record {} has a malformed nonce", record.id))?;
    let found = attribution::find_use(chain, transfer, nonce)
        .await
        .map_err(|e| e.to_string())?;
    Ok(found
        .filter(|u| !record.is_ours(u.tx) && transfer.made_by(&u.receipt))
        .map(|u| (u.tx, u.receipt.block_number)))
}

/// The reason and message attributes of a terminal failure.
pub(crate) fn failure(reason: Reason, message: &str) -> [(&'static str, AttributeValue); 2] {
    [
        ("reason", AttributeValue::S(reason.as_str().to_owned())),
        ("message", AttributeValue::S(message.to_owned())),
    ]
}

/// The x402 reason for a revert message from an EIP-3009 token (USDC's and ours), as the reference
/// maps them (x402-protocol.md §6.4 step 7).
pub fn reason_from_revert(message: &str) -> Reason {
    let m = message.to_ascii_lowercase();
    if m.contains("expired") || m.contains("valid before") {
        Reason::ValidBefore
    } else if m.contains("not yet valid") {
        Reason::ValidAfter
    } else if m.contains("used or canceled") || m.contains("used or cancelled") {
        Reason::NonceAlreadyUsed
    } else if m.contains("balance") {
        Reason::InsufficientBalance
    } else if m.contains("signature") {
        Reason::InvalidExactEvmSignature
    } else {
        Reason::TransactionFailed
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::B256;

    use super::*;

    #[test]
    fn a_successful_transfer_with_its_event_settles() {
        assert_eq!(
            verdict(true, true, true, None),
            Verdict::Settled { other: None }
        );
    }

    #[test]
    fn success_without_the_transfer_event_fails() {
        assert_eq!(verdict(true, true, false, None), Verdict::NoTransfer);
    }

    #[test]
    fn a_revert_fails_unless_a_front_runner_paid_the_payee() {
        assert_eq!(verdict(true, false, false, None), Verdict::Reverted);
        let other = B256::repeat_byte(7);
        assert_eq!(
            verdict(true, false, false, Some(other)),
            Verdict::Settled { other: Some(other) }
        );
    }

    #[test]
    fn a_mined_self_transfer_is_the_cancellation() {
        assert_eq!(verdict(false, true, false, None), Verdict::Cancelled);
    }

    #[test]
    fn reverts_map_to_reasons() {
        assert_eq!(
            reason_from_revert("execution reverted: EIP3009: authorization is expired"),
            Reason::ValidBefore
        );
        assert_eq!(
            reason_from_revert("FiatTokenV2: authorization is not yet valid"),
            Reason::ValidAfter
        );
        assert_eq!(
            reason_from_revert("EIP3009: authorization is used or canceled"),
            Reason::NonceAlreadyUsed
        );
        assert_eq!(
            reason_from_revert("ERC20: transfer amount exceeds balance"),
            Reason::InsufficientBalance
        );
        assert_eq!(
            reason_from_revert("EIP3009: invalid signature"),
            Reason::InvalidExactEvmSignature
        );
        assert_eq!(reason_from_revert("out of gas"), Reason::TransactionFailed);
    }
}
