//! A lane's lease: who may sign the lane's next transaction on a network now
//! (docs/settlement.md, "The lane's lease").
//!
//! The lane's nonce counter keeps I4 on its own: every write-ahead steps it on the condition that
//! no transaction holds the nonce yet, so two signers can never both write one nonce ahead. What
//! the counter cannot stop is two signers *trying*: the loser has spent a KMS `Sign` for nothing,
//! and goes round again. The lease makes that rare: `/settle` signs a payment itself only when it
//! takes the lane's lease, and the worker takes the same lease where it read the counter before,
//! so one signer works a lane at a time while the other queues or waits. The lease is a hint
//! with a short expiry, never the guard: a signer that dies holding it costs the lane at most
//! `X402_LANE_LEASE_MS`, and a lease that ran out under a slow signer costs one wasted `Sign`.
//!
//! Attributes of the lane's row, per network (nonces are counted per chain): `lease#<network>`,
//! until when (unix ms), and `lease_by#<network>`, the holder.
//!
//! `/settle` names each attempt a holder of its own (one instance may serve several requests at
//! once, as the local server does), and takes the lease only while no worker has asked for the
//! lane: a worker that finds `/settle` holding it marks the lane wanted (`wanted#<network>`,
//! until when) and polls, so a stream of `/settle` calls cannot keep the lane from the payments
//! they queued. The worker's take clears the mark.
//!
//! A worker takes over another worker's lease, live or not: SQS hands a lane's messages to one
//! invocation at a time (the FIFO message group), so a worker's lease another worker finds is an
//! earlier invocation's, and waiting it out would cost the lane up to a lease each time Lambda
//! gives the lane's next batch to another instance. The lease is what keeps `/settle` and the
//! worker apart.

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::update_item::UpdateItemError,
    types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure},
};
use tracing::instrument;

use super::{conditional_update, fail, nonce_attribute, Store, StoreError};

fn number(value: &AttributeValue) -> Option<u64> {
    value.as_n().ok()?.parse().ok()
}

/// What taking a lane's lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneLease {
    /// The caller holds it now; the lane's next nonce on the network as the counter says (`None`:
    /// the lane never signed there, and its first nonce is the chain's).
    Taken { next: Option<u64> },
    /// Another signer holds it until `until` (unix ms).
    Held { until: u64 },
    /// The lane has no row: it was never provisioned (a funding lane), so nothing leases it. The
    /// worker signs as it always did, on the counter's condition alone.
    NoRow,
}

/// What a write-ahead does with the lane's lease as it steps the counter: the condition is the
/// same for both (nobody else holds a live lease), only the holder's intent differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAfter<'a> {
    /// Keep holding it until `until` (unix ms): the worker, working a lane's backlog, signs the
    /// next one next.
    Keep { holder: &'a str, until: u64 },
    /// Give it back: `/settle`, which signs one payment.
    Release { holder: &'a str },
}

impl LeaseAfter<'_> {
    pub fn holder(&self) -> &str {
        match self {
            LeaseAfter::Keep { holder, .. } | LeaseAfter::Release { holder } => holder,
        }
    }
}

/// The lease's attributes on `network`.
pub(super) fn lease_attributes(network: &str) -> (String, String) {
    (format!("lease#{network}"), format!("lease_by#{network}"))
}

/// The attribute that says a worker waits for the lane on `network`, until when (unix ms).
fn wanted_attribute(network: &str) -> String {
    format!("wanted#{network}")
}

/// Whether `holder` is a worker's.
fn is_worker(holder: &str) -> bool {
    holder.starts_with(WORKER_HOLDER)
}

/// How a worker's holder name starts; `/settle`'s starts with [`SETTLE_HOLDER`].
pub const WORKER_HOLDER: &str = "worker-";
pub const SETTLE_HOLDER: &str = "settle-";

/// The condition that the lease is free for `:takes_over` at `:now`: nobody holds a live lease, or
/// its holder's name starts with `:takes_over` ([`takes_over`]). It names the lease's attributes
/// `#until` and `#by`.
pub(super) const FREE_FOR: &str =
    "(attribute_not_exists(#until) OR #until < :now OR begins_with(#by, :takes_over))";

/// Whose live lease `holder` may take: a worker any worker's, `/settle` only its own.
pub(super) fn takes_over(holder: &str) -> AttributeValue {
    let prefix = match is_worker(holder) {
        true => WORKER_HOLDER,
        false => holder,
    };
    AttributeValue::S(prefix.to_owned())
}

impl Store {
    /// Takes (or renews) the lane's lease on `network` for `holder` until `until`, if it is free for
    /// `holder` at `now` ([`FREE_FOR`]), and reads the lane's next nonce in the same call. A worker's
    /// take clears the lane's wanted mark; `/settle`'s is refused while a live one is there.
    #[instrument(skip_all, fields(lane, network, holder), err(level = "warn"))]
    pub async fn take_lane_lease(
        &self,
        lane: &str,
        network: &str,
        holder: &str,
        (now, until): (u64, u64),
    ) -> Result<LaneLease, StoreError> {
        let (until_name, by_name) = lease_attributes(network);
        let (update, condition) = match is_worker(holder) {
            true => (
                "SET #until = :until, #by = :holder REMOVE #wanted",
                format!("attribute_exists(lane) AND {FREE_FOR}"),
            ),
            false => (
                "SET #until = :until, #by = :holder",
                format!("attribute_exists(lane) AND {FREE_FOR} AND (attribute_not_exists(#wanted) OR #wanted < :now)"),
            ),
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression(update)
            // Never creates a row: a row without a state reads as an active lane.
            .condition_expression(condition)
            .expression_attribute_names("#until", until_name.clone())
            .expression_attribute_names("#by", by_name)
            .expression_attribute_names("#wanted", wanted_attribute(network))
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":takes_over", takes_over(holder))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send();
        match Box::pin(request).await {
            Ok(answer) => {
                let next = answer
                    .attributes()
                    .and_then(|row| row.get(&nonce_attribute(network)))
                    .and_then(number);
                Ok(LaneLease::Taken { next })
            }
            // Lost: the row as it is comes back with the refusal (`ALL_OLD`), so saying why costs
            // no read; no row comes back only when there is none.
            Err(SdkError::ServiceError(e)) => match e.err() {
                UpdateItemError::ConditionalCheckFailedException(lost) => Ok(match lost.item() {
                    // Free but wanted (only `/settle` is refused for that): held until the worker
                    // that wants it takes it.
                    Some(row) => LaneLease::Held {
                        until: row.get(&until_name).and_then(number).unwrap_or(0),
                    },
                    None => LaneLease::NoRow,
                }),
                _ => Err(fail("UpdateItem")(SdkError::ServiceError(e))),
            },
            Err(e) => Err(fail("UpdateItem")(e)),
        }
    }

    /// Marks the lane wanted by a worker on `network` until `until`: `/settle` takes its lease no
    /// more until then or until the worker has taken it. Never creates a row.
    #[instrument(skip_all, fields(lane, network), err(level = "warn"))]
    pub async fn want_lane(&self, lane: &str, network: &str, until: u64) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression("SET #wanted = :until")
            .condition_expression("attribute_exists(lane)")
            .expression_attribute_names("#wanted", wanted_attribute(network))
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .send();
        conditional_update(Box::pin(request)).await.map(drop)
    }

    /// Gives the lease back if `holder` still holds it: a signer that took it and then signed
    /// nothing (the payment went to the queue instead) lets the worker in at once rather than
    /// after the lease's expiry. Best effort; an expiry covers a failed release.
    #[instrument(skip_all, fields(lane, network, holder), err(level = "warn"))]
    pub async fn release_lane_lease(
        &self,
        lane: &str,
        network: &str,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let (until_name, by_name) = lease_attributes(network);
        let request = self
            .client
            .update_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression("REMOVE #until, #by")
            .condition_expression("#by = :holder")
            .expression_attribute_names("#until", until_name)
            .expression_attribute_names("#by", by_name)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send();
        Ok(conditional_update(Box::pin(request)).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_over_any_workers_lease_and_settle_only_its_own() {
        let prefix = |holder: &str| takes_over(holder).as_s().unwrap().clone();
        assert_eq!(prefix("worker-00ff"), "worker-");
        assert_eq!(prefix("settle-00ff"), "settle-00ff");
        // A name of neither kind (an operator's, a test's) is taken over by nobody.
        assert_eq!(prefix("test-holder"), "test-holder");
    }

    #[test]
    fn a_lease_is_named_per_network() {
        assert_eq!(
            lease_attributes("eip155:8453"),
            (
                "lease#eip155:8453".to_owned(),
                "lease_by#eip155:8453".to_owned()
            )
        );
    }

    #[test]
    fn both_write_ahead_terms_name_their_holder() {
        let keep = LeaseAfter::Keep {
            holder: "worker-1",
            until: 5,
        };
        let release = LeaseAfter::Release { holder: "settle-2" };
        assert_eq!((keep.holder(), release.holder()), ("worker-1", "settle-2"));
    }
}
