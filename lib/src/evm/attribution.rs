//! Who used an EIP-3009 authorization, and whether that paid the payee: the chain's word, for the
//! cases where our own receipt does not settle the question (docs/settlement.md, "Attribution").
//!
//! The token accepts an authorization once, and logs `AuthorizationUsed(authorizer, nonce)` in the
//! transaction that used it. That transaction may be ours (and a lagging node hid its receipt), or
//! somebody else's: a front-runner who copied the signed authorization from a payment header or
//! from our pending transaction. Either way, if it moved exactly the value from the payer to the
//! payee, the payee was paid.

use alloy::{
    primitives::{Address, B256, U256},
    rpc::types::{Log, TransactionReceipt},
};

use super::{abi::IEip3009, chain::Chain, ChainError};

/// What a payment moves: `value` of `asset` from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub asset: Address,
    pub from: Address,
    pub to: Address,
    pub value: U256,
}

impl Transfer {
    /// Whether `logs` hold a `Transfer(from → to, value)` emitted by the token.
    pub fn in_logs(&self, logs: &[Log]) -> bool {
        logs.iter()
            .filter(|log| log.address() == self.asset)
            .any(|log| {
                log.log_decode::<IEip3009::Transfer>().is_ok_and(|t| {
                    t.inner.data.from == self.from
                        && t.inner.data.to == self.to
                        && t.inner.data.value == self.value
                })
            })
    }

    /// Whether a mined transaction made this transfer: status 1 and the matching log.
    pub fn made_by(&self, receipt: &TransactionReceipt) -> bool {
        receipt.status() && self.in_logs(receipt.inner.logs())
    }
}

/// The transaction that used an authorization, with its receipt.
#[derive(Debug, Clone)]
pub struct Use {
    pub tx: B256,
    pub receipt: TransactionReceipt,
}

/// Finds the transaction that used the authorization `(transfer.from, nonce)` of `transfer.asset`.
/// `Ok(None)` when no `AuthorizationUsed` log exists within the chain's lookback: the authorization
/// was cancelled (`cancelAuthorization` logs another event), used long ago, or is not used at all.
/// A log whose receipt the node cannot produce yet (a lagging or load-balanced node) is an error to
/// retry, never a conclusion.
pub async fn find_use(
    chain: &Chain,
    transfer: &Transfer,
    nonce: B256,
) -> Result<Option<Use>, ChainError> {
    let logs = chain
        .authorization_used_logs(transfer.asset, transfer.from, nonce)
        .await?;
    // The token accepts an authorization once, so there is at most one such log; the first mined
    // is the one that counts if a broken token logged more.
    let Some(tx) = logs.iter().find_map(|log| log.transaction_hash) else {
        return Ok(None);
    };
    match chain.receipt(tx).await? {
        Some(receipt) => Ok(Some(Use { tx, receipt })),
        None => Err(ChainError::Node(format!(
            "the node logged {tx} using the authorization but has no receipt for it yet"
        ))),
    }
}
