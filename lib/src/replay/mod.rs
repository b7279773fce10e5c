//! Replay: the scheduled reconciliation that finishes or repairs every payment that is not terminal
//! (docs/settlement.md "Replay"; DESIGN I3, I6).
//!
//! One run, under a lease no other run holds, reads the sparse `open-by-age` index network by
//! network, each from where its last run stopped and within an equal share of the run's record
//! bound and time budget (`sweep.rs` runs it, by the rules in `progress.rs`), and leaves alone
//! every record changed within the grace period (`X402_REPLAY_MIN_AGE_MS`): those belong to
//! `/settle` and the worker. An item that does not decode is logged and skipped (quarantined).
//! Each record is read again, strongly consistent, and then:
//!
//! - `queued` past `validBefore` → `expired` (nothing was signed, so nothing can settle);
//! - `queued` on a lane no worker signs with any more (drained) → moved to a configured lane;
//! - `queued` otherwise → queued on its lane again (the worker ignores a message whose record moved on);
//! - `signed` or `submitted` with a receipt under any of its hashes → `settled`, `failed`, or
//!   `expired` when what was mined is the cancelling self-transfer, by the same rule as `/settle`;
//! - `signed` or `submitted` whose lane nonce another transaction used → `failed` if the
//!   authorization was used elsewhere, `expired` if it ran out, else back to `queued` to be signed
//!   afresh (none of its transactions can be mined any more);
//! - `signed` or `submitted`, valid, and not in the node's pool → the stored bytes are sent again
//!   (I3): same hash; a `signed` one moves to `submitted` then. (The worker does not record its
//!   own broadcast, so `signed` is either sent and waiting or never sent, when the worker died
//!   between the write-ahead and the broadcast: the node says which.) Unless it is next in its
//!   lane and priced out (nodes drop those and refuse them again): bumped;
//! - `signed` or `submitted`, still in the pool and next in its lane, and either priced out (its
//!   `maxFeePerGas` below the latest base fee) or passed over for `X402_REPLAY_BUMP_AFTER_MS` of
//!   *chain* time (the latest block's timestamp, which stops when the chain does) → the lane's
//!   worker is asked for a replacement at the same nonce with higher fees, never above the
//!   network's `maxFeePerGas` (the only signer stays the worker);
//! - `signed` or `submitted` past `validBefore` and not mined → the worker is asked to replace it
//!   with a zero-value self-transfer, so the lane nonce is used and nothing is paid.
//!
//! Every change is a conditional write on what replay read, so replay racing the live path, or
//! itself, moves a record at most once, and a second run right after the first finds nothing to do.

mod activation;
mod decide;
mod gauges;
mod progress;
mod sweep;

use std::time::Duration;

use alloy::primitives::B256;
use serde::Serialize;

use crate::{
    clock::unix_now,
    config::{Config, ConfigError},
    evm::Chain,
    facilitator::Facilitator,
    lifecycle::{self, receipt, Sent},
    queue::Queue,
    store::{PaymentId, PaymentRecord, State, Store, StoreError},
};

pub use decide::{
    in_flight_plan, nonce_taken_plan, pool_plan, queued_plan, used_plan, InFlightPlan,
    NonceTakenPlan, PoolFacts, PoolPlan, QueuedPlan, UsedPlan,
};
pub use progress::{
    lease_until, next_cursor, record_share, time_share, SweepEnd, LEASE_MARGIN,
    LEASE_WITHOUT_DEADLINE, OTHER_SWEEP,
};

/// What one run did, record by record, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Open records older than the grace period that this run looked at.
    pub examined: u32,
    /// `submitted → settled` from the receipt.
    pub settled: u32,
    /// `submitted → failed` from the receipt (reverted, or no matching `Transfer`).
    pub failed: u32,
    /// In the pool, not mined yet, sent less than `X402_REPLAY_BUMP_AFTER_MS` ago.
    pub pending: u32,
    /// Still unmined after `X402_REPLAY_BUMP_AFTER_MS`: the worker was asked for a replacement
    /// with higher fees.
    pub bumped: u32,
    /// Past `validBefore` and not mined: the worker was asked to cancel it at its lane nonce.
    pub cancelling: u32,
    /// Its lane nonce went to another transaction: back to `queued`, to be signed afresh.
    pub resigned: u32,
    /// `submitted` but not in the node's pool: the stored bytes were sent again.
    pub rebroadcast: u32,
    /// `signed → submitted`: the node did not have the stored bytes (never sent, or dropped);
    /// they were sent.
    pub submitted: u32,
    /// The node refused the stored bytes; the record is left as it is.
    pub refused: u32,
    /// `queued → expired`: past `validBefore`, nothing signed.
    pub expired: u32,
    /// `queued`: queued on its lane again.
    pub requeued: u32,
    /// `queued` on a lane that is no longer configured: moved to a configured lane and queued there.
    pub relaned: u32,
    /// Changed or finished since the index listed it (by the live path): left alone.
    pub moved_on: u32,
    /// Could not be handled now (RPC or DynamoDB trouble); the next run tries again.
    pub errors: u32,
    /// Items in the index that do not decode as a payment record: logged with their key and
    /// skipped, never changed (docs/runbook.md "replay quarantined").
    pub quarantined: u32,
    /// Some sweep stopped at its share of time or records with items left; its cursor says where
    /// the next run goes on.
    pub more: bool,
    /// Another run holds the replay lease: this one did nothing (its log says who holds it, and
    /// until when).
    pub skipped: bool,
    /// When the oldest record this run left open was created (unix ms): what "pending too long"
    /// measures from, since a bump or re-send refreshes a record's `updated_at`.
    #[serde(skip)]
    pub oldest_open_created_at: Option<u64>,
}

/// What replay did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Settled,
    Failed,
    Pending,
    Bumped,
    Cancelling,
    Resigned,
    Relaned,
    Rebroadcast,
    Submitted,
    Refused,
    Expired,
    Requeued,
    MovedOn,
    Error,
}

impl Action {
    /// Whether the record is still open after it: `settled`, `failed` and `expired` end it, and a
    /// record that moved on belongs to the live path.
    const fn leaves_open(self) -> bool {
        !matches!(
            self,
            Action::Settled | Action::Failed | Action::Expired | Action::MovedOn
        )
    }

    const fn as_str(self) -> &'static str {
        match self {
            Action::Settled => "settled",
            Action::Failed => "failed",
            Action::Pending => "pending",
            Action::Bumped => "bumped",
            Action::Cancelling => "cancelling",
            Action::Resigned => "resigned",
            Action::Relaned => "relaned",
            Action::Rebroadcast => "rebroadcast",
            Action::Submitted => "submitted",
            Action::Refused => "refused",
            Action::Expired => "expired",
            Action::Requeued => "requeued",
            Action::MovedOn => "moved_on",
            Action::Error => "error",
        }
    }
}

impl Summary {
    /// The run's one summary line.
    fn log(&self, elapsed_ms: u64) {
        tracing::info!(
            examined = self.examined,
            settled = self.settled,
            failed = self.failed,
            pending = self.pending,
            bumped = self.bumped,
            cancelling = self.cancelling,
            resigned = self.resigned,
            relaned = self.relaned,
            rebroadcast = self.rebroadcast,
            submitted = self.submitted,
            refused = self.refused,
            expired = self.expired,
            requeued = self.requeued,
            moved_on = self.moved_on,
            errors = self.errors,
            quarantined = self.quarantined,
            more = self.more,
            elapsed_ms,
            "replay finished"
        );
    }

    fn count(&mut self, action: Action) {
        let counter = match action {
            Action::Settled => &mut self.settled,
            Action::Failed => &mut self.failed,
            Action::Pending => &mut self.pending,
            Action::Bumped => &mut self.bumped,
            Action::Cancelling => &mut self.cancelling,
            Action::Resigned => &mut self.resigned,
            Action::Relaned => &mut self.relaned,
            Action::Rebroadcast => &mut self.rebroadcast,
            Action::Submitted => &mut self.submitted,
            Action::Refused => &mut self.refused,
            Action::Expired => &mut self.expired,
            Action::Requeued => &mut self.requeued,
            Action::MovedOn => &mut self.moved_on,
            Action::Error => &mut self.errors,
        };
        *counter += 1;
    }
}

/// The replay function's state, built once per instance.
#[derive(Debug)]
pub struct Replayer {
    facilitator: Facilitator,
    store: Store,
    queue: Queue,
    /// The lanes workers sign with: a queued record on any other lane is moved to one of these.
    lanes: Vec<String>,
    tunables: Tunables,
}

/// How patient replay is.
#[derive(Debug, Clone, Copy)]
pub struct Tunables {
    /// Records changed more recently than this belong to the live path.
    pub min_age: Duration,
    /// The most records one run looks at.
    pub max_records: usize,
    /// A transaction still unmined this long after it was sent is replaced with higher fees.
    pub bump_after: Duration,
    /// A `funding` lane with at least this much gas (wei) on every network is made active.
    pub activation_wei: alloy::primitives::U256,
}

/// How long before its deadline a run stops taking new records, at most: one record's worst case
/// (a few RPC and DynamoDB calls at their timeouts) must still fit. A short invocation keeps a
/// quarter of its time instead.
pub const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(10);

impl Replayer {
    pub fn new(
        facilitator: Facilitator,
        store: Store,
        queue: Queue,
        lanes: Vec<String>,
        tunables: Tunables,
    ) -> Self {
        Replayer {
            facilitator,
            store,
            queue,
            lanes,
            tunables,
        }
    }

    /// Builds the replay function's clients from the configuration; calls nothing.
    pub fn from_config(config: &Config, aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let queue = Queue::new(
            aws_sdk_sqs::Client::new(aws),
            config.require_settle_queue()?.to_owned(),
        );
        Ok(Replayer::new(
            Facilitator::new(config, aws),
            Store::from_config(config, aws),
            queue,
            config.lane_keys.clone(),
            Tunables {
                min_age: config.replay_min_age,
                max_records: config.replay_max_records,
                bump_after: config.replay_bump_after,
                activation_wei: config.lane_activation_wei,
            },
        ))
    }

    async fn replay_one(&self, indexed: PaymentRecord, attempt: &str) -> Action {
        // The index is eventually consistent: act only on the record as it is now, and only if it
        // has not changed since the index listed it (a change means the live path has it).
        let record = match self.store.get(&indexed.id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Action::MovedOn,
            Err(e) => return error(&indexed.id, &e),
        };
        if record.state.is_terminal() || record.updated_at != indexed.updated_at {
            return Action::MovedOn;
        }
        let Some(scheme) = self.facilitator.network(&record.network) else {
            return error(
                &record.id,
                &format!("{} is not configured here", record.network),
            );
        };
        let chain = scheme.chain();
        match record.state {
            State::Queued => self.queued(record, attempt).await,
            State::Signed | State::Submitted => self.in_flight(chain, record, attempt).await,
            _ => Action::MovedOn,
        }
    }

    /// A `queued` record: nothing signed, so it can expire, change lanes or be queued again freely
    /// ([`queued_plan`]).
    async fn queued(&self, record: PaymentRecord, attempt: &str) -> Action {
        let lane = match queued_plan(&record, unix_now(), &self.lanes) {
            QueuedPlan::Expire => {
                return moved(
                    &record.id,
                    lifecycle::expire_queued(&self.store, &record.id).await,
                    Action::Expired,
                )
            }
            // Its lane was drained (taken out of X402_LANE_KEYS): no worker will sign with it, and
            // its messages end in the dead-letter queue. Nothing was signed, so it can move.
            QueuedPlan::Relane(lane) => {
                match self.store.move_lane(&record.id, &record.lane, &lane).await {
                    Ok(true) => lane,
                    Ok(false) => return Action::MovedOn,
                    Err(e) => return error(&record.id, &e),
                }
            }
            QueuedPlan::Requeue => record.lane.clone(),
        };
        let done = match lane == record.lane {
            true => Action::Requeued,
            false => Action::Relaned,
        };
        match self.queue.requeue(record.id.as_str(), &lane, attempt).await {
            Ok(()) => done,
            Err(e) => error(&record.id, &e),
        }
    }

    /// A `signed` or `submitted` record: a transaction exists at its lane nonce. Its receipt first,
    /// then [`in_flight_plan`].
    async fn in_flight(&self, chain: &Chain, record: PaymentRecord, attempt: &str) -> Action {
        let (Some(sender), Some(nonce), Some(hash)) =
            (record.sender, record.lane_nonce, record.tx_hash)
        else {
            return error(&record.id, &"signed without its sender, lane nonce or hash");
        };
        // The lane's mined nonce first, then the receipts: a transaction of ours mined between the
        // two reads is then seen by the second, and never mistaken for someone else's.
        let mined_nonce = match chain.latest_nonce(sender).await {
            Ok(n) => n,
            Err(e) => return error(&record.id, &e),
        };
        match receipt::finish(chain, &self.store, &record, None).await {
            Ok(Some(finished)) => return finished_action(&finished),
            Ok(None) => {}
            Err(e) => return error(&record.id, &e),
        }
        let action = match in_flight_plan(&record, nonce, mined_nonce, unix_now()) {
            InFlightPlan::NonceTaken => {
                return self.nonce_taken(chain, &record, hash, attempt).await
            }
            InFlightPlan::Cancel => Action::Cancelling,
            InFlightPlan::CheckPool => match self
                .pooled(chain, &record, hash, nonce == mined_nonce)
                .await
            {
                Ok(action) => action,
                Err(action) => return action,
            },
        };
        match self
            .queue
            .request_replacement(record.id.as_str(), &record.lane, &format!("{hash:#x}"))
            .await
        {
            Ok(()) => action,
            Err(e) => error(&record.id, &e),
        }
    }

    /// `signed → submitted` with the stored bytes.
    async fn submit(&self, chain: &Chain, record: &PaymentRecord) -> Action {
        match lifecycle::submit(chain, &self.store, record).await {
            Ok((Sent::Accepted, true)) => Action::Submitted,
            Ok((Sent::Accepted, false)) => Action::MovedOn,
            Ok((Sent::Refused(_), _)) => Action::Refused,
            Err(e) => error(&record.id, &e),
        }
    }

    /// A `signed` or `submitted`, valid, unmined transaction, as [`pool_plan`] says: `Ok(Bumped)`
    /// when the worker is to be asked for a replacement, `Err` with what was done otherwise.
    async fn pooled(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        hash: B256,
        next_in_lane: bool,
    ) -> Result<Action, Action> {
        let in_pool = chain
            .transaction_known(hash)
            .await
            .map_err(|e| error(&record.id, &e))?;
        let facts = if !next_in_lane {
            PoolFacts {
                in_pool,
                next_in_lane,
                underpriced: false,
                chain_waited: Duration::ZERO,
            }
        } else {
            let (block_time, base_fee) = chain
                .latest_block()
                .await
                .map_err(|e| error(&record.id, &e))?;
            let offered = record
                .raw_tx
                .as_ref()
                .and_then(lifecycle::decode_eip1559)
                .map(|tx| tx.max_fee_per_gas);
            PoolFacts {
                in_pool,
                next_in_lane,
                underpriced: offered.is_some_and(|fee| fee < base_fee),
                chain_waited: Duration::from_millis(
                    block_time
                        .saturating_mul(1000)
                        .saturating_sub(record.updated_at),
                ),
            }
        };
        match pool_plan(facts, self.tunables.bump_after) {
            // Never sent, as far as the node knows (a crash between the write-ahead and the
            // broadcast, or dropped before replay first saw it): sent now, and `submitted`.
            PoolPlan::Rebroadcast if record.state == State::Signed => {
                Err(self.submit(chain, record).await)
            }
            PoolPlan::Rebroadcast => Err(match lifecycle::send_stored(chain, record).await {
                Ok(Sent::Accepted) => Action::Rebroadcast,
                Ok(Sent::Refused(_)) => Action::Refused,
                Err(e) => error(&record.id, &e),
            }),
            PoolPlan::Bump => Ok(Action::Bumped),
            PoolPlan::Pending => Err(Action::Pending),
        }
    }

    /// The record's lane nonce was used, by none of its own transactions: none of them can ever be
    /// mined. What is left depends on the authorization ([`nonce_taken_plan`]).
    async fn nonce_taken(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        hash: B256,
        attempt: &str,
    ) -> Action {
        let used = match lifecycle::authorization_used(chain, record).await {
            Ok(used) => used,
            Err(e) => return error(&record.id, &e),
        };
        let expired = unix_now() >= record.valid_before;
        match nonce_taken_plan(used, expired) {
            NonceTakenPlan::FindWhoUsed => self.used_by_whom(chain, record).await,
            NonceTakenPlan::Expire(failure) => moved(
                &record.id,
                self.store.expire(&record.id, record.state, &failure).await,
                Action::Expired,
            ),
            NonceTakenPlan::Resign => {
                match self.store.requeue(&record.id, record.state, hash).await {
                    Ok(true) => {}
                    Ok(false) => return Action::MovedOn,
                    Err(e) => return error(&record.id, &e),
                }
                match self
                    .queue
                    .requeue(record.id.as_str(), &record.lane, attempt)
                    .await
                {
                    Ok(()) => Action::Resigned,
                    // Queued in the table but not on SQS: the next run queues it again.
                    Err(e) => error(&record.id, &e),
                }
            }
        }
    }

    /// The authorization is used, and no receipt of ours was found under the record's hashes:
    /// find the transaction that used it before deciding anything ([`used_plan`]).
    async fn used_by_whom(&self, chain: &Chain, record: &PaymentRecord) -> Action {
        let used_by = match lifecycle::used_by(chain, record).await {
            Ok(used_by) => used_by,
            Err(e) => return error(&record.id, &e),
        };
        match used_plan(record, used_by) {
            UsedPlan::FinishOurs(mined) => {
                match receipt::finish(chain, &self.store, record, None).await {
                    Ok(Some(finished)) => finished_action(&finished),
                    Ok(None) => error(
                        &record.id,
                        &format!("{:#x} is logged but its receipt is not found yet", mined.tx),
                    ),
                    Err(e) => error(&record.id, &e),
                }
            }
            UsedPlan::SettleByOther(mined) => moved(
                &record.id,
                self.store
                    .settle(&record.id, record.state, mined, true)
                    .await,
                Action::Settled,
            ),
            UsedPlan::Fail(failure) => moved(
                &record.id,
                self.store.fail(&record.id, record.state, &failure).await,
                Action::Failed,
            ),
        }
    }
}

/// What a record finished from its receipt counts as.
fn finished_action(finished: &PaymentRecord) -> Action {
    match finished.state {
        State::Settled => Action::Settled,
        State::Failed => Action::Failed,
        State::Expired => Action::Expired,
        _ => Action::MovedOn,
    }
}

/// `done` if this run made a conditional move, `MovedOn` if the record had moved meanwhile.
fn moved(id: &PaymentId, outcome: Result<bool, StoreError>, done: Action) -> Action {
    match outcome {
        Ok(true) => done,
        Ok(false) => Action::MovedOn,
        Err(e) => error(id, &e),
    }
}

fn error(id: &PaymentId, problem: &dyn std::fmt::Display) -> Action {
    tracing::warn!(%id, error = %problem, "replay could not handle a record now; the next run tries again");
    Action::Error
}
