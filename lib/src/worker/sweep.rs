//! Moving a retired lane's gas to an operator's address (docs/runbook.md, "Signer lanes"). Only the
//! worker may sign with a lane key, so the sweep is one more message on the lane's queue group,
//! `sweep#<lane>#<to>`, sent by the lanes tool. What it may do is narrow on purpose, since anyone
//! who can send to the queue (settle, replay) can ask for one:
//! - the lane must be `retired` (drained, nothing open);
//! - the destination must be one of `X402_SWEEP_ADDRESSES`, which only a deploy sets;
//! - the transaction is a plain transfer of the balance less the most its gas can cost, one per
//!   network, at the chain's next nonce for the lane.
//!
//! No write-ahead: nothing but this sweep will ever use the retired lane's nonces, and a sweep that
//! dies between signing and sending leaves no gap (the lanes table is not stepped; the next sweep
//! takes the chain's pending count again).

use alloy::{
    consensus::TxEip1559,
    primitives::{Address, TxKind, U256},
};

use super::{decide, WorkError, Worker};
use crate::store::LaneState;

/// The gas of a plain transfer of the native token.
const TRANSFER_GAS: u64 = 21_000;

/// The lane and the destination a sweep message names (pure); `None` for any other message.
pub fn parse_sweep(id: &str) -> Option<(&str, Option<Address>)> {
    let rest = id.strip_prefix("sweep#")?;
    let (lane, to) = rest.rsplit_once('#')?;
    Some((lane, crate::evm::hex::address(to)))
}

/// The sweep transaction: all of `balance` but the most its gas may cost at `max_fee`; `None` when
/// that leaves nothing (pure).
pub fn sweep_tx(
    chain_id: u64,
    nonce: u64,
    balance: U256,
    to: Address,
    (max_fee_per_gas, max_priority_fee_per_gas): (u128, u128),
) -> Option<TxEip1559> {
    let most_gas_costs = U256::from(TRANSFER_GAS) * U256::from(max_fee_per_gas);
    let value = balance
        .checked_sub(most_gas_costs)
        .filter(|v| !v.is_zero())?;
    Some(TxEip1559 {
        chain_id,
        nonce,
        gas_limit: TRANSFER_GAS,
        max_fee_per_gas,
        max_priority_fee_per_gas,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: Default::default(),
    })
}

impl Worker {
    /// Sweeps `lane` to `to` on every network, if the lane is retired and `to` is allowed; any
    /// other request is refused in the log and dropped (asking again cannot change the answer).
    pub(super) async fn sweep(&self, lane: &str, to: Option<Address>) -> Result<(), WorkError> {
        let Some(to) = to.filter(|to| self.sweep_addresses.contains(to)) else {
            tracing::error!(%lane, ?to, "a sweep to an address not in X402_SWEEP_ADDRESSES; dropped");
            return Ok(());
        };
        let state = self.store.lane_states(&[lane.to_owned()]).await?;
        if state.get(lane) != Some(&LaneState::Retired) {
            tracing::error!(%lane, state = ?state.get(lane), "a sweep of a lane that is not retired; dropped");
            return Ok(());
        }
        let signer = self.signer(lane).await?;
        for scheme in self.facilitator.networks() {
            let (chain, network) = (scheme.chain(), scheme.network().caip2());
            let (balance, fees, nonce) = tokio::join!(
                chain.balance(signer.address()),
                chain.fees(),
                chain.pending_nonce(signer.address()),
            );
            let fees = decide::capped(fees?, chain.fee_cap());
            let chain_id = scheme.network().chain_id();
            let Some(tx) = sweep_tx(chain_id, nonce?, balance?, to, fees) else {
                tracing::info!(%lane, network, "nothing to sweep on this network");
                continue;
            };
            let (value, nonce) = (tx.value, tx.nonce);
            let signed = signer.sign(tx).await?;
            match chain.send_raw(signed.raw).await? {
                Ok(()) => {
                    tracing::info!(%lane, network, %to, %value, tx = %signed.hash, "swept the retired lane's gas");
                    // The lanes table is the lane's nonce (docs/settlement.md, "Lane nonces"):
                    // kept in step, so that a lane activated again does not sign at a used one.
                    self.store
                        .raise_lane_nonce(lane, network, nonce + 1)
                        .await?;
                }
                Err(refused) => {
                    tracing::warn!(%lane, network, %refused, "the node refused the sweep; ask again")
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_message_names_its_lane_and_destination() {
        let to = Address::repeat_byte(0x5e);
        let id = format!("sweep#key-1#{to:#x}");
        assert_eq!(parse_sweep(&id), Some(("key-1", Some(to))));
        assert_eq!(parse_sweep("sweep#key-1#nonsense"), Some(("key-1", None)));
        assert_eq!(parse_sweep("eip155:84532#0x…"), None);
    }

    #[test]
    fn a_sweep_sends_all_but_the_most_its_gas_can_cost() {
        let fees = (10, 1);
        let tx = sweep_tx(1, 7, U256::from(1_000_000), Address::ZERO, fees).unwrap();
        assert_eq!(tx.value, U256::from(1_000_000 - 210_000));
        assert_eq!((tx.nonce, tx.gas_limit), (7, 21_000));
        assert!(sweep_tx(1, 7, U256::from(210_000), Address::ZERO, fees).is_none());
        assert!(sweep_tx(1, 7, U256::from(5), Address::ZERO, fees).is_none());
    }
}
