//! The one way the tests wait for something the stack does on its own time (a record's next
//! state, a receipt, a server's first answer): ask again at a fixed interval, and fail with what
//! was awaited and the last thing seen, rather than hang.

use std::{fmt::Debug, future::Future, time::Duration};

use super::stack::now;

/// Asks `check` up to `attempts` times, `interval` apart, until it returns `Ok`; then returns that
/// value. `check` returns `Err(last seen)` while not done; after the last attempt, panics naming
/// `what` and the last thing seen.
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    attempts: u32,
    interval: Duration,
    mut check: F,
) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut last = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(interval).await;
        }
        match check().await {
            Ok(done) => return done,
            Err(seen) => last = Some(seen),
        }
    }
    panic!("{what} did not happen in {attempts} attempts {interval:?} apart; last seen: {last:?}");
}

/// Waits until the unix time in seconds is past `deadline` (an authorization's `validBefore`).
pub async fn until_after(deadline: u64) {
    while now() <= deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
