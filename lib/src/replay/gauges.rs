//! The two gauges an operator alarms on that no request produces: each lane's gas balance and the
//! age of the oldest payment still open. Replay reads them once per run (it runs every minute and
//! already holds the chain and the payments table), so they are as fresh as the schedule.

use std::time::Duration;

use alloy::primitives::U256;
use futures_util::future::join_all;

use crate::{
    clock::now_ms,
    facilitator::Facilitator,
    store::{OpenEntry, OpenFilter, Store},
};

/// Reads and emits `LaneGasBalance` for every (network, lane) and `OldestOpenPaymentAge`.
/// Never fails: a reading that cannot be taken now is logged and left out (a missing lane balance
/// does not trip the alarm; replay's own errors alarm covers a replay that cannot run).
/// Costs one `eth_getBalance` per lane and network, and one DynamoDB query of one item. Returns
/// the balances, by lane (in configuration order) and network, `None` where unreadable: what
/// activating a funded lane is decided on ([`super::activation`]).
pub async fn report_operational(
    facilitator: &Facilitator,
    store: &Store,
) -> Vec<Vec<Option<U256>>> {
    let lanes = async {
        let readings = facilitator.lanes().addresses().await.into_iter().map(|address| async move {
            let networks = facilitator.networks();
            let address = match address {
                Ok(address) => address,
                Err(e) => {
                    // This lane only: the others' balances are still read and reported.
                    tracing::warn!(error = %e, "cannot learn a lane's address");
                    return vec![None; networks.len()];
                }
            };
            join_all(networks.iter().map(move |scheme| async move {
                let network = scheme.network().caip2();
                match scheme.chain().balance(address).await {
                    Ok(wei) => {
                        let lane = address.to_checksum(None);
                        crate::metrics::lane_balance(network, &lane, to_native(wei));
                        Some(wei)
                    }
                    Err(e) => {
                        tracing::warn!(network, lane = %address, error = %e, "cannot read a lane's balance");
                        None
                    }
                }
            }))
            .await
        });
        join_all(readings).await
    };
    let oldest = async {
        // Every open record changed up to now, oldest first, one item: the one changed longest
        // ago, aged from its creation (never after its first broadcast). Replay's run adds the
        // oldest it examined, which a fee bump may have moved later in this index.
        match store
            .open_records(now_ms(), &OpenFilter::Any, 1, None)
            .await
        {
            Ok(page) => {
                // An item replay cannot decode is open too, and aged from its last change.
                let age_ms = page
                    .entries
                    .first()
                    .map(|entry| match entry {
                        OpenEntry::Record(r) => r.created_at,
                        OpenEntry::Undecodable(item) => item.updated_at,
                    })
                    .map(|since| now_ms().saturating_sub(since))
                    .unwrap_or(0);
                crate::metrics::oldest_open_payment(Duration::from_millis(age_ms));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the oldest open payment"),
        }
    };
    tokio::join!(lanes, oldest).0
}

/// Wei to whole native tokens (ETH) as CloudWatch's f64; exact enough for a low-balance alarm.
fn to_native(wei: U256) -> f64 {
    let one = U256::from(1_000_000_000_000_000_000u64);
    let (whole, rest) = (wei / one, wei % one);
    // More whole tokens than a u128 holds is no balance a lane will ever have; saturate.
    let whole = u128::try_from(whole).unwrap_or(u128::MAX) as f64;
    whole + u64::try_from(rest).unwrap_or(0) as f64 / 1e18
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wei_become_whole_tokens() {
        assert_eq!(to_native(U256::ZERO), 0.0);
        assert_eq!(to_native(U256::from(10u64).pow(U256::from(18u64))), 1.0);
        assert!((to_native(U256::from(5_000_000_000_000_000u64)) - 0.005).abs() < 1e-12);
    }
}
