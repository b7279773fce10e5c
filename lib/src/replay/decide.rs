//! Replay's decisions, apart from its I/O: each takes the record and the facts replay read from
//! the chain and says what to do, one rule of the module's list per branch, each unit-tested.

use std::time::Duration;

use crate::{
    lifecycle::UsedBy,
    protocol::Reason,
    settle::lane_for,
    store::{Failure, Mined, PaymentRecord},
};

/// What replay does with a `queued` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedPlan {
    /// Past `validBefore`: nothing was signed, so it expires.
    Expire,
    /// Its lane is no longer configured (drained): move it to this lane and queue it there.
    Relane(String),
    /// Queue it on its lane again (the worker ignores a message whose record moved on).
    Requeue,
}

/// `now`: unix seconds; `lanes`: the lanes workers sign with.
pub fn queued_plan(record: &PaymentRecord, now: u64, lanes: &[String]) -> QueuedPlan {
    if now >= record.valid_before {
        QueuedPlan::Expire
    } else if !lanes.is_empty() && !lanes.contains(&record.lane) {
        QueuedPlan::Relane(lane_for(&record.id, lanes).to_owned())
    } else {
        QueuedPlan::Requeue
    }
}

/// What replay does with a `signed` or `submitted` record none of whose transactions is mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightPlan {
    /// Its lane nonce was used by another transaction: none of its own can ever be mined.
    NonceTaken,
    /// Past `validBefore`: ask the worker for a zero-value self-transfer at its nonce.
    Cancel,
    /// Valid: whether the node has it decides ([`pool_plan`]). Asked of a `signed` record too: the
    /// worker does not record its broadcast, so `signed` is either sent and waiting or never sent
    /// (a crash between the write-ahead and the broadcast), and only the node can tell which.
    CheckPool,
}

/// `mined_nonce`: the lane's nonce as mined (read before the receipts); `nonce`: the record's.
pub fn in_flight_plan(
    record: &PaymentRecord,
    nonce: u64,
    mined_nonce: u64,
    now: u64,
) -> InFlightPlan {
    let expired = now >= record.valid_before;
    if mined_nonce > nonce {
        InFlightPlan::NonceTaken
    } else if expired {
        // Whatever it was, the transfer would now revert: use the nonce without paying.
        InFlightPlan::Cancel
    } else {
        InFlightPlan::CheckPool
    }
}

/// What replay does with a `signed` or `submitted`, valid, unmined transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPlan {
    /// Not in the pool (dropped, or never sent): the same bytes again (I3).
    Rebroadcast,
    /// Next in its lane and either priced out or passed over: ask the worker for higher fees.
    Bump,
    /// Leave it to be mined.
    Pending,
}

/// What replay knows of a `signed` or `submitted`, valid, unmined transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFacts {
    /// The node still has it.
    pub in_pool: bool,
    /// Its nonce is the lane's next to be mined. A transaction queued behind another gains nothing
    /// from higher fees, and the one ahead gets its own bump.
    pub next_in_lane: bool,
    /// Its `maxFeePerGas` is below the latest block's base fee: no block takes it as it is.
    pub underpriced: bool,
    /// How long the chain has run since it was sent: the latest block's time minus the send.
    /// It stands still while the chain does (a halted sequencer), so a halt never compounds bumps.
    pub chain_waited: Duration,
}

/// Bump only a transaction next in its lane that is priced out, or that blocks have passed over
/// for `bump_after` of chain time; never on the wall clock alone. A dropped one is sent again as
/// it is, unless it is priced out: nodes drop those, and refuse the same bytes again.
pub fn pool_plan(facts: PoolFacts, bump_after: Duration) -> PoolPlan {
    if !facts.in_pool {
        if facts.next_in_lane && facts.underpriced {
            PoolPlan::Bump
        } else {
            PoolPlan::Rebroadcast
        }
    } else if facts.next_in_lane && (facts.underpriced || facts.chain_waited >= bump_after) {
        PoolPlan::Bump
    } else {
        PoolPlan::Pending
    }
}

/// What replay does once a record's lane nonce went to another transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceTakenPlan {
    /// The token has the authorization as used: find who used it ([`used_plan`]).
    FindWhoUsed,
    /// Unused, and it ran out: `expired`.
    Expire(Failure),
    /// Unused and still valid: back to `queued`, to be signed afresh at a new nonce. Safe: the old
    /// transactions can never be mined (their nonce is taken) and the token accepts the
    /// authorization once at most.
    Resign,
}

pub fn nonce_taken_plan(authorization_used: bool, expired: bool) -> NonceTakenPlan {
    match (authorization_used, expired) {
        (true, _) => NonceTakenPlan::FindWhoUsed,
        (false, true) => NonceTakenPlan::Expire(Failure::new(
            Reason::ValidBefore,
            "the authorization expired after its lane nonce went to another transaction",
        )),
        (false, false) => NonceTakenPlan::Resign,
    }
}

/// What replay does once it knows who used the authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsedPlan {
    /// One of ours (the node that answered the receipts lags behind the one that logged it):
    /// finish it from its receipt, or leave it for the next run while that node has none.
    FinishOurs(Mined),
    /// Somebody else's that paid the payee exactly: `settled`, naming it.
    SettleByOther(Mined),
    /// Anything else: `failed`, saying why.
    Fail(Failure),
}

pub fn used_plan(record: &PaymentRecord, used_by: UsedBy) -> UsedPlan {
    match used_by {
        // Permit2 logs nothing on use: only the record's own receipts could have named a user.
        UsedBy::Nobody if record.id.is_permit2() => UsedPlan::Fail(Failure::new(
            record.used_reason(),
            "the Permit2 nonce is used on chain, by no transaction of this payment's: another \
             settlement of the permit, or the payer invalidated the nonce",
        )),
        UsedBy::Ours { mined, .. } => UsedPlan::FinishOurs(mined),
        UsedBy::Theirs { mined, paid: true } => UsedPlan::SettleByOther(mined),
        UsedBy::Theirs { mined, paid: false } => UsedPlan::Fail(Failure::new(
            Reason::NonceAlreadyUsed,
            format!(
                "the authorization was used by transaction {:#x}, which is not this facilitator's and did not make this payment",
                mined.tx
            ),
        )),
        UsedBy::Nobody => UsedPlan::Fail(Failure::new(
            Reason::NonceAlreadyUsed,
            "the authorization was cancelled on chain, or used by a transaction older than the lookback (X402_LOGS_LOOKBACK_BLOCKS)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::B256;

    use super::*;
    use crate::store::State;

    fn record(state: State) -> PaymentRecord {
        crate::store::sample(state)
    }

    fn lanes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn mined() -> Mined {
        Mined {
            tx: B256::repeat_byte(5),
            block: Some(3),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn queued_past_valid_before_expires() {
        let plan = queued_plan(&record(State::Queued), 1_000, &lanes(&["lane-0"]));
        assert_eq!(plan, QueuedPlan::Expire);
    }

    #[test]
    fn queued_on_a_drained_lane_moves_to_a_configured_lane() {
        let plan = queued_plan(&record(State::Queued), 999, &lanes(&["lane-1"]));
        assert_eq!(plan, QueuedPlan::Relane("lane-1".to_owned()));
    }

    #[test]
    fn queued_otherwise_is_queued_again() {
        let plan = queued_plan(&record(State::Queued), 999, &lanes(&["lane-0", "lane-1"]));
        assert_eq!(plan, QueuedPlan::Requeue);
        // With no lanes configured (a replay that only reconciles), it stays on its own lane.
        assert_eq!(
            queued_plan(&record(State::Queued), 999, &[]),
            QueuedPlan::Requeue
        );
    }

    #[test]
    fn a_lane_nonce_used_by_another_transaction_comes_first() {
        for state in [State::Signed, State::Submitted] {
            assert_eq!(
                in_flight_plan(&record(state), 7, 8, 999),
                InFlightPlan::NonceTaken
            );
            assert_eq!(
                in_flight_plan(&record(state), 7, 8, 1_000),
                InFlightPlan::NonceTaken
            );
        }
    }

    #[test]
    fn signed_or_submitted_past_valid_before_is_cancelled() {
        for state in [State::Signed, State::Submitted] {
            assert_eq!(
                in_flight_plan(&record(state), 7, 6, 1_000),
                InFlightPlan::Cancel
            );
        }
    }

    #[test]
    fn signed_or_submitted_and_valid_asks_the_pool() {
        // `signed` included: the worker does not record its broadcast, so a `signed` record's
        // transaction may be in the pool, and sending it again first would only delay a bump.
        for state in [State::Signed, State::Submitted] {
            assert_eq!(
                in_flight_plan(&record(state), 7, 7, 999),
                InFlightPlan::CheckPool
            );
        }
    }

    /// A transaction in the pool, next in its lane, fairly priced, sent a second of chain time ago.
    fn pooled() -> PoolFacts {
        PoolFacts {
            in_pool: true,
            next_in_lane: true,
            underpriced: false,
            chain_waited: SECOND,
        }
    }

    #[test]
    fn dropped_from_the_pool_is_sent_again() {
        let dropped = PoolFacts {
            in_pool: false,
            ..pooled()
        };
        assert_eq!(pool_plan(dropped, 60 * SECOND), PoolPlan::Rebroadcast);
    }

    #[test]
    fn dropped_because_priced_out_is_bumped_not_sent_again() {
        let dropped = PoolFacts {
            in_pool: false,
            underpriced: true,
            ..pooled()
        };
        assert_eq!(pool_plan(dropped, 60 * SECOND), PoolPlan::Bump);
        let behind = PoolFacts {
            next_in_lane: false,
            ..dropped
        };
        assert_eq!(pool_plan(behind, 60 * SECOND), PoolPlan::Rebroadcast);
    }

    #[test]
    fn passed_over_for_long_enough_in_chain_time_and_next_in_its_lane_is_bumped() {
        let passed_over = PoolFacts {
            chain_waited: 60 * SECOND,
            ..pooled()
        };
        assert_eq!(pool_plan(passed_over, 60 * SECOND), PoolPlan::Bump);
    }

    #[test]
    fn priced_out_by_the_base_fee_and_next_in_its_lane_is_bumped_at_once() {
        let priced_out = PoolFacts {
            underpriced: true,
            ..pooled()
        };
        assert_eq!(pool_plan(priced_out, 60 * SECOND), PoolPlan::Bump);
    }

    #[test]
    fn while_the_chain_stands_still_a_fairly_priced_transaction_waits() {
        // A halted sequencer: hours of wall clock, no blocks, so no chain time passes.
        assert_eq!(pool_plan(pooled(), 60 * SECOND), PoolPlan::Pending);
    }

    #[test]
    fn behind_an_earlier_nonce_nothing_is_bumped() {
        let behind = PoolFacts {
            next_in_lane: false,
            underpriced: true,
            chain_waited: 600 * SECOND,
            ..pooled()
        };
        assert_eq!(pool_plan(behind, 60 * SECOND), PoolPlan::Pending);
    }

    #[test]
    fn a_taken_nonce_with_the_authorization_used_asks_who_used_it() {
        assert_eq!(nonce_taken_plan(true, false), NonceTakenPlan::FindWhoUsed);
        assert_eq!(nonce_taken_plan(true, true), NonceTakenPlan::FindWhoUsed);
    }

    #[test]
    fn a_taken_nonce_with_the_authorization_unused_and_expired_expires() {
        assert!(matches!(
            nonce_taken_plan(false, true),
            NonceTakenPlan::Expire(f) if f.reason == Reason::ValidBefore
        ));
    }

    #[test]
    fn a_taken_nonce_with_the_authorization_unused_and_valid_is_signed_afresh() {
        assert_eq!(nonce_taken_plan(false, false), NonceTakenPlan::Resign);
    }

    #[test]
    fn used_by_ours_is_finished_from_its_receipt() {
        let plan = used_plan(
            &record(State::Submitted),
            UsedBy::Ours {
                mined: mined(),
                paid: true,
            },
        );
        assert_eq!(plan, UsedPlan::FinishOurs(mined()));
    }

    #[test]
    fn used_by_theirs_that_paid_the_payee_settles() {
        let plan = used_plan(
            &record(State::Submitted),
            UsedBy::Theirs {
                mined: mined(),
                paid: true,
            },
        );
        assert_eq!(plan, UsedPlan::SettleByOther(mined()));
    }

    #[test]
    fn used_by_theirs_that_did_not_pay_fails_naming_it() {
        let plan = used_plan(
            &record(State::Submitted),
            UsedBy::Theirs {
                mined: mined(),
                paid: false,
            },
        );
        assert!(matches!(
            plan,
            UsedPlan::Fail(f) if f.reason == Reason::NonceAlreadyUsed && f.message.contains(&format!("{:#x}", mined().tx))
        ));
    }

    #[test]
    fn used_by_nobody_in_the_lookback_fails() {
        assert!(matches!(
            used_plan(&record(State::Submitted), UsedBy::Nobody),
            UsedPlan::Fail(f) if f.reason == Reason::NonceAlreadyUsed
        ));
    }

    #[test]
    fn a_permit2_nonce_used_by_nobody_of_ours_fails_as_permit2_invalid_nonce() {
        let mut permit2 = record(State::Submitted);
        permit2.id = crate::store::PaymentId::permit2(
            &permit2.network,
            permit2.asset,
            permit2.payer,
            alloy::primitives::U256::from(7),
        );
        assert!(matches!(
            used_plan(&permit2, UsedBy::Nobody),
            UsedPlan::Fail(f) if f.reason == Reason::Permit2InvalidNonce
        ));
    }
}
