//! A lane's run: the new payments one batch brings for a lane, signed at consecutive nonces,
//! written ahead in one DynamoDB transaction and sent in nonce order (docs/settlement.md, "A lane's
//! run").
//!
//! One at a time, a lane's payments wait on each other's simulation, `Sign`, write-ahead and send:
//! four round trips each, so a backlog of ten waits forty. A run makes that three for all ten and
//! the sends: the simulations and the `Sign`s go side by side, and one `TransactWriteItems` moves
//! every record to `signed` together with the lane's nonce step (I3, I4 as for one payment: the
//! step's condition says no transaction holds any of the run's nonces yet, and the write is all
//! or nothing). Everything the run does not finish (a payment that would not simulate, a lost
//! write-ahead, a failed send) goes on message by message, from the record as it then is; so a
//! run never has to decide a hard case itself.

use std::collections::HashMap;

use alloy::{
    primitives::{Address, U256},
    sol_types::SolCall,
};
use futures_util::future::join_all;

use super::{decide, next_step, nonce_too_low, GasLimit, Next, Step, WorkError, Worker};
use crate::{
    clock::unix_now,
    evm::{abi::IEip3009, CallOutcome},
    lifecycle::Sent,
    queue::{SettlementMessage, Simulated},
    store::{PaymentId, PaymentRecord, Signed, State},
};

/// A message taken into a run: its index in the batch, the record as `/settle` created it, and
/// `/settle`'s simulation.
type Picked = (usize, PaymentRecord, Option<Simulated>);

/// A payment of a run that simulated: its index, record, gas limit and the fees to offer.
type Signable = (usize, PaymentRecord, u64, (u128, u128));

/// The run's records as written ahead: `signed`, each with its transaction.
fn written(run: Vec<Signable>, signed: Vec<Signed>) -> Vec<PaymentRecord> {
    run.into_iter()
        .zip(signed)
        .map(|((_, record, ..), signed)| PaymentRecord {
            raw_tx: Some(signed.raw),
            tx_hash: Some(signed.hash),
            lane_nonce: Some(signed.nonce),
            sender: Some(signed.sender),
            state: State::Signed,
            ..record
        })
        .collect()
}

/// Why a run stopped before its sends, for every payment in it.
#[derive(Debug, Clone, Copy)]
enum Halt {
    /// Nothing of the run holds: each payment goes on alone, from its copy.
    Alone,
    /// Fault injection stopped the worker here ([`Worker::stop_after`]).
    Stopped(Step),
}

impl Halt {
    fn ran(self) -> Ran {
        match self {
            Halt::Alone => Ran::Alone,
            Halt::Stopped(step) => Ran::Finished(Err(WorkError::Stopped(step))),
        }
    }
}

/// What a run did with one of the messages it was given.
#[derive(Debug)]
pub(super) enum Ran {
    /// Finished with, as a message-by-message try would have been: written ahead and sent (or
    /// handed to the chain's own answer), or stopped by fault injection.
    Finished(Result<(), WorkError>),
    /// Not taken into the run, or the run lost its write-ahead: the message goes on by itself,
    /// from the copy it carries (nothing was written for it).
    Alone,
    /// Written ahead but not known to be sent (or sent too late: "nonce too low"), or left out for
    /// its payer's balance: the message goes on by itself from the record as it is now, not from
    /// its copy, and is simulated again (not with `/settle`'s simulation).
    FromRecord,
}

impl Worker {
    /// Signs, writes ahead and sends `fresh` (a lane's first deliveries, in queue order, by their
    /// index in the batch) as one run where at least two of them can go together; says for each
    /// what became of it. The rest, and every one when no run forms, is [`Ran::Alone`].
    pub(super) async fn run(
        &self,
        lane: &str,
        fresh: Vec<(usize, SettlementMessage)>,
    ) -> Vec<(usize, Ran)> {
        let (picked, alone) = self.pick(lane, fresh);
        let mut outcome: Vec<(usize, Ran)> = alone.into_iter().map(|i| (i, Ran::Alone)).collect();
        if picked.len() < 2 {
            outcome.extend(picked.into_iter().map(|(i, ..)| (i, Ran::Alone)));
            return outcome;
        }
        outcome.extend(self.sign_and_send_run(lane, picked).await);
        outcome
    }

    /// The messages that can join a run: new payments, as `/settle` created them, that are due to
    /// be signed, on the first one's network, and signed by a key (a contract wallet's payment
    /// keeps its per-payer checks before signing, alone). A payer's several payments may join:
    /// [`Worker::covered`] keeps only as many as its balance pays for together.
    fn pick(
        &self,
        lane: &str,
        fresh: Vec<(usize, SettlementMessage)>,
    ) -> (Vec<Picked>, Vec<usize>) {
        let now = unix_now();
        let mut picked: Vec<Picked> = Vec::new();
        let mut alone = Vec::new();
        for (i, message) in fresh {
            let record = match (
                &message.created,
                &message.replace,
                PaymentId::parse(&message.id),
            ) {
                (Some(created), None, Some(id)) if created.id == id => created,
                _ => {
                    alone.push(i);
                    continue;
                }
            };
            let network_known = self.facilitator.network(&record.network).is_some();
            let joins = record.state == State::Queued
                && record.lane == lane
                && next_step(record, None, now, network_known) == Next::Sign
                && !record.signed_by_contract()
                && picked
                    .first()
                    .is_none_or(|(_, first, _)| first.network == record.network)
                // A second message for the same payment (a repeated send) goes alone: one
                // transaction may not change an item twice.
                && !picked.iter().any(|(_, r, _)| r.id == record.id);
            match joins {
                true => picked.push((i, (**record).clone(), message.simulated)),
                false => alone.push(i),
            }
        }
        (picked, alone)
    }

    async fn sign_and_send_run(&self, lane: &str, picked: Vec<Picked>) -> Vec<(usize, Ran)> {
        let alone = |indexes: &[usize]| indexes.iter().map(|i| (*i, Ran::Alone)).collect();
        let indexes: Vec<usize> = picked.iter().map(|(i, ..)| *i).collect();
        let Some((_, first, _)) = picked.first() else {
            return Vec::new();
        };
        let (Ok(scheme), Ok(signer)) = (self.scheme(first), self.signer(lane).await) else {
            return alone(&indexes);
        };
        let Some((mut outcome, run, nonce)) = self.prepare(scheme.chain(), &signer, picked).await
        else {
            return alone(&indexes);
        };
        let indexes: Vec<usize> = run.iter().map(|(i, ..)| *i).collect();
        match self.sign_and_write(lane, scheme, &signer, run, nonce).await {
            Ok(written) => {
                // One after another, in nonce order: sent all at once, a later nonce could reach
                // a node before the earlier one and wait in its pool (or, behind a provider that
                // balances requests over nodes, reach another node).
                for (index, record) in indexes.into_iter().zip(&written) {
                    outcome.push((index, self.send_written(record).await));
                }
            }
            Err(halt) => outcome.extend(indexes.into_iter().map(|i| (i, halt.ran()))),
        }
        outcome
    }

    /// The run's simulations and the lane's next nonce, side by side; the payments that go on
    /// alone instead, with what becomes of them; `None` when the nonce cannot be had.
    async fn prepare(
        &self,
        chain: &crate::evm::Chain,
        signer: &crate::signer::LaneSigner,
        picked: Vec<Picked>,
    ) -> Option<(Vec<(usize, Ran)>, Vec<Signable>, u64)> {
        let from = signer.address();
        let (_, first, _) = picked.first()?;
        let simulations = picked
            .iter()
            .map(|(_, r, s)| self.simulate(chain, r, from, *s));
        let (simulations, nonce) =
            tokio::join!(join_all(simulations), self.next_nonce(chain, first, from));
        let nonce = nonce.ok()?;
        // A payment whose simulation says anything but "sign with this gas" is decided alone, by
        // the same code as always (which simulates it again).
        let (mut outcome, mut run) = (Vec::new(), Vec::new());
        for ((i, record, _), simulation) in picked.into_iter().zip(simulations) {
            let cap = decide::gas_cap(
                &record.calldata,
                record.chain_id().unwrap_or_default(),
                chain.gas_caps(),
            );
            match simulation.map(|(fees, estimate)| (fees, decide::gas_limit(estimate, cap))) {
                Ok((fees, GasLimit::Limit(gas))) => run.push((i, record, gas, fees)),
                _ => outcome.push((i, Ran::Alone)),
            }
        }
        let (run, uncovered) = self.covered(chain, run).await;
        // Simulated again alone, not with /settle's simulation, which saw none of this payer's
        // other payments paid.
        outcome.extend(uncovered.into_iter().map(|i| (i, Ran::FromRecord)));
        Some((outcome, run, nonce))
    }

    /// Signs the run at consecutive nonces from `nonce` and writes it ahead in one transaction
    /// with the lane's nonce step; the records as written, or why the run stops here.
    async fn sign_and_write(
        &self,
        lane: &str,
        scheme: &crate::evm::ExactEvm,
        signer: &crate::signer::LaneSigner,
        run: Vec<Signable>,
        nonce: u64,
    ) -> Result<Vec<PaymentRecord>, Halt> {
        let chain_id = scheme.network().chain_id();
        let signing = run.iter().zip(nonce..).map(|((_, record, gas, fees), n)| {
            signer.sign(decide::transfer_tx(record, chain_id, n, *gas, *fees))
        });
        let signed: Result<Vec<_>, _> = join_all(signing).await.into_iter().collect();
        let signed = signed.map_err(|_| Halt::Alone)?;
        self.crash_point(Step::Signed)
            .map_err(|_| Halt::Stopped(Step::Signed))?;
        let signed: Vec<Signed> = signed
            .into_iter()
            .zip(nonce..)
            .map(|(tx, nonce)| Signed {
                sender: signer.address(),
                nonce,
                raw: tx.raw,
                hash: tx.hash,
            })
            .collect();
        // The record's network, as the nonce step and `next_nonce` name it.
        let network = run
            .first()
            .map(|(_, r, ..)| r.network.clone())
            .unwrap_or_default();
        let network = network.as_str();
        // As for one payment: forgotten until the write is known to have stepped the counter.
        self.nonces.forget(lane, network);
        let pairs: Vec<(&PaymentRecord, &Signed)> = run
            .iter()
            .map(|(_, record, ..)| record)
            .zip(&signed)
            .collect();
        let lease = self.lease_after(lane, run.len());
        let stored = self.store.sign_run(&pairs, lease).await;
        if !matches!(stored, Ok(true)) {
            // Lost (a record moved on, or another sender took a nonce) or unknown: each goes on
            // alone; its write-ahead's condition sorts out what this one may have written.
            tracing::warn!(lane, payments = run.len(), nonce, outcome = ?stored, "a lane's run was not written ahead; its payments go on one by one");
            return Err(Halt::Alone);
        }
        self.nonces.set(lane, network, nonce + run.len() as u64);
        tracing::info!(
            lane,
            payments = run.len(),
            first_nonce = nonce,
            "a lane's run signed and written ahead"
        );
        self.crash_point(Step::WrittenAhead)
            .map_err(|_| Halt::Stopped(Step::WrittenAhead))?;
        Ok(written(run, signed))
    }

    /// The run's payments whose payers can pay for them together, and the indexes of the others.
    /// A run's simulations all see the chain before any of its transfers: for a payer with one
    /// payment in the run that is the chain its transfer meets (I9), but a payer's several payments
    /// could each pass and the later ones revert on chain, at the lane's cost. So such a payer's
    /// token balance is read (one `eth_call` for each, only for them), and its payments join in
    /// order while the balance covers them all; the rest go alone, after the run, where each is
    /// simulated again (so a payment the payer can no longer pay fails before taking a nonce). An
    /// unreadable balance keeps only the payer's first payment.
    async fn covered(
        &self,
        chain: &crate::evm::Chain,
        run: Vec<Signable>,
    ) -> (Vec<Signable>, Vec<usize>) {
        let mut count: HashMap<(Address, Address), usize> = HashMap::new();
        for (_, record, ..) in &run {
            *count.entry((record.asset, record.payer)).or_default() += 1;
        }
        let repeated: Vec<(Address, Address)> = count
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect();
        if repeated.is_empty() {
            return (run, Vec::new());
        }
        let balances = join_all(repeated.iter().map(|(asset, payer)| async move {
            let call = IEip3009::balanceOfCall { account: *payer }.abi_encode();
            let balance = match chain.call(None, *asset, call.into()).await {
                Ok(CallOutcome::Returned(data)) => {
                    IEip3009::balanceOfCall::abi_decode_returns(&data).ok()
                }
                _ => None,
            };
            ((*asset, *payer), balance)
        }))
        .await;
        let mut left: HashMap<(Address, Address), Option<U256>> = balances.into_iter().collect();
        let (mut kept, mut uncovered) = (Vec::new(), Vec::new());
        for signable in run {
            let record = &signable.1;
            match left.get_mut(&(record.asset, record.payer)) {
                // Alone in the run: its own simulation stands.
                None => kept.push(signable),
                Some(Some(balance)) if *balance >= record.value => {
                    *balance -= record.value;
                    kept.push(signable);
                }
                Some(unknown @ None) => {
                    // The first one is as safe as alone; after it, nothing more is known.
                    *unknown = Some(U256::ZERO);
                    kept.push(signable);
                }
                Some(Some(_)) => uncovered.push(signable.0),
            }
        }
        (kept, uncovered)
    }

    /// Sends one written-ahead payment of a run, as [`Worker::write_ahead_and_send`] does for one
    /// alone; what it cannot finish goes on from the record.
    async fn send_written(&self, written: &PaymentRecord) -> Ran {
        let sent = match self.broadcast(written).await {
            Ok(Sent::Refused(refusal)) if nonce_too_low(&refusal) => {
                self.behind_the_chain(written, &refusal).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match sent {
            Err(e) if e.retry_in_process() => {
                tracing::warn!(id = %written.id, error = %e, "a run's payment was not sent; it goes on from its record");
                Ran::FromRecord
            }
            finished => Ran::Finished(finished),
        }
    }
}
