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
    /// Each lane's messages of this invocation's batch not yet handled: while more are to come,
    /// the worker keeps the lane's lease after a write-ahead; with the last it gives it back, so
    /// `/settle` may sign on the lane at once rather than a lease later.
    pending: Mutex<HashMap<String, usize>>,
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
        lock(&self.pending).clear();
    }

    /// The batch brings `messages` for `lane`.
    pub(super) fn expect(&self, lane: &str, messages: usize) {
        lock(&self.pending).insert(lane.to_owned(), messages);
    }

    /// One of the lane's messages is handled, whatever came of it.
    pub(super) fn handled_one(&self, lane: &str) {
        if let Some(left) = lock(&self.pending).get_mut(lane) {
            *left = left.saturating_sub(1);
        }
    }

    /// Whether the batch holds more of the lane's messages than the `signing` being signed now
    /// (none are known outside a batch).
    pub(super) fn more_than(&self, lane: &str, signing: usize) -> bool {
        lock(&self.pending)
            .get(lane)
            .is_some_and(|left| *left > signing)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        lock(&self.next)
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held for a map operation only; a panic elsewhere cannot leave it half-changed.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    #[test]
    fn the_lease_is_kept_while_the_batch_holds_more_of_the_lanes_messages() {
        let nonces = LaneNonces::default();
        // Outside a batch nothing more is known: give it back.
        assert!(!nonces.more_than("key-1", 1));
        nonces.expect("key-1", 3);
        assert!(nonces.more_than("key-1", 1));
        // A run of all three is the last signing of the lane in the batch.
        assert!(!nonces.more_than("key-1", 3));
        nonces.handled_one("key-1");
        nonces.handled_one("key-1");
        assert!(!nonces.more_than("key-1", 1), "the last message");
        assert!(!nonces.more_than("key-2", 1));
        nonces.clear();
        assert!(!nonces.more_than("key-1", 0));
    }
}
