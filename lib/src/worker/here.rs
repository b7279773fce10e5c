//! `/settle` signing a new payment itself, when its lane is free (docs/settlement.md, "Signing in
//! /settle").
//!
//! The queue hop costs a payment an SQS message, a wait for the worker's invocation, and the
//! follower's read of the record to learn the transaction: at concurrency 1 most of what a
//! settlement takes beyond the chain. When nobody is signing on the payment's lane, `/settle`
//! does what the worker would: it takes the lane's lease (which reads the counter in the same
//! call), signs at the counter, writes ahead with the nonce step (I3, I4: the same conditional
//! write as the worker's, which also gives the lease back) and sends. Everything else (a lane
//! another signer holds, a payment that needs more than a plain signature, any failure) goes to
//! the queue as before, so the worker still decides every hard case.

use std::collections::HashMap;

use super::{decide, next_step, Next, Step, WorkError, Worker};
use crate::{
    clock::{now_ms, unix_now},
    queue::Simulated,
    store::{LaneLease, LeaseAfter, PaymentRecord, Signed, State, SETTLE_HOLDER},
};

/// The lanes this instance found held by another signer, and until when it leaves them to the
/// queue (unix ms). Under load a lane is mostly held (the worker works its backlog, or another
/// `/settle` signs): asking for its lease on every payment would cost a refused write each and set
/// `/settle` racing the worker for the lane. So one refusal sends this instance's payments on that
/// lane to the queue for a lease's length, without asking; at concurrency 1 nothing is refused
/// and every payment is signed here.
#[derive(Debug, Default)]
pub(super) struct BusyLanes(std::sync::Mutex<HashMap<(String, String), u64>>);

impl BusyLanes {
    fn busy(&self, lane: &str, network: &str, now: u64) -> bool {
        self.map()
            .get(&(lane.to_owned(), network.to_owned()))
            .is_some_and(|until| *until > now)
    }

    fn saw_held(&self, lane: &str, network: &str, until: u64) {
        self.map()
            .insert((lane.to_owned(), network.to_owned()), until);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        super::nonces::lock(&self.0)
    }
}

/// What became of a payment `/settle` tried to sign itself.
#[derive(Debug)]
pub enum Here {
    /// Written ahead and sent: the record as written (`signed`, with its transaction).
    Sent(Box<PaymentRecord>),
    /// Nothing was written: the payment goes to the queue as created, with `/settle`'s simulation.
    Queue,
    /// Signed, and its write-ahead may have landed (its outcome is not known, or the send after it
    /// failed): the payment goes to the queue, and the worker goes on from the record as it is.
    FromRecord,
    /// Fault injection stopped it here, as if `/settle`'s process had died ([`Worker::stop_after`]).
    Stopped(Step),
}

impl Worker {
    /// Signs, writes ahead and sends a payment `/settle` has just recorded, if it is a plain one
    /// (signed by a key, simulated by `/settle` just now and within the gas cap) and its lane's
    /// lease is free (and this instance did not find it held within a lease: [`BusyLanes`]);
    /// otherwise says where it goes instead.
    pub async fn sign_here(&self, record: &PaymentRecord, simulated: Option<Simulated>) -> Here {
        let plain = record.state == State::Queued
            && !record.signed_by_contract()
            && next_step(record, None, unix_now(), true) == Next::Sign
            && !self
                .busy_lanes
                .busy(&record.lane, &record.network, now_ms());
        let (Some(simulated), true, Ok(scheme)) = (simulated, plain, self.scheme(record)) else {
            return Here::Queue;
        };
        let signer = match self.signer(&record.lane).await {
            Ok(signer) => signer,
            Err(e) => {
                tracing::warn!(id = %record.id, lane = %record.lane, error = %e, "cannot sign here; queueing the payment");
                return Here::Queue;
            }
        };
        let chain = scheme.chain();
        let now = now_ms();
        let hold = super::lease_ms(self.lease);
        // A holder of its own per attempt: one instance may serve several requests at once (the
        // local server does), and each must hold the lane alone.
        let holder = format!("{SETTLE_HOLDER}{}", crate::store::random_hex());
        let (simulation, lease) = tokio::join!(
            self.simulate(chain, record, signer.address(), Some(simulated)),
            self.store
                .take_lane_lease(&record.lane, &record.network, &holder, (now, now + hold))
        );
        let next = match lease {
            Ok(LaneLease::Taken { next }) => next,
            Ok(LaneLease::Held { .. }) => {
                let until = now_ms() + hold;
                self.busy_lanes
                    .saw_held(&record.lane, &record.network, until);
                return Here::Queue;
            }
            Ok(LaneLease::NoRow) => return Here::Queue,
            Err(e) => {
                tracing::warn!(id = %record.id, error = %e, "the lane's lease could not be taken; queueing the payment");
                return Here::Queue;
            }
        };
        let here = self
            .sign_leased(record, (scheme, &signer), (simulation, next), &holder)
            .await;
        if matches!(here, Here::Queue | Here::FromRecord) {
            // Let the worker in at once; the lease's expiry covers a release that fails.
            let released = self
                .store
                .release_lane_lease(&record.lane, &record.network, &holder)
                .await;
            tracing::debug!(id = %record.id, ?released, "gave the lane's lease back");
        }
        here
    }

    /// [`Worker::sign_here`] once the lease is held: the gas from `/settle`'s simulation, the
    /// nonce from the counter (or the chain, for a lane's first payment on the network), then
    /// `Sign`, the write-ahead that gives the lease back, and the send.
    async fn sign_leased(
        &self,
        record: &PaymentRecord,
        (scheme, signer): (&crate::evm::ExactEvm, &crate::signer::LaneSigner),
        (simulation, next): (super::Simulation, Option<u64>),
        holder: &str,
    ) -> Here {
        let chain = scheme.chain();
        let cap = decide::gas_cap(
            &record.calldata,
            scheme.network().chain_id(),
            chain.gas_caps(),
        );
        let (fees, gas) = match simulation.map(|(fees, e)| (fees, decide::gas_limit(e, cap))) {
            Ok((fees, decide::GasLimit::Limit(gas))) => (fees, gas),
            // A revert, a cap or an unanswered node: the worker's to decide.
            _ => return Here::Queue,
        };
        let nonce = match next {
            Some(next) => next,
            None => match chain.pending_nonce(signer.address()).await {
                Ok(pending) => pending,
                Err(_) => return Here::Queue,
            },
        };
        let tx = decide::transfer_tx(record, scheme.network().chain_id(), nonce, gas, fees);
        let Ok(signed) = signer.sign(tx).await else {
            return Here::Queue;
        };
        if self.crash_point(Step::Signed).is_err() {
            return Here::Stopped(Step::Signed);
        }
        let signed = Signed {
            sender: signer.address(),
            nonce,
            raw: signed.raw,
            hash: signed.hash,
        };
        let release = LeaseAfter::Release { holder };
        match self
            .write_ahead_and_send(record.clone(), signed, release)
            .await
        {
            Ok(Some(written)) => Here::Sent(Box::new(written)),
            // Another writer moved the record: the worker reads what it became.
            Ok(None) => Here::FromRecord,
            Err(WorkError::Stopped(step)) => Here::Stopped(step),
            Err(e) => {
                tracing::warn!(id = %record.id, lane = %record.lane, nonce, error = %e, "signed here but not finished; the worker goes on from the record");
                Here::FromRecord
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_found_held_is_left_to_the_queue_until_then_and_per_network() {
        let busy = BusyLanes::default();
        assert!(!busy.busy("key-1", "eip155:8453", 1_000));
        busy.saw_held("key-1", "eip155:8453", 2_000);
        assert!(busy.busy("key-1", "eip155:8453", 1_999));
        assert!(
            !busy.busy("key-1", "eip155:8453", 2_000),
            "asks again after"
        );
        assert!(!busy.busy("key-1", "eip155:84532", 1_500));
        assert!(!busy.busy("key-2", "eip155:8453", 1_500));
    }
}
