//! The time, from one place: every deadline, `validBefore` comparison and record stamp reads it
//! here, so that there is one definition of "now" to reason about (and to change, should tests
//! ever need a clock of their own).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now: what `validAfter` and `validBefore` are compared with.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now: what a record's `created_at` and `updated_at` hold.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instant of a deadline given in unix milliseconds (a Lambda invocation's); `None` when it
/// has already passed, which a real invocation's never has at its start (some local emulators
/// send the invocation's start, or 0).
pub fn deadline_in(unix_ms: u64) -> Option<std::time::Instant> {
    let left = unix_ms.checked_sub(now_ms()).filter(|left| *left > 0)?;
    Some(std::time::Instant::now() + std::time::Duration::from_millis(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_already_passed_or_zero_is_no_deadline() {
        assert_eq!(deadline_in(0), None);
        assert_eq!(deadline_in(now_ms().saturating_sub(1)), None);
    }

    #[test]
    fn a_deadline_ahead_is_that_far_ahead() {
        let deadline = deadline_in(now_ms() + 30_000).unwrap();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            left > std::time::Duration::from_secs(29) && left <= std::time::Duration::from_secs(30)
        );
    }
}
