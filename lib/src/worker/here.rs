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

use super::{decide, next_step, Delivery, Next, Step, WorkError, Worker};
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
    /// Written ahead and sent: the record as written (`signed`, with its transaction), and its
    /// receipt when the send waited for it and it was mined.
    Sent(Box<super::Written>),
    /// Nothing was written: the payment goes to the queue as created, with `/settle`'s simulation.
    Queue,
    /// Signed, and its write-ahead may have landed (its outcome is not known, or the send after it
    /// failed): the payment goes to the queue, and the worker goes on from the record as it is.
    FromRecord,
    /// Fault injection stopped it here, as if `/settle`'s process had died ([`Worker::stop_after`]).
    Stopped(Step),
}

/// A lane's lease `/settle` took for a payment, with what signing the payment needs.
#[derive(Debug)]
pub struct Leased<'w> {
    scheme: &'w crate::evm::ExactEvm,
    signer: crate::signer::LaneSigner,
    simulation: super::Simulation,
    /// The lane's next nonce, as the take read it.
    next: Option<u64>,
    holder: String,
    /// When the lease runs out (unix ms).
    until: u64,
}

/// What asking for a payment's lane found ([`Worker::lease_here`]).
#[derive(Debug)]
pub enum Leasing<'w> {
    /// Taken: the payment is signed here once its record is known to be new.
    Taken(Box<Leased<'w>>),
    /// Another signer holds the lane.
    Held,
    /// Not a payment to sign here, or the lease could not be asked for.
    Queue,
}

impl Worker {
    /// The first half of signing a payment in `/settle`, run beside the creation of its record:
    /// takes the lane's lease if the payment is a plain one (signed by a key, simulated by
    /// `/settle` just now, within the gas cap) and this instance did not find the lane held within
    /// a lease ([`BusyLanes`]). Nothing is signed yet: a request whose record turns out to be there
    /// already costs the take and its give-back ([`Worker::give_back`]), never a `Sign`.
    pub async fn lease_here(
        &self,
        record: &PaymentRecord,
        simulated: Option<Simulated>,
    ) -> Leasing<'_> {
        let plain = record.state == State::Queued
            && !record.signed_by_contract()
            && next_step(record, None, unix_now(), true) == Next::Sign
            && !self
                .busy_lanes
                .busy(&record.lane, &record.network, now_ms());
        let (Some(simulated), true, Ok(scheme)) = (simulated, plain, self.scheme(record)) else {
            return Leasing::Queue;
        };
        let signer = match self.signer(&record.lane).await {
            Ok(signer) => signer,
            Err(e) => {
                tracing::warn!(id = %record.id, lane = %record.lane, error = %e, "cannot sign here; queueing the payment");
                return Leasing::Queue;
            }
        };
        let now = now_ms();
        let until = now + super::lease_ms(self.lease);
        // A holder of its own per attempt: one instance may serve several requests at once (the
        // local server does), and each must hold the lane alone.
        let holder = format!("{SETTLE_HOLDER}{}", crate::store::random_hex());
        let (simulation, lease) = tokio::join!(
            self.simulate(scheme.chain(), record, signer.address(), Some(simulated)),
            self.store
                .take_lane_lease(&record.lane, &record.network, &holder, (now, until))
        );
        match lease {
            Ok(LaneLease::Taken { next }) => Leasing::Taken(Box::new(Leased {
                scheme,
                signer,
                simulation,
                next,
                holder,
                until,
            })),
            Ok(LaneLease::Held { .. }) => Leasing::Held,
            Ok(LaneLease::NoRow) => Leasing::Queue,
            Err(e) => {
                tracing::warn!(id = %record.id, error = %e, "the lane's lease could not be taken; queueing the payment");
                Leasing::Queue
            }
        }
    }

    /// The second half, once `/settle` created the payment's record: signs, writes ahead and
    /// sends it if its lane's lease was taken and is still live; otherwise says where it goes
    /// instead. A lane found held is left to the queue for a lease's length ([`BusyLanes`]).
    /// `deadline`: when `/settle` answers at the latest, which a send that waits for its receipt
    /// does not pass.
    pub async fn sign_here(
        &self,
        record: &PaymentRecord,
        leasing: Leasing<'_>,
        deadline: std::time::Instant,
    ) -> Here {
        let leased = match leasing {
            Leasing::Taken(leased) => leased,
            Leasing::Held => {
                let until = now_ms() + super::lease_ms(self.lease);
                self.busy_lanes
                    .saw_held(&record.lane, &record.network, until);
                return Here::Queue;
            }
            Leasing::Queue => return Here::Queue,
        };
        // Creating the record took longer than the lease (DynamoDB retried): another signer may
        // hold the lane now, so the worker signs it instead of a `Sign` that could be wasted.
        let here = match now_ms() < leased.until {
            true => self.sign_leased(record, &leased, deadline).await,
            false => Here::Queue,
        };
        if matches!(here, Here::Queue | Here::FromRecord) {
            self.release(record, &leased.holder).await;
        }
        here
    }

    /// A request whose record was there already (a repeated `/settle`), or could not be written,
    /// gives back the lease it took beside the create.
    pub async fn give_back(&self, record: &PaymentRecord, leasing: Leasing<'_>) {
        if let Leasing::Taken(leased) = leasing {
            self.release(record, &leased.holder).await;
        }
    }

    /// Lets the worker in at once; the lease's expiry covers a release that fails.
    async fn release(&self, record: &PaymentRecord, holder: &str) {
        let released = self
            .store
            .release_lane_lease(&record.lane, &record.network, holder)
            .await;
        tracing::debug!(id = %record.id, ?released, "gave the lane's lease back");
    }

    /// [`Worker::sign_here`] once the lease is held: the gas from `/settle`'s simulation, the
    /// nonce from the counter (or the chain, for a lane's first payment on the network), then
    /// `Sign`, the write-ahead that gives the lease back, and the send.
    async fn sign_leased(
        &self,
        record: &PaymentRecord,
        leased: &Leased<'_>,
        deadline: std::time::Instant,
    ) -> Here {
        let Leased {
            scheme,
            signer,
            holder,
            ..
        } = leased;
        let Some((fees, gas, nonce)) = Self::gas_and_nonce(record, leased).await else {
            return Here::Queue;
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
            .write_ahead_and_send(
                record.clone(),
                signed,
                release,
                Delivery::SendAndWait(deadline),
            )
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

    /// The fees and gas limit from `/settle`'s simulation, and the nonce from the counter (or the
    /// chain, for a lane's first payment on the network). `None` for a revert, a cap or an
    /// unanswered node: the worker's to decide.
    async fn gas_and_nonce(
        record: &PaymentRecord,
        leased: &Leased<'_>,
    ) -> Option<((u128, u128), u64, u64)> {
        let chain = leased.scheme.chain();
        let cap = decide::gas_cap(
            &record.calldata,
            leased.scheme.network().chain_id(),
            chain.gas_caps(),
        );
        let limit = leased
            .simulation
            .as_ref()
            .map(|(fees, e)| (*fees, decide::gas_limit(e.clone(), cap)));
        let (fees, gas) = match limit {
            Ok((fees, decide::GasLimit::Limit(gas))) => (fees, gas),
            _ => return None,
        };
        let nonce = match leased.next {
            Some(next) => next,
            None => chain.pending_nonce(leased.signer.address()).await.ok()?,
        };
        Some((fees, gas, nonce))
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
