//! How one replay run shares itself out so that every run makes progress (issue 14): the rules,
//! apart from the I/O, each unit-tested. docs/settlement.md "Replay" states them for operators.
//!
//! - A run is a sequence of **sweeps**: one per configured network, and one (`other`) for items of
//!   no configured network. Each sweep gets an equal share of the time and of the records the run
//!   has left when it starts, so a sweep that finishes early passes what it did not use on, and one
//!   whose RPC hangs (a timeout per record) stops at its share while the others still get theirs.
//! - Each sweep resumes where its last run stopped (a **cursor** in DynamoDB), not at the oldest
//!   record; when it reaches the end of the index it starts again from the oldest. Every open
//!   record is therefore looked at once per pass, however many runs a pass takes.
//! - A **lease** makes runs exclusive. It lasts until the run's deadline plus a margin, so a run
//!   that died holding it blocks the next ones only that long.

use std::time::Duration;

use crate::store::IndexPosition;

/// The sweep of items whose network is not configured here (or unreadable).
pub const OTHER_SWEEP: &str = "other";

/// How long after a run's deadline its lease still holds: the Lambda is stopped at its deadline,
/// and another instance's clock may run a little ahead of this one's.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The lease of a run without a deadline (tests, a local run) lasts as long as the longest Lambda
/// invocation; it is given back at the end of the run anyway.
pub const LEASE_WITHOUT_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// The time the next sweep may use: an equal share of what the run has `left` among the
/// `sweeps_left` sweeps still to run (this one included).
pub fn time_share(left: Duration, sweeps_left: usize) -> Duration {
    left / u32::try_from(sweeps_left.max(1)).unwrap_or(u32::MAX)
}

/// The records the next sweep may look at: an equal share, rounded up so that the run's bound is
/// used to its last record, and at least one so no sweep is starved by a small bound.
pub fn record_share(left: usize, sweeps_left: usize) -> usize {
    left.div_ceil(sweeps_left.max(1)).max(1)
}

/// How a sweep ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepEnd {
    /// It reached the end of the index (up to the grace period's cutoff).
    Reached,
    /// It stopped at its share of time or records; `after` the last item it looked at, if any.
    Stopped { after: Option<IndexPosition> },
}

/// Where the sweep starts next run, given where it started (`from`) and how it ended. At the end
/// of the index it wraps to the oldest again (`None`), so an old record that stays open (a stuck
/// transaction, an item that cannot be read) is looked at again on every pass, never left behind.
pub fn next_cursor(from: Option<IndexPosition>, end: SweepEnd) -> Option<IndexPosition> {
    match end {
        SweepEnd::Reached => None,
        SweepEnd::Stopped { after: Some(after) } => Some(after),
        SweepEnd::Stopped { after: None } => from,
    }
}

/// When a run's lease ends (unix ms): `left` (the time to the run's deadline) plus
/// [`LEASE_MARGIN`], or [`LEASE_WITHOUT_DEADLINE`] when it has none. A lease that ends at or
/// before the time another run asks is free for it.
pub fn lease_until(now_ms: u64, left: Option<Duration>) -> u64 {
    let held = left.map_or(LEASE_WITHOUT_DEADLINE, |left| left + LEASE_MARGIN);
    now_ms.saturating_add(u64::try_from(held.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(updated_at: u64) -> IndexPosition {
        IndexPosition {
            updated_at,
            id: format!("eip155:84532#{updated_at}"),
        }
    }

    #[test]
    fn each_sweep_gets_an_equal_share_of_the_time_left() {
        assert_eq!(time_share(60 * SECOND, 3), 20 * SECOND);
        assert_eq!(time_share(60 * SECOND, 1), 60 * SECOND);
        // No sweep counted (cannot happen): all of it, rather than a division by zero.
        assert_eq!(time_share(60 * SECOND, 0), 60 * SECOND);
    }

    #[test]
    fn time_a_sweep_did_not_use_passes_on_to_the_next() {
        // Three sweeps, 60 s: the first finds nothing and uses 1 s; the two others share 59 s.
        let first = time_share(60 * SECOND, 3);
        let second = time_share(60 * SECOND - SECOND, 2);
        assert!(second > first);
        assert_eq!(second, Duration::from_millis(29_500));
        // One that uses all its share leaves the next one exactly as much.
        assert_eq!(time_share(60 * SECOND - first, 2), first);
    }

    #[test]
    fn records_are_shared_rounded_up_and_never_to_nothing() {
        assert_eq!(record_share(500, 2), 250);
        assert_eq!(record_share(500, 3), 167);
        assert_eq!(record_share(1, 3), 1);
        assert_eq!(record_share(0, 3), 1);
    }

    #[test]
    fn a_sweep_that_stopped_resumes_after_the_last_item_it_looked_at() {
        let end = SweepEnd::Stopped { after: Some(at(7)) };
        assert_eq!(next_cursor(Some(at(3)), end), Some(at(7)));
        assert_eq!(
            next_cursor(None, SweepEnd::Stopped { after: Some(at(7)) }),
            Some(at(7))
        );
    }

    #[test]
    fn a_sweep_that_stopped_before_looking_at_anything_keeps_its_place() {
        let end = SweepEnd::Stopped { after: None };
        assert_eq!(next_cursor(Some(at(3)), end.clone()), Some(at(3)));
        assert_eq!(next_cursor(None, end), None);
    }

    #[test]
    fn a_sweep_that_reached_the_end_wraps_to_the_oldest() {
        assert_eq!(next_cursor(Some(at(3)), SweepEnd::Reached), None);
        assert_eq!(next_cursor(None, SweepEnd::Reached), None);
    }

    #[test]
    fn a_lease_lasts_until_the_deadline_plus_the_margin() {
        assert_eq!(lease_until(1_000, Some(300 * SECOND)), 1_000 + 330_000);
        assert_eq!(lease_until(1_000, Some(Duration::ZERO)), 1_000 + 30_000);
    }

    #[test]
    fn a_lease_without_a_deadline_lasts_as_long_as_the_longest_invocation() {
        assert_eq!(lease_until(1_000, None), 1_000 + 900_000);
        assert_eq!(lease_until(u64::MAX, None), u64::MAX);
    }
}
