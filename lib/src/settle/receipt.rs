//! Finishing a broadcast payment from its receipt, and naming the reason of a revert.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::{
    evm::{abi::IEip3009, hex, Chain},
    protocol::Reason,
    store::{PaymentRecord, State, Store},
};

/// Looks for the receipt of a `signed` or `submitted` record under each of its hashes (a
/// replacement may have lost to the transaction it replaced) and, if one is mined, moves the record
/// on: `settled` for status 1 with a `Transfer(payer, payTo, value)` from the token (DESIGN I5);
/// `expired` when what was mined is the cancelling self-transfer of an expired authorization;
/// `failed` otherwise. Returns the record as it is afterwards, or `None` while nothing is mined.
pub async fn finish(
    chain: &Chain,
    store: &Store,
    record: &PaymentRecord,
) -> Result<Option<PaymentRecord>, String> {
    if record.tx_hash.is_none() {
        return Err(format!(
            "record {} is {} without a transaction hash",
            record.id,
            record.state.as_str()
        ));
    }
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
    let is_payment = hex::address(&record.asset).is_some_and(|asset| receipt.to == Some(asset));
    let (to, mut fields): (State, Vec<(&str, AttributeValue)>) = if !is_payment {
        (
            State::Expired,
            failure(
                Reason::ValidBefore,
                "the authorization expired before its transaction was mined; a zero-value \
                 self-transfer used the lane nonce instead, and nothing was paid",
            ),
        )
    } else if !receipt.status() {
        (
            State::Failed,
            failure(
                Reason::TransactionFailed,
                "the settlement transaction reverted",
            ),
        )
    } else if transfer_matches(record, receipt.inner.logs()) {
        (State::Settled, vec![])
    } else {
        (
            State::Failed,
            failure(
                Reason::TransferEventMismatch,
                "the transaction succeeded but emitted no matching Transfer event",
            ),
        )
    };
    // The record names the transaction that was mined, always: an earlier one may have won over
    // its replacement, and the caller's copy of the record may predate a replacement.
    fields.push(("tx_hash", AttributeValue::S(hash)));
    if let Some(block) = receipt.block_number {
        fields.push(("block_number", AttributeValue::N(block.to_string())));
    }
    match store
        .finish_broadcast_and_read(&record.id, to, &fields)
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

fn failure(reason: Reason, message: &str) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("reason", AttributeValue::S(reason.as_str().to_owned())),
        ("message", AttributeValue::S(message.to_owned())),
    ]
}

/// A `Transfer(payer → payTo, value)` log emitted by the token.
fn transfer_matches(record: &PaymentRecord, logs: &[alloy::rpc::types::Log]) -> bool {
    let (Some(asset), Some(payer), Some(pay_to)) = (
        hex::address(&record.asset),
        hex::address(&record.payer),
        hex::address(&record.pay_to),
    ) else {
        return false;
    };
    let Ok(value) = record.value.parse::<alloy::primitives::U256>() else {
        return false;
    };
    logs.iter().filter(|log| log.address() == asset).any(|log| {
        log.log_decode::<IEip3009::Transfer>()
            .map(|t| {
                t.inner.data.from == payer
                    && t.inner.data.to == pay_to
                    && t.inner.data.value == value
            })
            .unwrap_or(false)
    })
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
    use super::*;

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
