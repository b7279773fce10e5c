//! The rules of RPC failover, pure: in which order a call tries a chain's URLs, how long each
//! attempt may take, and how long a URL that failed is set aside. [`super::rpc`] applies them;
//! docs/settlement.md ("RPC failover") says which calls may go to which node.

use std::time::{Duration, Instant};

/// How long a URL that failed is set aside. Long enough that a node which is down costs an
/// instance one failed attempt per half minute, not one per call; short enough that a node which
/// came back (usually the first, preferred one) gets its traffic back within a minute.
pub const SET_ASIDE: Duration = Duration::from_secs(30);

/// Why an attempt at one URL got no usable answer. Each sets the URL aside; the call goes on to
/// the next URL while its time lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No answer within the attempt's share of the call's timeout.
    Timeout,
    /// HTTP 401 or 403: the URL's API key was refused, perhaps rotated. The RPC secret is read
    /// again at once.
    Unauthorized,
    /// No usable answer: the connection failed or dropped, HTTP 5xx or 429, a body that is not
    /// JSON-RPC, or a node's error answer that says nothing about the request
    /// ([`super::answers::NodeAnswer::Transient`]: a rate limit, an internal error, an unknown block).
    Failed,
}

/// The health of one list of URLs: until when each is set aside. Index `i` is the list's `i`th URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    aside_until: Vec<Option<Instant>>,
}

impl Health {
    /// Every one of `urls` URLs healthy.
    pub fn new(urls: usize) -> Self {
        Health {
            aside_until: vec![None; urls],
        }
    }

    /// The URLs a call tries, in order: the healthy ones in configured order, so the first URL
    /// has all the traffic while it works. When every one is set aside the call still tries them
    /// all, the soonest back first: a call is never refused without asking a node.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        let healthy: Vec<usize> = (0..self.aside_until.len())
            .filter(|&i| self.aside_until[i].is_none_or(|until| until <= now))
            .collect();
        if !healthy.is_empty() {
            return healthy;
        }
        let mut all: Vec<usize> = (0..self.aside_until.len()).collect();
        all.sort_by_key(|&i| self.aside_until[i]);
        all
    }

    /// The `i`th URL failed at `now`: it is set aside for [`SET_ASIDE`].
    pub fn set_aside(&mut self, i: usize, now: Instant) {
        if let Some(slot) = self.aside_until.get_mut(i) {
            *slot = Some(now + SET_ASIDE);
        }
    }

    /// The `i`th URL answered: it is healthy again, whatever it was.
    pub fn answered(&mut self, i: usize) {
        if let Some(slot) = self.aside_until.get_mut(i) {
            *slot = None;
        }
    }
}

/// How long one attempt may take, with `left` of the call's timeout: all of it for the last URL
/// to try, half of it when another URL comes after, so that a node that hangs costs the call half
/// its time and the next node still has the other half. A call as a whole never takes longer than
/// its timeout.
pub fn attempt_limit(left: Duration, more_after: bool) -> Duration {
    if more_after {
        left / 2
    } else {
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_go_to_the_healthy_urls_in_configured_order() {
        let now = Instant::now();
        let mut health = Health::new(3);
        assert_eq!(health.order(now), vec![0, 1, 2]);
        health.set_aside(0, now);
        assert_eq!(health.order(now), vec![1, 2]);
        health.set_aside(2, now);
        assert_eq!(health.order(now), vec![1]);
    }

    #[test]
    fn a_url_set_aside_is_tried_again_after_the_set_aside_time() {
        let now = Instant::now();
        let mut health = Health::new(2);
        health.set_aside(0, now);
        assert_eq!(
            health.order(now + SET_ASIDE - Duration::from_millis(1)),
            vec![1]
        );
        assert_eq!(health.order(now + SET_ASIDE), vec![0, 1]);
    }

    #[test]
    fn when_every_url_is_set_aside_all_are_tried_the_soonest_back_first() {
        let now = Instant::now();
        let mut health = Health::new(3);
        health.set_aside(1, now);
        health.set_aside(2, now + Duration::from_secs(1));
        health.set_aside(0, now + Duration::from_secs(2));
        assert_eq!(health.order(now + Duration::from_secs(3)), vec![1, 2, 0]);
    }

    #[test]
    fn an_answer_makes_a_url_healthy_again() {
        let now = Instant::now();
        let mut health = Health::new(2);
        health.set_aside(0, now);
        health.set_aside(1, now);
        health.answered(0);
        assert_eq!(health.order(now), vec![0]);
        // An index the list does not have changes nothing (a list re-read meanwhile).
        health.set_aside(7, now);
        health.answered(7);
        assert_eq!(health.order(now), vec![0]);
    }

    #[test]
    fn an_attempt_leaves_half_the_call_to_the_next_url_and_the_last_takes_the_rest() {
        let five = Duration::from_secs(5);
        assert_eq!(attempt_limit(five, true), Duration::from_millis(2500));
        assert_eq!(attempt_limit(five, false), five);
        assert_eq!(attempt_limit(Duration::ZERO, true), Duration::ZERO);
    }
}
