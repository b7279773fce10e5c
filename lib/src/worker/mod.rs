//! The settlement worker: the consumer of the settlement queue, and the only code that signs
//! (`/settle` signs through it when a lane is free: [`here`]).
//! It shares the record's lifecycle steps with `/settle` and replay ([`crate::lifecycle`]).
//!
//! For each message, one lane at a time (the FIFO message group): simulate with `eth_estimateGas`,
//! take the lane's next nonce, sign with KMS, write the signed transaction ahead into the record
//! together with the lane's nonce step, then broadcast (docs/settlement.md; DESIGN I3, I4, I7).
//! It does not wait for receipts: `/settle` and replay finish `submitted` records.

mod batch;
mod decide;
mod here;
mod nonces;
mod run;
mod sweep;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use alloy::{primitives::B256, rpc::types::TransactionReceipt};
use tokio::sync::{Mutex, OnceCell};
use tracing::instrument;

use crate::{
    clock::{now_ms, unix_now},
    evm::{Chain, ChainError, ExactEvm},
    facilitator::Facilitator,
    lifecycle::{self, receipt::reason_from_revert, LifecycleError, Sent, UsedBy},
    protocol::Reason,
    queue::{Queue, SettlementMessage, Simulated},
    signer::{LaneError, LaneSigner},
    store::{
        Failure, LaneLease, LeaseAfter, PaymentId, PaymentRecord, Signed, State, Store, StoreError,
    },
};

pub use decide::{
    after_failure, after_lost_write_ahead, attempt_of, gas_limit, may_start, next_step,
    nonce_too_low, replacement, replacement_plan, retry_budget, visibility_backoff, AfterFailure,
    AfterLost, GasLimit, Next, ReplacementPlan, MIN_TIME_TO_START, RETRY_BUDGET,
};
pub use here::{Here, Leased, Leasing};

/// Why a payment could not be moved on now. Every variant sends the message back to the queue
/// (and, after the queue's maxReceiveCount, to the dead-letter queue, where replay still finishes
/// the payment); [`WorkError::retry_in_process`] says which are first tried again within the
/// invocation.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Kms(#[from] LaneError),
    /// Another sender took the lane nonce between the read and the write-ahead.
    #[error("lane {lane} nonce {nonce} was taken; the next attempt takes the next one")]
    NonceTaken { lane: String, nonce: u64 },
    /// Another signer holds the lane's lease ([`crate::store::LaneLease`]): it is signing there
    /// now, and this payment waits its turn.
    #[error(
        "lane {lane} is leased to another signer until {until} (unix ms); trying again after it"
    )]
    LaneBusy { lane: String, until: u64 },
    #[error("{0} is not configured here")]
    UnknownNetwork(String),
    #[error("lane {0} is not one of X402_LANE_KEYS; leaving the payment for reconciliation")]
    UnknownLane(String),
    #[error("lane {lane} now signs as {now:#x}, not as the record's sender {sender:#x}")]
    SenderChanged {
        lane: String,
        now: alloy::primitives::Address,
        sender: alloy::primitives::Address,
    },
    /// Fault injection ([`Worker::stop_after`]): the worker stops here as if it had died.
    #[error("stopped after {0:?} (fault injection)")]
    Stopped(Step),
}

impl WorkError {
    /// Whether trying again within this invocation can help: a throttle, a timeout or a lost
    /// race can; a configuration that does not know the lane or network cannot, and a fault
    /// injection's stop must stay a stop.
    pub fn retry_in_process(&self) -> bool {
        !matches!(
            self,
            WorkError::UnknownNetwork(_)
                | WorkError::UnknownLane(_)
                | WorkError::SenderChanged { .. }
                | WorkError::Stopped(_)
        )
    }
}

/// How a payment just written ahead is sent.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// Sent; its receipt is someone else's to look up (the worker's way).
    Send,
    /// Sent with the receipt waited for in the same request when the node can (`/settle`, which
    /// waits for it anyway), until the instant given at the latest (`/settle`'s deadline).
    SendAndWait(Instant),
}

/// A payment written ahead and sent by this call: the record as written, and its receipt when the
/// send waited for it and it was mined.
#[derive(Debug)]
pub struct Written {
    pub record: PaymentRecord,
    pub receipt: Option<Box<TransactionReceipt>>,
}

/// The first wait between two in-process attempts; it doubles up to [`MAX_BACKOFF`], with up to
/// as much again of jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A step of signing and sending, after which [`Worker::stop_after`] makes the worker stop as if
/// its process had died there: the fault tests' way to leave exactly what a crash leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// KMS signed; nothing written.
    Signed,
    /// The signed transaction is written ahead; nothing sent.
    WrittenAhead,
    /// Sent to the node; the record still says `signed`.
    Broadcast,
}

/// The worker's state, built once per instance.
#[derive(Debug)]
pub struct Worker {
    /// Shared with `/settle` when it signs there ([`Worker::sharing`]): one fee cache, one RPC
    /// client, one read of the RPC secrets per instance.
    facilitator: std::sync::Arc<Facilitator>,
    store: Store,
    kms: aws_sdk_kms::Client,
    /// The configured lanes: the only keys this worker will sign with.
    lanes: Vec<String>,
    signers: Mutex<HashMap<String, std::sync::Arc<OnceCell<LaneSigner>>>>,
    stop_after: Option<Step>,
    /// Where failed messages are put back: the queue each event came from, by its ARN.
    sqs: aws_sdk_sqs::Client,
    sources: Mutex<HashMap<String, Queue>>,
    /// Attempts at one payment before the worker gives up on it.
    max_attempts: u32,
    /// Where a retired lane's gas may be swept (`X402_SWEEP_ADDRESSES`).
    sweep_addresses: Vec<alloy::primitives::Address>,
    /// The lanes' next nonces as this invocation last wrote them ([`nonces`]).
    nonces: nonces::LaneNonces,
    /// How old /settle's simulation may be for its gas to be signed with (`X402_SIMULATION_REUSE_MS`).
    simulation_reuse: Duration,
    /// Whether a lane's new payments of one batch are signed as a run (`X402_LANE_RUNS`).
    lane_runs: bool,
    /// Who this instance is when it takes a lane's lease: random per instance.
    holder: String,
    /// How long it holds a lease (`X402_LANE_LEASE_MS`).
    lease: Duration,
    /// In `/settle`: the lanes it leaves to the queue for now ([`here::BusyLanes`]).
    busy_lanes: here::BusyLanes,
}

impl Worker {
    pub fn new(
        facilitator: impl Into<std::sync::Arc<Facilitator>>,
        store: Store,
        clients: (aws_sdk_kms::Client, aws_sdk_sqs::Client),
        lanes: Vec<String>,
        max_attempts: u32,
    ) -> Self {
        let (kms, sqs) = clients;
        Worker {
            facilitator: facilitator.into(),
            store,
            kms,
            lanes,
            signers: Mutex::new(HashMap::new()),
            stop_after: None,
            sqs,
            sources: Mutex::new(HashMap::new()),
            max_attempts,
            sweep_addresses: Vec::new(),
            nonces: nonces::LaneNonces::default(),
            // Until configured: always simulate again, one payment at a time.
            simulation_reuse: Duration::ZERO,
            lane_runs: false,
            holder: format!(
                "{}{}",
                crate::store::WORKER_HOLDER,
                crate::store::random_hex()
            ),
            lease: crate::config::DEFAULT_LANE_LEASE,
            busy_lanes: here::BusyLanes::default(),
        }
    }

    /// Fault injection for tests: every payment stops after `step`, as if the process died there.
    /// Nothing sets it in the deployed functions.
    pub fn stop_after(mut self, step: Step) -> Self {
        self.stop_after = Some(step);
        self
    }

    fn crash_point(&self, step: Step) -> Result<(), WorkError> {
        match self.stop_after {
            Some(stop) if stop == step => Err(WorkError::Stopped(step)),
            _ => Ok(()),
        }
    }

    /// Builds the worker's clients from the configuration; calls nothing.
    pub fn from_config(config: &crate::config::Config, aws: &aws_config::SdkConfig) -> Self {
        let facilitator = std::sync::Arc::new(Facilitator::new(config, aws));
        Self::sharing(facilitator, Store::from_config(config, aws), config, aws)
    }

    /// [`Worker::from_config`] with the facilitator's clients and the store it is given (those
    /// `/settle` already holds, when it signs itself).
    pub fn sharing(
        facilitator: std::sync::Arc<Facilitator>,
        store: Store,
        config: &crate::config::Config,
        aws: &aws_config::SdkConfig,
    ) -> Self {
        let mut worker = Worker::new(
            facilitator,
            store,
            (aws_sdk_kms::Client::new(aws), aws_sdk_sqs::Client::new(aws)),
            config.lane_keys.clone(),
            config.worker_max_attempts,
        );
        worker.sweep_addresses = config.sweep_addresses.clone();
        worker.simulation_reuse = config.simulation_reuse;
        worker.lane_runs = config.lane_runs;
        worker.lease = config.lane_lease;
        worker
    }

    /// The lease terms of a write-ahead of `signing` payments on `lane`: the worker keeps the lane
    /// while its batch holds more of the lane's messages, and gives it back with the last
    /// ([`nonces::LaneNonces::more_than`]).
    fn lease_after(&self, lane: &str, signing: usize) -> LeaseAfter<'_> {
        match self.nonces.more_than(lane, signing) {
            true => LeaseAfter::Keep {
                holder: &self.holder,
                until: now_ms() + lease_ms(self.lease),
            },
            false => LeaseAfter::Release {
                holder: &self.holder,
            },
        }
    }

    /// Moves one payment forward as far as this worker can, or replaces its transaction when the
    /// message asks for that (replay), retrying in-process for up to [`RETRY_BUDGET`].
    pub async fn process(&self, message: &SettlementMessage) -> Result<(), WorkError> {
        // One message is an invocation of its own ([`nonces`]).
        self.nonces.clear();
        self.process_within(message, RETRY_BUDGET).await
    }

    /// [`Worker::process`], where a failure that [`WorkError::retry_in_process`] is tried again
    /// with a jittered, doubling wait while `budget` lasts: each attempt starts from the record as
    /// it is, exactly as a redelivery would.
    #[instrument(skip_all, fields(id = %message.id))]
    pub async fn process_within(
        &self,
        message: &SettlementMessage,
        budget: Duration,
    ) -> Result<(), WorkError> {
        if let Some((lane, to)) = sweep::parse_sweep(&message.id) {
            return self.sweep(lane, to).await;
        }
        let Some(id) = PaymentId::parse(&message.id) else {
            // An id no record can have will never find one: drop it loudly.
            tracing::error!(id = %message.id, "a settlement message names no payment id; dropped");
            return Ok(());
        };
        let replace = match &message.replace {
            Some(hash) => match crate::evm::hex::b256(hash) {
                Some(hash) => Some(hash),
                None => {
                    tracing::error!(%id, %hash, "a replacement request names no transaction hash; dropped");
                    return Ok(());
                }
            },
            None => None,
        };
        let until = Instant::now() + budget;
        let mut wait = FIRST_BACKOFF;
        for attempt in 1.. {
            // The record as /settle created it serves the first try only: a retry starts from the
            // record as it is now.
            let created = message.created.as_deref().filter(|_| attempt == 1);
            let simulated = message.simulated.filter(|_| attempt == 1);
            match self.process_once(&id, replace, created, simulated).await {
                Err(e) if e.retry_in_process() && Instant::now() + wait * 2 < until => {
                    tracing::warn!(error = %e, attempt, "settlement step failed; trying again");
                    tokio::time::sleep(wait + jitter(wait)).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                outcome => return outcome,
            }
        }
        Ok(())
    }

    /// One try at the payment, from the record as `/settle` created it when `created` is given
    /// (a first delivery of a new payment, [`SettlementMessage::created`]), else as read now.
    async fn process_once(
        &self,
        id: &PaymentId,
        replace: Option<B256>,
        created: Option<&PaymentRecord>,
        simulated: Option<Simulated>,
    ) -> Result<(), WorkError> {
        let created = created.filter(|c| c.id == *id && c.state == State::Queued);
        let (record, read) = match created {
            Some(created) if replace.is_none() => (created.clone(), false),
            _ => match self.store.get(id).await? {
                Some(record) => (record, true),
                None => {
                    tracing::warn!(%id, "no record for a queued payment; nothing to do");
                    return Ok(());
                }
            },
        };
        let network_known = self.facilitator.network(&record.network).is_some();
        match next_step(&record, replace, unix_now(), network_known) {
            // /settle's simulation goes with its copy of the record only.
            Next::Sign => {
                let simulated = simulated.filter(|_| !read);
                self.sign_and_send(record, read, simulated).await
            }
            Next::FailUnknownNetwork => {
                let why = format!("{} is not configured here", record.network);
                self.fail(&record, Reason::InvalidNetwork, why).await
            }
            Next::Expire => {
                lifecycle::expire_queued(&self.store, &record.id).await?;
                Ok(())
            }
            Next::Replace => self.replace(record).await,
            Next::Broadcast => self.send_again(&record).await,
            Next::Nothing => Ok(()),
        }
    }

    fn scheme(&self, record: &PaymentRecord) -> Result<&ExactEvm, WorkError> {
        self.facilitator
            .network(&record.network)
            .ok_or_else(|| WorkError::UnknownNetwork(record.network.clone()))
    }

    /// Simulates, signs at the lane's next nonce, writes ahead and broadcasts a `queued` payment.
    /// `read`: the record was read from the table, not taken from the queue message. Every write
    /// here is conditional on the record still being `queued` (and the write-ahead on its lane,
    /// asset and calldata), so the message's copy is as good as a read for all of them; only
    /// finding who used the authorization reads the record first, for its earlier transactions.
    ///
    /// `simulated`: /settle's simulation, run from this lane; while it is fresher than
    /// `X402_SIMULATION_REUSE_MS` its gas is signed with, and the transfer is not simulated again.
    async fn sign_and_send(
        &self,
        record: PaymentRecord,
        read: bool,
        simulated: Option<Simulated>,
    ) -> Result<(), WorkError> {
        let scheme = self.scheme(&record)?;
        if let Some(refused) = self.payer_refused(&record).await? {
            return self.fail(&record, refused.reason, refused.message).await;
        }
        let signer = self.signer(&record.lane).await?;
        let chain = scheme.chain();
        let (simulated, nonce) = tokio::join!(
            self.simulate(chain, &record, signer.address(), simulated),
            self.next_nonce(chain, &record, signer.address())
        );
        let (fees, estimate) = simulated?;
        // The simulation before signing: a call that would revert never takes a lane nonce.
        let cap = decide::gas_cap(
            &record.calldata,
            scheme.network().chain_id(),
            chain.gas_caps(),
        );
        let gas = match self.limit(chain, &record, estimate, cap).await? {
            GasLimit::Limit(gas) => gas,
            GasLimit::OverCap { needed, cap } => return self.over_cap(&record, needed, cap).await,
            GasLimit::UsedBefore(revert) => {
                let record = match read {
                    true => record,
                    false => match self.store.get(&record.id).await? {
                        Some(latest) if latest.state == State::Queued => latest,
                        // Moved on meanwhile: whoever moved it finishes it.
                        _ => return Ok(()),
                    },
                };
                return self.used_before_signing(chain, &record, revert).await;
            }
            GasLimit::Refused(revert) => return self.refuse(&record, revert).await,
        };
        let nonce = nonce?;
        let tx = decide::transfer_tx(&record, scheme.network().chain_id(), nonce, gas, fees);
        let signed = signer.sign(tx).await?;
        self.crash_point(Step::Signed)?;
        let signed = Signed {
            sender: signer.address(),
            nonce,
            raw: signed.raw,
            hash: signed.hash,
        };
        let lease = self.lease_after(&record.lane, 1);
        // Not waiting: the worker's invocation goes on to the lane's next payment, and `/settle`'s
        // follower looks the receipt up.
        self.write_ahead_and_send(record, signed, lease, Delivery::Send)
            .await
            .map(drop)
    }

    /// Fails a payment whose transfer needs more gas than the network's cap.
    async fn over_cap(
        &self,
        record: &PaymentRecord,
        needed: u64,
        cap: u64,
    ) -> Result<(), WorkError> {
        let why = format!("the transfer would use {needed} gas, more than this facilitator pays for one settlement on {} ({cap})", record.network);
        // In the payment method's own words, as verify would have said it.
        let reason = match record.id.is_permit2() {
            true => Reason::Permit2SimulationFailed,
            false => Reason::SimulationFailed,
        };
        self.fail(record, reason, why).await
    }

    /// The fees to offer, and the simulation's gas or revert. The simulation runs as the
    /// transaction will: from the lane, offering those fees, so a payer's code that behaves
    /// differently at a zero gas price is caught. /settle's (run the same way) stands in for it
    /// while fresh. The fees are usually cached for a block.
    async fn simulate(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        from: alloy::primitives::Address,
        simulated: Option<Simulated>,
    ) -> Simulation {
        let fees = chain.offered_fees().await?;
        let reuse = u64::try_from(self.simulation_reuse.as_millis()).unwrap_or(u64::MAX);
        let estimate = match simulated.filter(|s| now_ms().saturating_sub(s.at_ms) < reuse) {
            Some(fresh) => Ok(fresh.gas),
            None => {
                chain
                    .estimate_gas(from, record.target(), record.calldata.clone(), fees)
                    .await?
            }
        };
        Ok((fees, estimate))
    }

    /// The gas limit from the simulation ([`gas_limit`]); a Permit2 payment's or an ERC-6492 batch's
    /// revert is read by
    /// [`Worker::used_or_refused`].
    async fn limit(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        estimate: Result<u64, String>,
        cap: u64,
    ) -> Result<GasLimit, WorkError> {
        // A revert's text tells a used EIP-3009 authorization only when the token's own message
        // reaches us: not through Permit2, nor through the Multicall3 batch that deploys an
        // ERC-6492 wallet (Multicall3 reverts with its own message). Those ask the chain.
        let batched = record.target() == crate::evm::abi::MULTICALL3;
        match (record.id.is_permit2() || batched, estimate) {
            (true, Err(revert)) => self.used_or_refused(chain, record, revert).await,
            (_, estimate) => Ok(gas_limit(estimate, cap)),
        }
    }

    /// Fails a payment whose simulation reverted for a reason other than a used authorization;
    /// no lane nonce is taken.
    async fn refuse(&self, record: &PaymentRecord, revert: String) -> Result<(), WorkError> {
        if record.id.is_permit2() {
            let why = format!("the settlement through the Permit2 proxy would revert: {revert}");
            return self
                .fail(record, Reason::Permit2SimulationFailed, why)
                .await;
        }
        self.fail(record, reason_from_revert(&revert), revert).await
    }

    /// What a Permit2 payment's (or a batched ERC-6492 payment's) reverted simulation means.
    /// Permit2's and the proxy's custom errors do not reach us as text every node spells alike,
    /// and Multicall3 replaces the token's message with its own, so the chain is asked instead: the
    /// nonce used (in Permit2's bitmap, or the token's `authorizationState`) is
    /// [`GasLimit::UsedBefore`] (attributed as for EIP-3009; for Permit2 by the record's own
    /// receipts only); anything else refuses the payment.
    async fn used_or_refused(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        revert: String,
    ) -> Result<GasLimit, WorkError> {
        match lifecycle::authorization_used(chain, record).await {
            Ok(true) => Ok(GasLimit::UsedBefore(revert)),
            Ok(false) => Ok(GasLimit::Refused(revert)),
            Err(e) => Err(WorkError::Chain(ChainError::Node(e))),
        }
    }

    /// The nonce to sign the record's transaction at: the lanes table's counter, which every
    /// write-ahead steps (I4), so it never runs ahead of a transaction some record holds, as this
    /// invocation last wrote it ([`nonces`]) or else as read when taking the lane's lease; the
    /// chain's pending count only for the lane's first payment on the network. A table behind the
    /// chain shows as the node's "nonce too low" ([`Worker::behind_the_chain`]). A lane another
    /// signer holds is [`WorkError::LaneBusy`]: tried again after a wait, as any lost race is.
    async fn next_nonce(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        sender: alloy::primitives::Address,
    ) -> Result<u64, WorkError> {
        if let Some(next) = self.nonces.get(&record.lane, &record.network) {
            return Ok(next);
        }
        let next = match self.lease_lane(record).await? {
            LaneLease::Taken { next } => next,
            LaneLease::NoRow => None,
            LaneLease::Held { until } => {
                return Err(WorkError::LaneBusy {
                    lane: record.lane.clone(),
                    until,
                })
            }
        };
        match next {
            Some(next) => Ok(next),
            None => Ok(chain.pending_nonce(sender).await?),
        }
    }

    /// Takes the record's lane's lease. When `/settle` holds it (a worker's is taken over), marks
    /// the lane wanted, so that no new `/settle` takes it, and asks again after 10 ms, doubling up
    /// to 100 ms, until the held lease has run out: `/settle` holds it for one `Sign` and
    /// write-ahead, and one that died holds it a lease at most. Waiting keeps a lane's run together
    /// where failing would split it into single payments.
    async fn lease_lane(&self, record: &PaymentRecord) -> Result<LaneLease, WorkError> {
        let lease = lease_ms(self.lease);
        let (lane, network) = (&record.lane, &record.network);
        let take = || {
            let now = now_ms();
            self.store
                .take_lane_lease(lane, network, &self.holder, (now, now + lease))
        };
        let (started, mut wait, mut wanted) = (Instant::now(), Duration::from_millis(10), false);
        loop {
            let taken = take().await?;
            let LaneLease::Held { until } = taken else {
                return Ok(taken);
            };
            // Asked for a lease's length: whoever holds it is no signer that dies (or one whose
            // clock is far off); the caller's retries take over.
            if started.elapsed() >= self.lease {
                return Ok(taken);
            }
            if !wanted {
                // Until the held lease has run out and a lease more, for this worker to take it.
                let until = until.max(now_ms()) + lease;
                self.store.want_lane(lane, network, until).await?;
                wanted = true;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    /// Checked again before signing, for a payment queued before its payer was refused: what the
    /// lane can lose to one hostile wallet is then its revert limit, plus what other lanes had
    /// under way at the same time.
    async fn payer_refused(
        &self,
        record: &PaymentRecord,
    ) -> Result<Option<crate::protocol::Rejection>, WorkError> {
        if !record.signed_by_contract() {
            return Ok(None);
        }
        Ok(self
            .facilitator
            .payer_refusal(&record.network, record.payer)
            .await?)
    }

    /// The write-ahead (I3, I4), then the broadcast as `delivery` says; when the write-ahead's
    /// condition fails, what the record has become decides ([`after_lost_write_ahead`]). The
    /// record as written ahead when this write-ahead is the one that landed.
    async fn write_ahead_and_send(
        &self,
        record: PaymentRecord,
        signed: Signed,
        lease: LeaseAfter<'_>,
        delivery: Delivery,
    ) -> Result<Option<Written>, WorkError> {
        // Forgotten until this write-ahead is known to have stepped the counter: a write that lost
        // its condition, or whose outcome is unknown, leaves the table to say.
        self.nonces.forget(&record.lane, &record.network);
        if !self.store.sign(&record, &signed, lease).await? {
            let latest = self.store.get(&record.id).await?;
            return match after_lost_write_ahead(latest.as_ref()) {
                AfterLost::TakeNextNonce => Err(WorkError::NonceTaken {
                    lane: record.lane,
                    nonce: signed.nonce,
                }),
                AfterLost::Broadcast => match latest {
                    Some(latest) => self.broadcast(&latest).await.map(|_| None),
                    None => Ok(None),
                },
                AfterLost::Nothing => Ok(None),
            };
        }
        self.nonces
            .set(&record.lane, &record.network, signed.nonce + 1);
        tracing::info!(id = %record.id, lane = %record.lane, nonce = signed.nonce, tx = %signed.hash, "signed and written ahead");
        self.crash_point(Step::WrittenAhead)?;
        let written = PaymentRecord {
            raw_tx: Some(signed.raw),
            tx_hash: Some(signed.hash),
            lane_nonce: Some(signed.nonce),
            sender: Some(signed.sender),
            state: State::Signed,
            // As the write-ahead stamped it, to the millisecond or so: a follower times the
            // receipt from it.
            updated_at: now_ms(),
            ..record
        };
        let (sent, receipt) = self.deliver(&written, delivery).await?;
        match sent {
            Sent::Refused(refusal) if nonce_too_low(&refusal) => self
                .behind_the_chain(&written, &refusal)
                .await
                .map(|()| None),
            _ => Ok(Some(Written {
                record: written,
                receipt,
            })),
        }
    }

    /// The node refused a transaction just signed as "nonce too low": the lane's nonce moved on
    /// chain without the table (a restored table, or the key used elsewhere), so another
    /// transaction holds this one's nonce and it can never be mined. The table's counter is raised
    /// to the chain's pending count, and the payment goes back to `queued` (its hash kept among
    /// those replaced) to be signed again at once, in this invocation.
    async fn behind_the_chain(
        &self,
        written: &PaymentRecord,
        refusal: &str,
    ) -> Result<(), WorkError> {
        let (Some(sender), Some(hash), Some(nonce)) =
            (written.sender, written.tx_hash, written.lane_nonce)
        else {
            return Ok(());
        };
        let pending = self.scheme(written)?.chain().pending_nonce(sender).await?;
        tracing::warn!(
            id = %written.id, lane = %written.lane, network = %written.network, nonce, pending, %refusal,
            "the lanes table's nonce is behind the chain; signing again at the chain's"
        );
        self.store
            .raise_lane_nonce(&written.lane, &written.network, pending)
            .await?;
        // Not `pending`: the counter never goes down, and a run may have taken it past the
        // chain's count already. The next signature reads the table.
        self.nonces.forget(&written.lane, &written.network);
        if !self.store.requeue(&written.id, State::Signed, hash).await? {
            return Ok(()); // moved on meanwhile: replay or a follower has it
        }
        Err(WorkError::NonceTaken {
            lane: written.lane.clone(),
            nonce,
        })
    }

    /// Sends a signed record's bytes; what the node said of them. The record stays `signed`: the
    /// worker does not write down that the node took them, as nothing needs it. A follower looks
    /// for the receipt of a `signed` record, and replay asks the node whether it holds the
    /// transaction before sending anything again ([`crate::replay`]). One DynamoDB write per
    /// payment fewer (docs/settlement.md, "What one settlement costs in calls").
    async fn broadcast(&self, record: &PaymentRecord) -> Result<Sent, WorkError> {
        self.deliver(record, Delivery::Send)
            .await
            .map(|(sent, _)| sent)
    }

    /// [`Worker::broadcast`] as `delivery` says: for `/settle`, which waits for the receipt
    /// anyway, the node is asked to send and wait in one request
    /// ([`lifecycle::send_stored_and_wait`]). The receipt when it came with the answer.
    async fn deliver(
        &self,
        record: &PaymentRecord,
        delivery: Delivery,
    ) -> Result<(Sent, Option<Box<TransactionReceipt>>), WorkError> {
        let chain = self.scheme(record)?.chain();
        let delivered = match delivery {
            Delivery::Send => {
                lifecycle::Delivered::Sent(lifecycle::send_stored(chain, record).await?)
            }
            Delivery::SendAndWait(until) => {
                lifecycle::send_stored_and_wait(chain, record, until).await?
            }
        };
        self.crash_point(Step::Broadcast)?;
        Ok(match delivered {
            lifecycle::Delivered::Mined(receipt) => (Sent::Accepted, Some(receipt)),
            lifecycle::Delivered::Sent(sent) => (sent, None),
        })
    }

    /// A `signed` record met again (a redelivered message): the worker that wrote it ahead sent
    /// it, or died first; it did not record which ([`Worker::broadcast`]). The node says: bytes it
    /// knows (in its pool, or mined) are not sent again, as a mined transaction's bytes would only
    /// come back refused ("nonce too low"), which reads as an error in the log.
    async fn send_again(&self, record: &PaymentRecord) -> Result<(), WorkError> {
        let chain = self.scheme(record)?.chain();
        if let Some(hash) = record.tx_hash {
            if chain.transaction_known(hash).await? {
                return Ok(());
            }
        }
        self.broadcast(record).await.map(drop)
    }

    /// Replaces a `signed` or `submitted` record's transaction with another at the same lane nonce
    /// (DESIGN I3, I6), as [`replacement_plan`] and [`replacement`] decide. The replacement is
    /// written ahead, next to the hashes it supersedes, before it is sent.
    async fn replace(&self, record: PaymentRecord) -> Result<(), WorkError> {
        let chain = self.scheme(&record)?.chain();
        let (Some(old_hash), Some(sender), Some(nonce), Some(old)) = (
            record.tx_hash,
            record.sender,
            record.lane_nonce,
            record.raw_tx.as_ref().and_then(decide::decode_eip1559),
        ) else {
            tracing::error!(id = %record.id, "a record to replace lacks its transaction, sender or nonce");
            return Ok(());
        };
        let mined_nonce = chain.latest_nonce(sender).await?;
        let cancel = match replacement_plan(mined_nonce, nonce, unix_now() >= record.valid_before) {
            ReplacementPlan::Nothing => return Ok(()),
            ReplacementPlan::Bump => false,
            ReplacementPlan::Cancel => true,
        };
        let signer = self.signer(&record.lane).await?;
        if signer.address() != sender {
            return Err(WorkError::SenderChanged {
                lane: record.lane.clone(),
                now: signer.address(),
                sender,
            });
        }
        let Some(tx) = replacement(old, sender, chain.fees().await?, cancel, chain.fee_cap())
        else {
            tracing::warn!(id = %record.id, nonce, cap = chain.fee_cap(), "the transaction's fees are at the network's cap: it waits as it is");
            crate::metrics::fee_cap_reached(&record.network);
            return Ok(());
        };
        let (max_fee, tip) = (tx.max_fee_per_gas, tx.max_priority_fee_per_gas);
        let signed = signer.sign(tx).await?;
        if !self
            .store
            .replace(&record.id, record.state, old_hash, &signed.raw, signed.hash)
            .await?
        {
            return Ok(()); // moved on meanwhile: replaced, finished or re-queued by someone else
        }
        tracing::info!(
            id = %record.id, nonce, replaced = %old_hash, tx = %signed.hash, cancel, max_fee, tip,
            "replacement written ahead"
        );
        let mut replaced = record.replaced.clone();
        replaced.push(old_hash);
        let written = PaymentRecord {
            raw_tx: Some(signed.raw),
            tx_hash: Some(signed.hash),
            replaced,
            ..record
        };
        self.send_replacement(chain, &written).await
    }

    /// A `signed` record's replacement moves it to `submitted` when sent; a `submitted` one stays.
    async fn send_replacement(
        &self,
        chain: &Chain,
        written: &PaymentRecord,
    ) -> Result<(), WorkError> {
        match written.state {
            State::Signed => lifecycle::submit(chain, &self.store, written)
                .await
                .map(drop)?,
            _ => lifecycle::send_stored(chain, written).await.map(drop)?,
        }
        Ok(())
    }

    async fn fail(
        &self,
        record: &PaymentRecord,
        reason: Reason,
        message: impl Into<String>,
    ) -> Result<(), WorkError> {
        let failure = Failure::new(reason, message);
        self.store.fail(&record.id, State::Queued, &failure).await?;
        Ok(())
    }

    /// A `queued` payment whose authorization the token already has as used: find the transaction
    /// that used it before calling this a failure. Ours (a lagging node hid its receipt from
    /// replay, which had it signed afresh) or somebody else's that paid the payee exactly: the
    /// payment is settled, by that transaction. Another transaction, or none (cancelled on chain):
    /// failed, naming it.
    async fn used_before_signing(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        revert: String,
    ) -> Result<(), WorkError> {
        let used = record.used_reason();
        let (mined, by_other) = match lifecycle::used_by(chain, record).await? {
            UsedBy::Nobody => return self.fail(record, used, revert).await,
            UsedBy::Ours { mined, paid: true } => (mined, false),
            UsedBy::Theirs { mined, paid: true } => (mined, true),
            UsedBy::Ours { mined, .. } | UsedBy::Theirs { mined, .. } => {
                let message = format!(
                    "the authorization was used by transaction {:#x}, which did not make this payment",
                    mined.tx
                );
                return self.fail(record, used, message).await;
            }
        };
        if self
            .store
            .settle(&record.id, State::Queued, mined, by_other)
            .await?
        {
            tracing::info!(id = %record.id, tx = %mined.tx, "the authorization was already used by a transaction that paid the payee");
        }
        Ok(())
    }

    /// The lane's signer, connected once per instance (one KMS `GetPublicKey`).
    async fn signer(&self, lane: &str) -> Result<LaneSigner, WorkError> {
        // A record names its lane; a worker signs only with the lanes it was configured with, so a
        // changed or drained lane list can never make it sign with a key nobody meant it to use.
        if !self.lanes.iter().any(|l| l == lane) {
            return Err(WorkError::UnknownLane(lane.to_owned()));
        }
        let cell = self
            .signers
            .lock()
            .await
            .entry(lane.to_owned())
            .or_default()
            .clone();
        let signer = cell
            .get_or_try_init(|| LaneSigner::connect(self.kms.clone(), lane.to_owned()))
            .await?;
        Ok(signer.clone())
    }
}

/// What [`Worker::simulate`] found: the fees to offer, and the gas the transfer needs or the
/// revert's text.
type Simulation = Result<((u128, u128), Result<u64, String>), ChainError>;

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)
}

/// Up to `wait` more, so that retries of many payments do not fall in step.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from(nanos) % millis)
}
