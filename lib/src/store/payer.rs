//! Payers whose settlements reverted on chain after passing simulation (docs/security.md, "Gas the
//! payer does not pay"). A contract wallet decides when the transaction is mined whether its
//! signature is good, so its reverts cost the lane gas and its owner nothing; after a few, its
//! payments are refused for a while ([`RevertPolicy`]).
//!
//! One item per (network, payer) in the payments table, beside the records, under a key no payment
//! id can have (`payer#<network>#<address>`), like the `payment-identifier` bindings. It expires
//! with the refusal (the table's TTL), and nothing else reads it.

use std::collections::HashMap;

use alloy::primitives::Address;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tracing::instrument;

use super::{conditional_update, Store, StoreError};
use crate::config::RevertPolicy;

/// A payer's run of reverted settlements on one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Reverts in the current run: each within the refusal time of the one before.
    pub reverts: u32,
    /// When the last one was recorded (unix seconds).
    pub last_revert_at: u64,
}

/// Until when (unix seconds) the payer is refused, if it is at `now` (pure).
pub fn refused_until(standing: &Standing, now: u64, policy: RevertPolicy) -> Option<u64> {
    let until = standing
        .last_revert_at
        .saturating_add(policy.refuse_for.as_secs());
    (standing.reverts >= policy.limit && now < until).then_some(until)
}

/// The latest time (unix seconds) a revert may have been recorded for one at `now` to continue its
/// run; an older run is over, and the revert starts a new one (pure).
pub fn run_cutoff(now: u64, policy: RevertPolicy) -> u64 {
    now.saturating_sub(policy.refuse_for.as_secs())
}

fn key(network: &str, payer: Address) -> String {
    format!("payer#{network}#{payer:#x}")
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn standing_of(item: &HashMap<String, AttributeValue>) -> Result<Standing, StoreError> {
    let read = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                StoreError::new("deserialise", format!("a payer item has no number {name}"))
            })
    };
    Ok(Standing {
        reverts: u32::try_from(read("reverts")?).unwrap_or(u32::MAX),
        last_revert_at: read("last_revert_at")?,
    })
}

impl Store {
    /// The payer's run of reverts on `network`, if one was ever recorded (and not yet expired).
    pub async fn payer_standing(
        &self,
        network: &str,
        payer: Address,
    ) -> Result<Option<Standing>, StoreError> {
        self.read_item(&self.payments, "id", &key(network, payer))
            .await?
            .map(|item| standing_of(&item))
            .transpose()
    }

    /// Until when (unix seconds) `payer`'s contract-wallet payments on `network` are refused at
    /// `now`, with its run of reverts; `None` when they are not.
    pub async fn payer_refusal(
        &self,
        network: &str,
        payer: Address,
        now: u64,
    ) -> Result<Option<(Standing, u64)>, StoreError> {
        Ok(self
            .payer_standing(network, payer)
            .await?
            .and_then(|s| refused_until(&s, now, self.payer_policy).map(|until| (s, until))))
    }

    /// Records one reverted settlement of `payer`'s at `now` ([`Store::with_payer_policy`]): one
    /// more in its run, or the first of a new run when the last was longer ago than the refusal
    /// time. Returns the run as it is now. Two recorders at once each count theirs: the write that
    /// continues a run is an atomic increment, and the one that starts a run is conditional on
    /// there being none to continue.
    #[instrument(skip_all, fields(network, %payer), err(level = "warn"))]
    pub async fn count_revert(
        &self,
        network: &str,
        payer: Address,
        now: u64,
    ) -> Result<Standing, StoreError> {
        let run = Run {
            id: AttributeValue::S(key(network, payer)),
            now,
            cutoff: number(run_cutoff(now, self.payer_policy)),
            // Kept as long as a refusal could last, then left to the table's TTL.
            expires_at: number(now.saturating_add(self.payer_policy.refuse_for.as_secs())),
        };
        // A writer that loses both conditions lost a race to another recorder; by the next try the
        // item is there to be continued. Three tries outlast any such race.
        for _ in 0..3 {
            if let Some(standing) = self.continue_run(&run).await? {
                return Ok(standing);
            }
            if let Some(standing) = self.start_run(&run).await? {
                return Ok(standing);
            }
        }
        Err(StoreError::new(
            "UpdateItem",
            format!("the revert count of {payer:#x} on {network} kept changing under three tries"),
        ))
    }

    /// One more revert in a run whose last was after the cutoff; `None` when there is no such run.
    async fn continue_run(&self, run: &Run) -> Result<Option<Standing>, StoreError> {
        let more = self
            .client
            .update_item()
            .table_name(&self.payments)
            .key("id", run.id.clone())
            .update_expression(
                "SET reverts = reverts + :one, last_revert_at = :now, expires_at = :expires",
            )
            .condition_expression("last_revert_at > :cutoff")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", number(run.now))
            .expression_attribute_values(":expires", run.expires_at.clone())
            .expression_attribute_values(":cutoff", run.cutoff.clone())
            .return_values(ReturnValue::AllNew)
            .send();
        conditional_update(Box::pin(more))
            .await?
            .map(|answer| standing_of(&answer.attributes.unwrap_or_default()))
            .transpose()
    }

    /// The first revert of a run, unless another recorder started one meanwhile (`None`). An
    /// UpdateItem that creates the item, so that every writer of counts needs only UpdateItem.
    async fn start_run(&self, run: &Run) -> Result<Option<Standing>, StoreError> {
        let first = self
            .client
            .update_item()
            .table_name(&self.payments)
            .key("id", run.id.clone())
            .update_expression("SET reverts = :one, last_revert_at = :now, expires_at = :expires")
            .condition_expression("attribute_not_exists(id) OR last_revert_at <= :cutoff")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", number(run.now))
            .expression_attribute_values(":expires", run.expires_at.clone())
            .expression_attribute_values(":cutoff", run.cutoff.clone())
            .send();
        Ok(conditional_update(Box::pin(first))
            .await?
            .map(|_| Standing {
                reverts: 1,
                last_revert_at: run.now,
            }))
    }
}

/// The values one [`Store::count_revert`] writes with.
struct Run {
    id: AttributeValue,
    now: u64,
    cutoff: AttributeValue,
    expires_at: AttributeValue,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const POLICY: RevertPolicy = RevertPolicy {
        limit: 3,
        refuse_for: Duration::from_secs(100),
    };

    fn standing(reverts: u32, last_revert_at: u64) -> Standing {
        Standing {
            reverts,
            last_revert_at,
        }
    }

    #[test]
    fn a_payer_is_refused_from_the_limit_until_the_refusal_time_after_its_last_revert() {
        assert_eq!(refused_until(&standing(2, 1_000), 1_000, POLICY), None);
        assert_eq!(
            refused_until(&standing(3, 1_000), 1_000, POLICY),
            Some(1_100)
        );
        assert_eq!(
            refused_until(&standing(7, 1_000), 1_099, POLICY),
            Some(1_100)
        );
        assert_eq!(refused_until(&standing(3, 1_000), 1_100, POLICY), None);
    }

    #[test]
    fn a_revert_continues_a_run_only_within_the_refusal_time_of_the_last() {
        // The store continues a run whose last revert is after the cutoff.
        assert_eq!(run_cutoff(1_000, POLICY), 900);
        assert_eq!(run_cutoff(50, POLICY), 0, "never below the epoch");
    }

    #[test]
    fn payer_keys_are_no_payment_id() {
        let key = key("eip155:84532", Address::repeat_byte(0xab));
        assert_eq!(
            key,
            "payer#eip155:84532#0xabababababababababababababababababababab"
        );
        assert!(crate::store::PaymentId::parse(&key).is_none());
    }
}
