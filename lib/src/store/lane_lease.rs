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

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tracing::instrument;

use super::{conditional_update, nonce_attribute, Store, StoreError};

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

/// The condition that nobody but `:holder` holds a live lease at `:now`; it names the lease's
/// attributes `#until` and `#by`.
pub(super) const FREE_OR_MINE: &str =
    "(attribute_not_exists(#until) OR #until < :now OR #by = :holder)";

impl Store {
    /// Takes (or renews) the lane's lease on `network` for `holder` until `until`, if nobody else
    /// holds a live one at `now`, and reads the lane's next nonce in the same call.
    #[instrument(skip_all, fields(lane, network, holder), err(level = "warn"))]
    pub async fn take_lane_lease(
        &self,
        lane: &str,
        network: &str,
        holder: &str,
        (now, until): (u64, u64),
    ) -> Result<LaneLease, StoreError> {
        let (until_name, by_name) = lease_attributes(network);
        let request = self
            .client
            .update_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression("SET #until = :until, #by = :holder")
            // Never creates a row: a row without a state reads as an active lane.
            .condition_expression(format!("attribute_exists(lane) AND {FREE_OR_MINE}"))
            .expression_attribute_names("#until", until_name.clone())
            .expression_attribute_names("#by", by_name)
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .return_values(ReturnValue::AllNew)
            .send();
        if let Some(answer) = conditional_update(Box::pin(request)).await? {
            let next = answer
                .attributes()
                .and_then(|row| row.get(&nonce_attribute(network)))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok());
            return Ok(LaneLease::Taken { next });
        }
        // Lost: read why, which costs a call only when the lane is contended.
        let Some(row) = self.read_item(&self.lanes, "lane", lane).await? else {
            return Ok(LaneLease::NoRow);
        };
        let until = row
            .get(&until_name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(LaneLease::Held { until })
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
