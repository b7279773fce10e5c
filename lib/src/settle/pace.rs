//! When a waiting `/settle` looks again (docs/settlement.md, `/settle` step 5).
//!
//! A follower pays for every look: a DynamoDB read of the record while the payment is `queued`, an
//! RPC receipt lookup once it is `signed`. Looking too late adds latency to every settlement;
//! looking too often crowds DynamoDB, which the worker needs, when many payments wait at once. So:
//!
//! - while `queued`, the first look comes when this instance's recent payments were typically
//!   signed (a [`RunningTime`] of signing, which follows the load: seconds when lanes are backed
//!   up, tens of milliseconds when they are idle), and later looks a quarter of the time waited so
//!   far after the last one, so a payment that waits long behind a busy lane is read a few times
//!   rather than once per poll;
//! - once `signed`, the first receipt lookup comes when this instance's receipts have been there,
//!   counted from the write-ahead ([`ReceiptTime`]): the worker does not record its broadcast, so
//!   a record seen `signed` just after the write-ahead names a transaction the node may not have
//!   mined, or even received, yet. Then after 10 ms, doubling up to `X402_SETTLE_POLL_MS`: a fast
//!   chain answers within one short step of the broadcast, a chain with a block time is looked at
//!   about once per poll while it mines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::State;

/// The shortest wait between two looks.
pub(crate) const MIN_WAIT: Duration = Duration::from_millis(10);

/// How long one step of this instance's payments typically took, as a running average in which
/// each new payment weighs a quarter: from queued to signed (the record's `updated_at` at signing
/// minus its `created_at`), or from the write-ahead to the receipt found ([`receipt_sample`]).
#[derive(Debug)]
pub(crate) struct RunningTime {
    /// Microseconds: whole milliseconds would round every update down, and a receipt's time on a
    /// fast chain is only a few of them.
    micros: AtomicU64,
}

impl RunningTime {
    /// Starts at `initial` until a payment is seen.
    pub(crate) fn new(initial: Duration) -> Self {
        RunningTime {
            micros: AtomicU64::new(initial.as_micros() as u64),
        }
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// One payment's time, bounded by `limit` (the settle deadline), so a clock step between the
    /// two functions cannot push the average out of range.
    pub(crate) fn observe(&self, sample: Duration, limit: Duration) {
        let sample = sample.min(limit).as_micros() as u64;
        // Concurrent followers may interleave; the average then misses a sample, which is harmless.
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old * 3 + sample) / 4)
            });
    }
}

/// How long after the write-ahead (a `signed` record's `updated_at`) this instance's receipts
/// have been there: the time about nine first lookups in ten reach on a steady chain (the unit
/// tests model it). What one follower learnt moves it ([`next_receipt_time`]).
#[derive(Debug, Default)]
pub(crate) struct ReceiptTime {
    micros: AtomicU64,
}

impl ReceiptTime {
    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// One payment's lookups: `found`, the start of the lookup that found the receipt, and
    /// `missed`, the start of the last one before it that did not, if any; both from the
    /// write-ahead.
    pub(crate) fn learn(&self, found: Duration, missed: Option<Duration>) {
        // Concurrent followers may interleave; the estimate then misses a step, which is harmless.
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let old = Duration::from_micros(old);
                Some(next_receipt_time(old, found, missed).as_micros() as u64)
            });
    }
}

/// The receipt time after one payment's lookups (see [`ReceiptTime::learn`]). A lookup only
/// bounds the time the receipt appeared:
/// - found at the first lookup: it was there some time before, so the estimate comes down a
///   thirty-second, which keeps about nine first lookups in ten finding it and follows a chain
///   that gets faster;
/// - found after a miss: it appeared between the two, so the estimate goes up to halfway, but by at
///   most a quarter and 2 ms at a time, so that one slow transaction does not hold back every
///   follower after it (an average of what lookups found grew to 80 ms on a 12 ms chain, in a model
///   with 3 % slow receipts, and in the load harness).
pub(crate) fn next_receipt_time(
    current: Duration,
    found: Duration,
    missed: Option<Duration>,
) -> Duration {
    match missed {
        Some(missed) if missed < found => {
            let halfway = missed + (found - missed) / 2;
            halfway
                .max(current)
                .min(current + current / 4 + Duration::from_millis(2))
        }
        _ => current - current / 32,
    }
}

/// One follower's schedule.
#[derive(Debug)]
pub(crate) struct Pace {
    poll: Duration,
    /// The wait after the next look in the `signed`/`submitted` states; doubles each round.
    receipt_wait: Duration,
}

impl Pace {
    pub(crate) fn new(poll: Duration) -> Self {
        Pace {
            poll,
            receipt_wait: MIN_WAIT,
        }
    }

    /// The state changed: a broadcast starts its receipt lookups afresh.
    pub(crate) fn entered(&mut self) {
        self.receipt_wait = MIN_WAIT;
    }

    /// The first wait of a follower that found the record `queued`, `age` after it was created:
    /// until the record is a quarter older than payments have typically been when they were
    /// signed. Looking at the typical time exactly would find half of them not signed yet, and
    /// each of those costs another read and at least [`MIN_WAIT`]; the quarter makes one read the
    /// rule for about as much latency.
    pub(crate) fn first_queued_wait(&self, signing: Duration, age: Duration) -> Duration {
        (signing + signing / 4)
            .saturating_sub(age)
            .min(self.poll * 4)
            .max(MIN_WAIT)
    }

    /// The wait before the first receipt lookup of a payment written ahead at `written_ahead`
    /// (unix ms) and seen now (`now`, unix ms): until receipts have typically been there
    /// (`receipt`); none when that time has passed. At most one poll: on a chain with a block
    /// time the average is about a block, and waiting it all out would often find a receipt
    /// later than the polls would have.
    pub(crate) fn first_receipt_wait(
        &self,
        receipt: Duration,
        written_ahead: u64,
        now: u64,
    ) -> Duration {
        let due = Duration::from_millis(written_ahead) + receipt;
        due.saturating_sub(Duration::from_millis(now))
            .min(self.poll)
    }

    /// The wait before the next look, `waited` after this follower started waiting in `state`.
    pub(crate) fn next_wait(&mut self, state: State, waited: Duration) -> Duration {
        match state {
            State::Queued => (waited / 4).min(self.poll * 4).max(MIN_WAIT),
            _ => {
                let wait = self.receipt_wait.min(self.poll);
                self.receipt_wait = (self.receipt_wait * 2).min(self.poll);
                wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_millis(250);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_signing_time_follows_new_samples_a_quarter_at_a_time() {
        let signing = RunningTime::new(ms(62));
        signing.observe(ms(30), ms(25_000));
        assert_eq!(signing.get(), ms(54)); // (62 * 3 + 30) / 4
        for _ in 0..20 {
            signing.observe(ms(30), ms(25_000));
        }
        assert!(signing.get() <= ms(31), "{:?}", signing.get());
        signing.observe(ms(u64::MAX / 8), ms(25_000));
        assert!(signing.get() <= ms(25_000 / 4 + 31), "{:?}", signing.get());
    }

    #[test]
    fn a_queued_payment_is_first_read_when_payments_are_typically_signed() {
        let pace = Pace::new(POLL);
        assert_eq!(pace.first_queued_wait(ms(44), ms(5)), ms(50)); // 44 + 11 - 5
                                                                   // Already older than that (a retry of an old payment): soon, never at once.
        assert_eq!(pace.first_queued_wait(ms(45), ms(3_000)), MIN_WAIT);
        // Lanes backed up for seconds: the first read waits too, up to four polls.
        assert_eq!(pace.first_queued_wait(ms(9_000), ms(5)), POLL * 4);
    }

    #[test]
    fn a_long_wait_in_the_queue_is_read_less_and_less_often() {
        let mut pace = Pace::new(POLL);
        assert_eq!(pace.next_wait(State::Queued, ms(20)), MIN_WAIT);
        assert_eq!(pace.next_wait(State::Queued, ms(400)), ms(100));
        assert_eq!(pace.next_wait(State::Queued, ms(20_000)), POLL * 4);
    }

    #[test]
    fn receipts_are_looked_for_soon_after_the_broadcast_then_once_per_poll() {
        let mut pace = Pace::new(POLL);
        let waits: Vec<_> = (0..7)
            .map(|_| pace.next_wait(State::Submitted, ms(0)).as_millis())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 250, 250]);
        pace.entered();
        assert_eq!(pace.next_wait(State::Signed, ms(0)), MIN_WAIT);
    }

    #[test]
    fn a_receipt_found_at_once_takes_a_thirty_second_off_one_found_after_a_miss_goes_halfway() {
        assert_eq!(next_receipt_time(ms(32), ms(32), None), ms(31));
        assert_eq!(next_receipt_time(ms(20), ms(30), Some(ms(20))), ms(25));
        // Never down after a miss, and up by at most a quarter and 2 ms: one slow transaction.
        assert_eq!(next_receipt_time(ms(30), ms(30), Some(ms(20))), ms(30));
        assert_eq!(next_receipt_time(ms(12), ms(400), Some(ms(200))), ms(17));
        // A clock step between the two functions cannot make a miss come after the find.
        assert_eq!(next_receipt_time(ms(32), ms(32), Some(ms(40))), ms(31));
    }

    /// Followers on a chain whose receipts are there `chain` after the write-ahead, each seeing the
    /// record at once and looking when the estimate says, then every 10 ms: the estimate and how
    /// many of the last 100 first lookups found the receipt.
    fn model(receipt: &ReceiptTime, chain: impl Fn(usize) -> Duration) -> (Duration, usize) {
        let pace = Pace::new(POLL);
        let mut found_at_first = 0;
        for round in 0..300 {
            let first = pace.first_receipt_wait(receipt.get(), 1_000, 1_000);
            let mut lookup = (first, None);
            while lookup.0 < chain(round) {
                lookup = (lookup.0 + MIN_WAIT, Some(lookup.0));
            }
            found_at_first += usize::from(round >= 200 && lookup.1.is_none());
            receipt.learn(lookup.0, lookup.1);
        }
        (receipt.get(), found_at_first)
    }

    #[test]
    fn receipt_times_settle_just_above_the_chains_own() {
        // From nothing learnt, on a 12 ms chain: a little above 12 ms, and about nine first
        // lookups in ten find the receipt.
        let (learnt, found_at_first) = model(&ReceiptTime::default(), |_| ms(12));
        assert!(ms(12) <= learnt && learnt <= ms(16), "{learnt:?}");
        assert!(found_at_first >= 85, "{found_at_first} of 100");
    }

    #[test]
    fn slow_receipts_now_and_then_do_not_hold_every_follower_back() {
        // Every tenth receipt 300 ms late: the estimate stays near the chain's usual 12 ms.
        let slow_now_and_then = |round: usize| match round % 10 {
            0 => ms(300),
            _ => ms(12),
        };
        let (learnt, found_at_first) = model(&ReceiptTime::default(), slow_now_and_then);
        assert!(learnt <= ms(30), "{learnt:?}");
        assert!(found_at_first >= 70, "{found_at_first} of 100");
    }

    #[test]
    fn the_first_receipt_lookup_waits_until_receipts_are_typically_there() {
        let pace = Pace::new(POLL);
        assert_eq!(pace.first_receipt_wait(ms(12), 1_000, 1_003), ms(9));
        // Seen late: at once.
        assert_eq!(pace.first_receipt_wait(ms(12), 1_000, 1_050), ms(0));
        // A chain with a block time: about a block, never more than one poll.
        assert_eq!(pace.first_receipt_wait(ms(1_500), 1_000, 1_000), POLL);
    }
}
