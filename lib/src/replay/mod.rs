//! Replay: the scheduled reconciliation that finishes or repairs every payment that is not terminal
//! (docs/settlement.md "Replay"; DESIGN I3, I6).
//!
//! One run reads the sparse `open-by-age` index oldest first, up to a bound, and leaves alone every
//! record changed within the grace period (`X402_REPLAY_MIN_AGE_MS`): those belong to `/settle` and
//! the worker. Each record is read again, strongly consistent, and then:
//!
//! - `submitted` with a receipt → `settled` or `failed`, by the same rule as `/settle`;
//! - `submitted`, no receipt and unknown to the node (dropped from the pool) → the stored bytes are
//!   sent again (I3): same transaction, same hash;
//! - `signed` (a crash between the write-ahead and the broadcast) → the stored bytes are sent and the
//!   record moves to `submitted`, exactly as the worker does it;
//! - `queued` past `validBefore` → `expired` (nothing was signed, so nothing can settle);
//! - `queued` otherwise → queued on its lane again (the worker ignores a message whose record moved on).
//!
//! Every change is a conditional transition, so replay racing the live path, or itself, moves a
//! record at most once, and a second run right after the first finds nothing to do.
//!
//! Not done yet (issue 4): a transaction stuck in the pool is only counted (`pending`), not
//! replaced with a higher fee; bytes the node refuses (`refused`, e.g. their lane nonce was used) are
//! left as they are, and lane nonce gaps are not filled; `signed`/`submitted` records past
//! `validBefore` whose bytes are gone are not yet checked against `authorizationState` to expire
//! them; the run is bounded by a record count, not by the Lambda's remaining time; the summary is a
//! log line, not yet a CloudWatch metric (EMF).

use std::time::Duration;

use serde::Serialize;

use crate::{
    config::{Config, ConfigError},
    facilitator::{unix_now, Facilitator},
    queue::Queue,
    settle::{
        receipt,
        worker::{self, Sent},
    },
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
    /// `submitted`, known to the node, not mined yet (stuck ones get a fee bump later).
    pub pending: u32,
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
    min_age: Duration,
    max_records: usize,
}

impl Replayer {
    pub fn new(
        facilitator: Facilitator,
        store: Store,
        queue: Queue,
        min_age: Duration,
        max_records: usize,
    ) -> Self {
        Replayer {
            facilitator,
            store,
            queue,
            min_age,
            max_records,
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
            config.replay_min_age,
            config.replay_max_records,
        ))
    }

    /// One run: every open record older than the grace period, oldest first, up to the bound.
    /// Fails only when the index cannot be read; a record that cannot be handled now is counted in
    /// `errors` and left for the next run.
    pub async fn run(&self) -> Result<Summary, StoreError> {
        let started = now_ms();
        let changed_by =
            started.saturating_sub(u64::try_from(self.min_age.as_millis()).unwrap_or(u64::MAX));
        // Names this run's queue messages, so SQS deduplication does not swallow them.
        let attempt = format!("replay-{started}");
        crate::metrics::report_operational(&self.facilitator, &self.store).await;
        let mut summary = Summary::default();
        let mut start = None;
        loop {
            let left = self.max_records.saturating_sub(summary.examined as usize);
            if left == 0 {
                summary.more = start.is_some();
                break;
            }
            let limit = i32::try_from(left.min(PAGE)).unwrap_or(1);
            let page = self.store.open_records(changed_by, limit, start).await?;
            for indexed in page.records {
                summary.examined += 1;
                let id = indexed.id.clone();
                let action = self.replay_one(indexed, &attempt).await;
                if action != Action::Pending {
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
            State::Submitted => match receipt::finish(chain, &self.store, &record).await {
                Ok(Some(finished)) => match finished.state {
                    State::Settled => Action::Settled,
                    State::Failed => Action::Failed,
                    _ => Action::MovedOn,
                },
                Ok(None) => self.resend_if_dropped(chain, &record).await,
                Err(e) => error(&record.id, &e),
            },
            State::Signed => match worker::broadcast(chain, &self.store, &record).await {
                Ok((Sent::Accepted, true)) => Action::Submitted,
                Ok((Sent::Accepted, false)) => Action::MovedOn,
                Ok((Sent::Refused(_), _)) => Action::Refused,
                Err(e) => error(&record.id, &e),
            },
            State::Queued if unix_now() >= record.valid_before => {
                match worker::expire_queued(&self.store, &record.id).await {
                    Ok(true) => Action::Expired,
                    Ok(false) => Action::MovedOn,
                    Err(e) => error(&record.id, &e),
                }
            }
            State::Queued => match self.queue.requeue(&record.id, &record.lane, attempt).await {
                Ok(()) => Action::Requeued,
                Err(e) => error(&record.id, &e),
            },
            _ => Action::MovedOn,
        }
    }

    /// A `submitted` record without a receipt: still in the pool, or dropped and sent again.
    async fn resend_if_dropped(&self, chain: &crate::evm::Chain, record: &PaymentRecord) -> Action {
        let Some(hash) = record.tx_hash.as_deref().and_then(crate::evm::hex::b256) else {
            return error(&record.id, &"submitted without a transaction hash");
        };
        match chain.transaction_known(hash).await {
            Ok(true) => Action::Pending,
            Ok(false) => match worker::send_stored(chain, record).await {
                Ok(Sent::Accepted) => Action::Rebroadcast,
                Ok(Sent::Refused(_)) => Action::Refused,
                Err(e) => error(&record.id, &e),
            },
            Err(e) => error(&record.id, &e),
        }
    }
}

fn error(id: &str, problem: &dyn std::fmt::Display) -> Action {
    tracing::warn!(id, error = %problem, "replay could not handle a record now; the next run tries again");
    Action::Error
}
