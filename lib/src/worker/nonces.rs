//! The lanes' next nonces as this invocation last wrote them to the lanes table.
//!
//! A lane's messages come to one invocation at a time (its FIFO message group), in order, so
//! within one invocation what the worker wrote last for a lane is the table's counter: the lane's
//! next payment in the batch signs at it without reading the table. Across invocations it is not:
//! Lambda hands a lane's next batch to whichever instance is free, and another instance may have
//! served the lane meanwhile (the load harness saw a lane's batches alternate between two instances
//! half the time, each stale guess costing a wasted KMS `Sign`, a failed write-ahead and a retry).
//! So every invocation starts knowing nothing ([`LaneNonces::clear`]): one table read per lane per
//! batch. What is known is still only a guess the write-ahead's condition checks; a failed
//! write-ahead forgets it.

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

    /// Forgets every lane: at the start of an invocation.
    pub(super) fn clear(&self) {
        self.map().clear();
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
        nonces.clear();
        assert_eq!(nonces.get("key-1", "eip155:84532"), None);
    }
}
