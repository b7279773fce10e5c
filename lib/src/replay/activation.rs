//! A new lane starts `funding` and takes no payments until its address has gas (docs/runbook.md,
//! "Signer lanes"). Replay reads every lane's balance on every network each run anyway (for
//! `LaneGasBalance`), so it is replay that makes a funded lane `active`: one conditional write, from
//! `funding` only, so a lane an operator drained or retired is never brought back.

use alloy::primitives::U256;

use crate::store::{LaneState, Store};

/// Whether a lane has gas on every network (pure): every balance read, and each at least
/// `threshold`. No reading at all (no network, or none readable) is not funded.
pub fn funded(balances: &[Option<U256>], threshold: U256) -> bool {
    !balances.is_empty() && balances.iter().all(|b| b.is_some_and(|b| b >= threshold))
}

/// Makes each `funding` lane whose balances are funded `active`. `balances` is by lane, in the
/// order of `lanes`. Failures are logged; the next run tries again.
pub async fn activate_funded(
    store: &Store,
    lanes: &[String],
    balances: &[Vec<Option<U256>>],
    threshold: U256,
) {
    let states = match store.lane_states(lanes).await {
        Ok(states) => states,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the lanes' states; funded lanes wait for the next run");
            return;
        }
    };
    for (lane, balances) in lanes.iter().zip(balances) {
        if states.get(lane) != Some(&LaneState::Funding) || !funded(balances, threshold) {
            continue;
        }
        match store
            .set_lane_state(lane, &[LaneState::Funding], LaneState::Active)
            .await
        {
            Ok(true) => tracing::info!(%lane, "the lane has gas on every network: it is active"),
            Ok(false) => {}
            Err(e) => tracing::warn!(%lane, error = %e, "cannot make a funded lane active"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_is_funded_only_with_enough_gas_on_every_network() {
        let threshold = U256::from(100);
        let wei = |n: u64| Some(U256::from(n));
        assert!(funded(&[wei(100), wei(5000)], threshold));
        assert!(!funded(&[wei(100), wei(99)], threshold));
        assert!(
            !funded(&[wei(100), None], threshold),
            "an unreadable balance"
        );
        assert!(!funded(&[], threshold), "nothing read");
    }
}
