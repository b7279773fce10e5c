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
