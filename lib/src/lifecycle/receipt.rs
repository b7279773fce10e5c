//! Finishing a broadcast payment from its receipt, and naming the reason of a revert.

use alloy::rpc::types::TransactionReceipt;

use super::{LifecycleError, UsedBy};
use crate::{
    evm::Chain,
    protocol::Reason,
    store::{Claimant, Ending, Failure, Mined, PaymentRecord, Store},
};

/// What a mined transaction of the payment's means for its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The payee was paid: by our transaction, or by `other`'s when ours lost to a front-runner.
    Settled { other: Option<Mined> },
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
pub fn verdict(to_token: bool, status: bool, transfer_seen: bool, other: Option<Mined>) -> Verdict {
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

impl Verdict {
    /// How the record ends, and the transaction it names: `ours` (the one whose receipt was
    /// found), or the front-runner's that paid the payee.
    pub fn ending(self, ours: Mined) -> (Mined, Ending) {
        match self {
            Verdict::Settled { other: None } => (ours, Ending::Settled { by_other: false }),
            Verdict::Settled { other: Some(other) } => (other, Ending::Settled { by_other: true }),
            Verdict::Cancelled => (
                ours,
                Ending::Expired(Failure::new(
                    Reason::ValidBefore,
                    "the authorization expired before its transaction was mined; a zero-value \
                     self-transfer used the lane nonce instead, and nothing was paid",
                )),
            ),
            Verdict::Reverted => (
                ours,
                Ending::Failed(Failure::new(
                    Reason::TransactionFailed,
                    "the settlement transaction reverted",
                )),
            ),
            Verdict::NoTransfer => (
                ours,
                Ending::Failed(Failure::new(
                    Reason::TransferEventMismatch,
                    "the transaction succeeded but emitted no matching Transfer event",
                )),
            ),
        }
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
) -> Result<Option<PaymentRecord>, LifecycleError> {
    if record.tx_hash.is_none() {
        return Err(LifecycleError::Malformed {
            id: record.id.clone(),
            problem: "is signed or submitted without a transaction hash",
        });
    }
    let mut mined = None;
    for hash in record.hashes() {
        if let Some(receipt) = chain.receipt(hash).await? {
            mined = Some(receipt);
            break;
        }
    }
    match mined {
        Some(receipt) => finish_mined(chain, store, record, receipt, claim)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// [`finish`] from a receipt already in hand (one of the record's transactions, mined): the
/// verdict, and the record as it is afterwards.
pub async fn finish_mined(
    chain: &Chain,
    store: &Store,
    record: &PaymentRecord,
    receipt: TransactionReceipt,
    claim: Option<&Claimant>,
) -> Result<PaymentRecord, LifecycleError> {
    let hash = receipt.transaction_hash;
    if !record.hashes().any(|h| h == hash) {
        return Err(LifecycleError::Malformed {
            id: record.id.clone(),
            problem: "was given a receipt of a transaction that is not its own",
        });
    }
    let transfer = record.transfer();
    // The contract the settlement calls (the token, or the exact Permit2 proxy); the `Transfer`
    // that proves the payment is the token's either way.
    let to_token = receipt.to == Some(record.target());
    let other = match to_token && !receipt.status() {
        true => paid_by_other(chain, record).await?,
        false => None,
    };
    let seen = transfer.in_logs(receipt.inner.logs());
    let ours = Mined {
        tx: hash,
        block: receipt.block_number,
    };
    let verdict = verdict(to_token, receipt.status(), seen, other);
    let reverted = verdict == Verdict::Reverted;
    let (decided_by, ending) = verdict.ending(ours);
    match store.finish(&record.id, decided_by, &ending, claim).await? {
        Some(finished) => {
            // Counted once per transaction: by whoever records its outcome.
            crate::metrics::gas_used(&record.network, receipt.gas_used);
            if reverted && record.signed_by_contract() {
                count_revert(store, record, receipt.gas_used).await;
            }
            Ok(finished)
        }
        // A concurrent follower (or replay) moved it first: the record says what happened.
        None => store
            .get(&record.id)
            .await?
            .ok_or(LifecycleError::Malformed {
                id: record.id.clone(),
                problem: "vanished while it was being finished",
            }),
    }
}

/// A contract wallet's settlement passed the worker's simulation and reverted on chain: one more in
/// its payer's run of reverts, which past the limit refuses the payer (docs/security.md). A count
/// that cannot be written is logged, not retried: the record is already final, and the next revert
/// is counted again.
async fn count_revert(store: &Store, record: &PaymentRecord, gas_used: u64) {
    let now = crate::clock::unix_now();
    match store.count_revert(&record.network, record.payer, now).await {
        Ok(standing) => {
            let refused = crate::store::refused_until(&standing, now, store.payer_policy());
            tracing::warn!(
                id = %record.id, payer = %record.payer, reverts = standing.reverts, gas_used,
                refused_until = ?refused,
                "a contract wallet's settlement reverted on chain after passing simulation"
            );
            if refused.is_some() && standing.reverts == store.payer_policy().limit {
                crate::metrics::payer_refused(&record.network);
            }
        }
        Err(e) => {
            tracing::error!(id = %record.id, payer = %record.payer, error = %e, "a reverted settlement could not be counted against its payer");
        }
    }
}

/// The transaction that used the record's authorization, if it is not one of ours and it paid
/// the payee exactly.
async fn paid_by_other(
    chain: &Chain,
    record: &PaymentRecord,
) -> Result<Option<Mined>, LifecycleError> {
    Ok(match super::used_by(chain, record).await? {
        UsedBy::Theirs { mined, paid: true } => Some(mined),
        _ => None,
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
    use alloy::primitives::B256;

    use super::*;

    fn mined(byte: u8) -> Mined {
        Mined {
            tx: B256::repeat_byte(byte),
            block: Some(u64::from(byte)),
        }
    }

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
        assert_eq!(
            verdict(true, false, false, Some(mined(7))),
            Verdict::Settled {
                other: Some(mined(7))
            }
        );
    }

    #[test]
    fn a_mined_self_transfer_is_the_cancellation() {
        assert_eq!(verdict(false, true, false, None), Verdict::Cancelled);
    }

    #[test]
    fn a_settlement_names_our_transaction_or_the_front_runners() {
        assert_eq!(
            Verdict::Settled { other: None }.ending(mined(1)),
            (mined(1), Ending::Settled { by_other: false })
        );
        assert_eq!(
            Verdict::Settled {
                other: Some(mined(2))
            }
            .ending(mined(1)),
            (mined(2), Ending::Settled { by_other: true })
        );
    }

    #[test]
    fn a_cancellation_expires_and_a_revert_or_missing_transfer_fails_naming_ours() {
        let (tx, ending) = Verdict::Cancelled.ending(mined(1));
        assert!(
            tx == mined(1)
                && matches!(ending, Ending::Expired(f) if f.reason == Reason::ValidBefore)
        );
        let (tx, ending) = Verdict::Reverted.ending(mined(1));
        assert!(
            tx == mined(1)
                && matches!(ending, Ending::Failed(f) if f.reason == Reason::TransactionFailed)
        );
        let (tx, ending) = Verdict::NoTransfer.ending(mined(1));
        assert!(
            tx == mined(1)
                && matches!(ending, Ending::Failed(f) if f.reason == Reason::TransferEventMismatch)
        );
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
