//! Which lane a new payment goes to: one of the configured lanes (`X402_LANE_KEYS`) that is active
//! ([`LaneState`]), chosen by the payment's id. The states are read from the lanes table at most
//! once per `ttl` per instance: a lane drained or activated is seen by every `/settle` instance
//! within that time, at one DynamoDB read per instance per `ttl` instead of one per payment.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::store::{LaneState, PaymentId, Store, StoreError};

/// The configured lanes and what the lanes table said of them, lately.
#[derive(Debug)]
pub struct Routes {
    store: Store,
    configured: Vec<String>,
    ttl: Duration,
    active: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Routes {
    pub fn new(store: Store, configured: Vec<String>, ttl: Duration) -> Self {
        Routes {
            store,
            configured,
            ttl,
            active: Mutex::new(None),
        }
    }

    pub fn configured(&self) -> &[String] {
        &self.configured
    }

    /// The lanes new payments may go to now, in configuration order.
    pub async fn active(&self) -> Result<Vec<String>, StoreError> {
        let mut cached = self.active.lock().await;
        if let Some((at, lanes)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(lanes.clone());
            }
        }
        let states = self.store.lane_states(&self.configured).await?;
        let lanes = routable(&self.configured, &states);
        *cached = Some((Instant::now(), lanes.clone()));
        Ok(lanes)
    }
}

/// The configured lanes that are active, in configuration order (pure).
pub fn routable(configured: &[String], states: &HashMap<String, LaneState>) -> Vec<String> {
    configured
        .iter()
        .filter(|lane| states.get(lane.as_str()) == Some(&LaneState::Active))
        .cloned()
        .collect()
}

/// The lane a payment goes to among `lanes`: fixed by its id, so a retry while the lanes are the
/// same lands on the same lane (and a payment, once recorded, keeps the lane its record names).
pub fn lane_for<'a>(id: &PaymentId, lanes: &'a [String]) -> &'a str {
    let hash = alloy::primitives::keccak256(id.as_str().as_bytes());
    let index =
        u64::from_be_bytes(hash[..8].try_into().unwrap_or_default()) % lanes.len().max(1) as u64;
    lanes
        .get(index as usize)
        .map(String::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_lanes_take_new_payments_in_configuration_order() {
        let configured: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let states = HashMap::from([
            ("a".to_owned(), LaneState::Draining),
            ("b".to_owned(), LaneState::Active),
            ("c".to_owned(), LaneState::Funding),
            ("d".to_owned(), LaneState::Active),
        ]);
        assert_eq!(routable(&configured, &states), ["b", "d"]);
        assert!(routable(&configured, &HashMap::new()).is_empty());
    }

    #[test]
    fn a_payment_keeps_its_lane_while_the_lanes_are_the_same() {
        let lanes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let id = PaymentId::new(
            "eip155:84532",
            alloy::primitives::Address::ZERO,
            alloy::primitives::Address::ZERO,
            alloy::primitives::B256::ZERO,
        );
        assert_eq!(lane_for(&id, &lanes), lane_for(&id, &lanes));
        assert!(lanes.iter().any(|l| l == lane_for(&id, &lanes)));
        assert_eq!(lane_for(&id, &[]), "");
    }
}
