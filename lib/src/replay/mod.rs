//! Replay: the scheduled reconciliation that finishes or repairs every payment that is not terminal
//! (docs/settlement.md "Replay"; DESIGN I3, I6).
//!
//! One run reads the sparse `open-by-age` index oldest first, up to a record bound and a time
//! budget, and leaves alone every record changed within the grace period (`X402_REPLAY_MIN_AGE_MS`):
//! those belong to `/settle` and the worker. Each record is read again, strongly consistent, and
//! then:
//!
//! - `queued` past `validBefore` → `expired` (nothing was signed, so nothing can settle);
//! - `queued` on a lane no worker signs with any more (drained) → moved to a configured lane;
//! - `queued` otherwise → queued on its lane again (the worker ignores a message whose record moved on);
//! - `signed` or `submitted` with a receipt under any of its hashes → `settled`, `failed`, or
//!   `expired` when what was mined is the cancelling self-transfer, by the same rule as `/settle`;
//! - `signed` or `submitted` whose lane nonce another transaction used → `failed` if the
//!   authorization was used elsewhere, `expired` if it ran out, else back to `queued` to be signed
//!   afresh (none of its transactions can be mined any more);
//! - `signed` (a crash between the write-ahead and the broadcast) → the stored bytes are sent;
//! - `submitted` and dropped from the pool → the stored bytes are sent again (I3): same hash;
//! - `submitted` and still in the pool after `X402_REPLAY_BUMP_AFTER_MS` → the lane's worker is
//!   asked for a replacement at the same nonce with higher fees (the only signer stays the worker);
//! - `signed` or `submitted` past `validBefore` and not mined → the worker is asked to replace it
//!   with a zero-value self-transfer, so the lane nonce is used and nothing is paid.
//!
//! Every change is a conditional write on what replay read, so replay racing the live path, or
//! itself, moves a record at most once, and a second run right after the first finds nothing to do.

mod gauges;

use std::time::{Duration, Instant};

use alloy::sol_types::SolCall;
use serde::Serialize;

use crate::{
    config::{Config, ConfigError},
    evm::{abi::IEip3009, attribution, hex, CallOutcome, Chain},
    facilitator::{unix_now, Facilitator},
    lifecycle::{self, receipt, Sent},
    protocol::Reason,
    queue::Queue,
    settle::lane_for_id,
    store::{now_ms, PaymentRecord, State, Store, StoreError},
};

/// Index pages are at most this long (DynamoDB caps a page at 1 MB anyway).
const PAGE: usize = 100;

/// What one run did, record by record, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Open records older than the grace period that this run looked at.
    pub examined: u32,
    /// `submitted → settled` from the receipt.
    pub settled: u32,
    /// `submitted → failed` from the receipt (reverted, or no matching `Transfer`).
    pub failed: u32,
    /// `submitted`, in the pool, not mined yet, sent less than `X402_REPLAY_BUMP_AFTER_MS` ago.
    pub pending: u32,
    /// Still unmined after `X402_REPLAY_BUMP_AFTER_MS`: the worker was asked for a replacement
    /// with higher fees.
    pub bumped: u32,
    /// Past `validBefore` and not mined: the worker was asked to cancel it at its lane nonce.
    pub cancelling: u32,
    /// Its lane nonce went to another transaction: back to `queued`, to be signed afresh.
    pub resigned: u32,
    /// `submitted` but dropped by the node: the stored bytes were sent again.
    pub rebroadcast: u32,
    /// `signed → submitted`: the stored bytes were sent.
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
    /// The run stopped at its bound with records left for the next run.
    pub more: bool,
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
            crate::settle::store_from(config, aws),
            queue,
            config.lane_keys.clone(),
            Tunables {
                min_age: config.replay_min_age,
                max_records: config.replay_max_records,
                bump_after: config.replay_bump_after,
            },
        ))
    }

    /// One run: every open record older than the grace period, oldest first, up to the record
    /// bound, and, if a `deadline` (the Lambda's own) is given, until a margin before it
    /// ([`STOP_BEFORE_DEADLINE`], or a quarter of the time left if that is less).
    /// Fails only when the index cannot be read; a record that cannot be handled now is counted in
    /// `errors` and left for the next run.
    pub async fn run(&self, deadline: Option<Instant>) -> Result<Summary, StoreError> {
        let started = now_ms();
        let stop_at = deadline.map(|d| {
            let margin = STOP_BEFORE_DEADLINE.min(d.saturating_duration_since(Instant::now()) / 4);
            d.checked_sub(margin).unwrap_or(d)
        });
        let out_of_time = || stop_at.is_some_and(|at| Instant::now() >= at);
        let min_age = self.tunables.min_age;
        let changed_by =
            started.saturating_sub(u64::try_from(min_age.as_millis()).unwrap_or(u64::MAX));
        // Names this run's queue messages, so SQS deduplication does not swallow them.
        let attempt = format!("replay-{started}");
        gauges::report_operational(&self.facilitator, &self.store).await;
        let mut summary = Summary::default();
        let mut start = None;
        'pages: loop {
            let left = self
                .tunables
                .max_records
                .saturating_sub(summary.examined as usize);
            if left == 0 || out_of_time() {
                summary.more = true;
                break;
            }
            let limit = i32::try_from(left.min(PAGE)).unwrap_or(1);
            let page = self.store.open_records(changed_by, limit, start).await?;
            let more_pages = page.next.is_some();
            let count = page.records.len();
            for (i, indexed) in page.records.into_iter().enumerate() {
                if out_of_time() {
                    summary.more = i < count || more_pages;
                    break 'pages;
                }
                summary.examined += 1;
                let id = indexed.id.clone();
                let action = self.replay_one(indexed, &attempt).await;
                if !matches!(action, Action::Pending | Action::MovedOn) {
                    tracing::info!(id = %id, action = action.as_str(), "replayed");
                }
                summary.count(action);
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        tracing::info!(
            examined = summary.examined,
            settled = summary.settled,
            failed = summary.failed,
            pending = summary.pending,
            bumped = summary.bumped,
            cancelling = summary.cancelling,
            resigned = summary.resigned,
            relaned = summary.relaned,
            rebroadcast = summary.rebroadcast,
            submitted = summary.submitted,
            refused = summary.refused,
            expired = summary.expired,
            requeued = summary.requeued,
            moved_on = summary.moved_on,
            errors = summary.errors,
            more = summary.more,
            elapsed_ms = now_ms().saturating_sub(started),
            "replay finished"
        );
        Ok(summary)
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

    /// A `queued` record: nothing signed, so it can expire, change lanes or be queued again freely.
    async fn queued(&self, record: PaymentRecord, attempt: &str) -> Action {
        if unix_now() >= record.valid_before {
            return match lifecycle::expire_queued(&self.store, &record.id).await {
                Ok(true) => Action::Expired,
                Ok(false) => Action::MovedOn,
                Err(e) => error(&record.id, &e),
            };
        }
        if !self.lanes.is_empty() && !self.lanes.contains(&record.lane) {
            // Its lane was drained (taken out of X402_LANE_KEYS): no worker will sign with it, and
            // its messages end in the dead-letter queue. Nothing was signed, so it can move.
            let lane = lane_for_id(&record.id, &self.lanes).to_owned();
            return match self.store.move_lane(&record.id, &record.lane, &lane).await {
                Ok(true) => match self.queue.requeue(&record.id, &lane, attempt).await {
                    Ok(()) => Action::Relaned,
                    Err(e) => error(&record.id, &e),
                },
                Ok(false) => Action::MovedOn,
                Err(e) => error(&record.id, &e),
            };
        }
        match self.queue.requeue(&record.id, &record.lane, attempt).await {
            Ok(()) => Action::Requeued,
            Err(e) => error(&record.id, &e),
        }
    }

    /// A `signed` or `submitted` record: a transaction exists at its lane nonce.
    async fn in_flight(&self, chain: &Chain, record: PaymentRecord, attempt: &str) -> Action {
        let (Some(sender), Some(nonce), Some(hash)) = (
            record.sender.as_deref().and_then(hex::address),
            record.lane_nonce,
            record.tx_hash.clone(),
        ) else {
            return error(&record.id, &"signed without its sender, lane nonce or hash");
        };
        // The lane's mined nonce first, then the receipts: a transaction of ours mined between the
        // two reads is then seen by the second, and never mistaken for someone else's.
        let mined_nonce = match chain.latest_nonce(sender).await {
            Ok(n) => n,
            Err(e) => return error(&record.id, &e),
        };
        match receipt::finish(chain, &self.store, &record, None).await {
            Ok(Some(finished)) => {
                return match finished.state {
                    State::Settled => Action::Settled,
                    State::Failed => Action::Failed,
                    State::Expired => Action::Expired,
                    _ => Action::MovedOn,
                }
            }
            Ok(None) => {}
            Err(e) => return error(&record.id, &e),
        }
        if mined_nonce > nonce {
            return self
                .nonce_used_elsewhere(chain, &record, &hash, attempt)
                .await;
        }
        let expired = unix_now() >= record.valid_before;
        if record.state == State::Signed && !expired {
            return match lifecycle::submit(chain, &self.store, &record).await {
                Ok((Sent::Accepted, true)) => Action::Submitted,
                Ok((Sent::Accepted, false)) => Action::MovedOn,
                Ok((Sent::Refused(_), _)) => Action::Refused,
                Err(e) => error(&record.id, &e),
            };
        }
        let in_pool = match record.state {
            State::Signed => false,
            _ => match hex::b256(&hash) {
                Some(h) => match chain.transaction_known(h).await {
                    Ok(known) => known,
                    Err(e) => return error(&record.id, &e),
                },
                None => return error(&record.id, &format!("malformed hash {hash}")),
            },
        };
        let sent_ago = Duration::from_millis(now_ms().saturating_sub(record.updated_at));
        let action = if expired {
            // Whatever it was, the transfer would now revert: use the nonce without paying.
            Action::Cancelling
        } else if !in_pool {
            // Dropped from the pool: the same bytes again (I3).
            return match lifecycle::send_stored(chain, &record).await {
                Ok(Sent::Accepted) => Action::Rebroadcast,
                Ok(Sent::Refused(_)) => Action::Refused,
                Err(e) => error(&record.id, &e),
            };
        } else if sent_ago >= self.tunables.bump_after && nonce == mined_nonce {
            // Only the lane's next nonce to be mined: a transaction queued behind another gains
            // nothing from higher fees, and the one ahead gets its own bump.
            Action::Bumped
        } else {
            return Action::Pending;
        };
        match self
            .queue
            .request_replacement(&record.id, &record.lane, &hash)
            .await
        {
            Ok(()) => action,
            Err(e) => error(&record.id, &e),
        }
    }

    /// The record's lane nonce was used, by none of its own transactions: none of them can ever be
    /// mined. What is left depends on the authorization.
    async fn nonce_used_elsewhere(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        hash: &str,
        attempt: &str,
    ) -> Action {
        let used = match authorization_used(chain, record).await {
            Ok(used) => used,
            Err(e) => return error(&record.id, &e),
        };
        if used {
            return self.used_by_whom(chain, record).await;
        }
        let (to, reason, message) = if unix_now() >= record.valid_before {
            (
                State::Expired,
                Reason::ValidBefore,
                "the authorization expired after its lane nonce went to another transaction",
            )
        } else {
            // Unused and still valid: sign it afresh at a new nonce. Safe, because the old
            // transactions can never be mined (their nonce is taken) and the token accepts the
            // authorization once at most.
            return match self
                .store
                .requeue_unsent(&record.id, record.state, hash)
                .await
            {
                Ok(true) => match self.queue.requeue(&record.id, &record.lane, attempt).await {
                    Ok(()) => Action::Resigned,
                    // Queued in the table but not on SQS: the next run queues it again.
                    Err(e) => error(&record.id, &e),
                },
                Ok(false) => Action::MovedOn,
                Err(e) => error(&record.id, &e),
            };
        };
        match self
            .store
            .transition(
                &record.id,
                record.state,
                to,
                &receipt::failure(reason, message),
            )
            .await
        {
            Ok(true) => Action::Expired,
            Ok(false) => Action::MovedOn,
            Err(e) => error(&record.id, &e),
        }
    }
}

impl Replayer {
    /// The authorization is used, and no receipt of ours was found under the record's hashes:
    /// find the transaction that used it before deciding anything. Ours (the node that answered
    /// the receipts lags behind the one that logged it) → finished from its receipt, or left for
    /// the next run while that node has none. Somebody else's that paid the payee exactly →
    /// `settled`, naming it. Any other → `failed`, naming it.
    async fn used_by_whom(&self, chain: &Chain, record: &PaymentRecord) -> Action {
        let (Some(transfer), Some(nonce)) = (
            record.transfer(),
            record.authorization_nonce().and_then(hex::b256),
        ) else {
            return error(&record.id, &"the record's payment is not well formed");
        };
        let found = match attribution::find_use(chain, &transfer, nonce).await {
            Ok(found) => found,
            Err(e) => return error(&record.id, &e),
        };
        let (to, fields) = match found {
            Some(u) if record.is_ours(u.tx) => {
                return match receipt::finish(chain, &self.store, record, None).await {
                    Ok(Some(finished)) => match finished.state {
                        State::Settled => Action::Settled,
                        State::Failed => Action::Failed,
                        State::Expired => Action::Expired,
                        _ => Action::MovedOn,
                    },
                    Ok(None) => error(&record.id, &format!("{:#x} is logged but its receipt is not found yet", u.tx)),
                    Err(e) => error(&record.id, &e),
                };
            }
            Some(u) if transfer.made_by(&u.receipt) => (
                State::Settled,
                lifecycle::settled_by(u.tx, u.receipt.block_number, false),
            ),
            Some(u) => (
                State::Failed,
                receipt::failure(
                    Reason::NonceAlreadyUsed,
                    &format!(
                        "the authorization was used by transaction {:#x}, which is not this facilitator's and did not make this payment",
                        u.tx
                    ),
                )
                .to_vec(),
            ),
            None => (
                State::Failed,
                receipt::failure(
                    Reason::NonceAlreadyUsed,
                    "the authorization was cancelled on chain, or used by a transaction older than the lookback (X402_LOGS_LOOKBACK_BLOCKS)",
                )
                .to_vec(),
            ),
        };
        match self
            .store
            .transition(&record.id, record.state, to, &fields)
            .await
        {
            Ok(true) if to == State::Settled => Action::Settled,
            Ok(true) => Action::Failed,
            Ok(false) => Action::MovedOn,
            Err(e) => error(&record.id, &e),
        }
    }
}

/// Whether the token has the record's authorization as used (`authorizationState`).
async fn authorization_used(chain: &Chain, record: &PaymentRecord) -> Result<bool, String> {
    let (Some(asset), Some(payer), Some(nonce)) = (
        hex::address(&record.asset),
        hex::address(&record.payer),
        record.authorization_nonce().and_then(hex::b256),
    ) else {
        return Err("the record's asset, payer or nonce is not hex".to_owned());
    };
    let call = IEip3009::authorizationStateCall {
        authorizer: payer,
        nonce,
    };
    match chain
        .call(None, asset, call.abi_encode().into())
        .await
        .map_err(|e| e.to_string())?
    {
        CallOutcome::Returned(data) => IEip3009::authorizationStateCall::abi_decode_returns(&data)
            .map_err(|e| format!("authorizationState answered {data}: {e}")),
        CallOutcome::Reverted { message } => Err(format!("authorizationState reverted: {message}")),
    }
}

fn error(id: &str, problem: &dyn std::fmt::Display) -> Action {
    tracing::warn!(id, error = %problem, "replay could not handle a record now; the next run tries again");
    Action::Error
}
