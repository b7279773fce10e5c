//! The lanes' next nonces as this worker instance last wrote them to the lanes table.
//!
//! A lane's messages come to one invocation at a time (its FIFO message group), and a warm
//! instance usually serves its lane's next batch too, so what the instance wrote last is usually
//! still the table's counter: the next payment signs at it without reading the table. It is only a
//! guess that the write-ahead's condition checks. When another instance has served the lane since,
//! the guess is behind, the write-ahead's condition fails, nothing is written, the guess is
//! forgotten and the payment is signed again at the table's counter: one KMS `Sign` wasted, never
//! a nonce.

use std::{collections::HashMap, sync::Mutex};

#[derive(Debug, Default)]
pub(super) struct LaneNonces {
    next: Mutex<HashMap<(String, String), u64>>,
}

impl LaneNonces {
    /// The lane's next nonce on `network`, if this instance knows it.
    pub(super) fn get(&self, lane: &str, network: &str) -> Option<u64> {
        self.map().get(&key(lane, network)).copied()
    }

    pub(super) fn set(&self, lane: &str, network: &str, next: u64) {
        self.map().insert(key(lane, network), next);
    }

    pub(super) fn forget(&self, lane: &str, network: &str) {
        self.map().remove(&key(lane, network));
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        // Held for a map operation only; a panic elsewhere cannot leave it half-changed.
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(lane: &str, network: &str) -> (String, String) {
    (lane.to_owned(), network.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_known_per_lane_and_network_until_forgotten() {
        let nonces = LaneNonces::default();
        assert_eq!(nonces.get("key-1", "eip155:8453"), None);
        nonces.set("key-1", "eip155:8453", 7);
        nonces.set("key-1", "eip155:84532", 3);
        assert_eq!(nonces.get("key-1", "eip155:8453"), Some(7));
        assert_eq!(nonces.get("key-2", "eip155:8453"), None);
        nonces.forget("key-1", "eip155:8453");
        assert_eq!(nonces.get("key-1", "eip155:8453"), None);
        assert_eq!(nonces.get("key-1", "eip155:84532"), Some(3));
    }
}
