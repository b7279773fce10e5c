//! What replay keeps between runs, and how it reads the open index (docs/settlement.md "Replay").
//!
//! Replay's own items live in the payments table beside the records, under keys that never parse
//! as a payment id (like a `payment-identifier` binding's): `replay#lease`, which makes runs
//! exclusive, and one `replay#cursor#<sweep>` per sweep (a network, or `other`), where the last run
//! stopped in the open index. None of them carries `open_shard`, so none is in the index, and
//! replay's role already has the `GetItem` and `UpdateItem` they need.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use tracing::instrument;

use super::{PaymentId, PaymentRecord, Store, StoreError, OPEN_SHARD};

/// The key of the item that says which replay run may work now.
const LEASE_ID: &str = "replay#lease";

fn cursor_id(sweep: &str) -> String {
    format!("replay#cursor#{sweep}")
}

/// Which open items a query of the index returns, by their `network` attribute. DynamoDB applies
/// the filter after reading a page, so a page may come back empty with more to follow.
#[derive(Debug, Clone, Copy)]
pub enum OpenFilter<'a> {
    /// Every open item.
    Any,
    /// One network's (its CAIP-2 id).
    Network(&'a str),
    /// Those of no network in the list, or with no readable `network` at all: what no network's
    /// sweep would ever see.
    NoneOf(&'a [String]),
}

impl OpenFilter<'_> {
    /// The filter expression (it names the attribute `#network`) and its values; `None` for all.
    pub(super) fn expression(&self) -> Option<(String, Vec<(String, AttributeValue)>)> {
        match self {
            OpenFilter::Any | OpenFilter::NoneOf([]) => None,
            OpenFilter::Network(network) => Some((
                "#network = :network".to_owned(),
                vec![(":network".to_owned(), s(network))],
            )),
            OpenFilter::NoneOf(networks) => {
                let values: Vec<(String, AttributeValue)> = networks
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!(":n{i}"), s(n)))
                    .collect();
                let names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
                let expression = format!(
                    "attribute_not_exists(#network) OR NOT (#network IN ({}))",
                    names.join(", ")
                );
                Some((expression, values))
            }
        }
    }
}

/// A place in the open index: an item's `updated_at` and `id` (the index's sort key and the
/// table's key). A query resumes strictly after it, whether or not that item is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPosition {
    pub updated_at: u64,
    pub id: String,
}

impl IndexPosition {
    /// The `ExclusiveStartKey` that resumes a query of the index after this position.
    pub(super) fn start_key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("open_shard".to_owned(), s(OPEN_SHARD)),
            ("updated_at".to_owned(), n(self.updated_at)),
            ("id".to_owned(), s(&self.id)),
        ])
    }

    /// A query's `LastEvaluatedKey` (or a stored cursor) as a position; `None` if it lacks either part.
    pub(super) fn from_key(key: &HashMap<String, AttributeValue>) -> Option<Self> {
        Some(IndexPosition {
            updated_at: number(key, "updated_at")?,
            id: key.get("id")?.as_s().ok()?.clone(),
        })
    }
}

/// One item of the open index.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenEntry {
    Record(Box<PaymentRecord>),
    /// An item that carries `open_shard` but is not a payment record as this code writes them.
    Undecodable(Undecodable),
}

/// An item replay cannot read: it is skipped and reported, never changed (docs/runbook.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Its key, as stored.
    pub id: String,
    /// Its `updated_at`: every item in the index has one, the index's sort key.
    pub updated_at: u64,
    /// Why it does not decode, as serde_dynamo says.
    pub problem: String,
}

impl OpenEntry {
    pub(super) fn decode(item: HashMap<String, AttributeValue>) -> Self {
        let id = item
            .get("id")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let updated_at = number(&item, "updated_at").unwrap_or(0);
        // The id is checked as well: an item whose key is not a payment id (a binding given an
        // `open_shard` by hand) must not be taken for a payment.
        let decoded = match PaymentId::parse(&id) {
            Some(_) => serde_dynamo::from_item(item).map_err(|e| e.to_string()),
            None => Err(format!("{id:?} is not a payment id")),
        };
        match decoded {
            Ok(record) => OpenEntry::Record(Box::new(record)),
            Err(problem) => OpenEntry::Undecodable(Undecodable {
                id,
                updated_at,
                problem,
            }),
        }
    }

    /// Where this entry is in the index.
    pub fn position(&self) -> IndexPosition {
        match self {
            OpenEntry::Record(r) => IndexPosition {
                updated_at: r.updated_at,
                id: r.id.as_str().to_owned(),
            },
            OpenEntry::Undecodable(u) => IndexPosition {
                updated_at: u.updated_at,
                id: u.id.clone(),
            },
        }
    }
}

/// What taking the replay lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This run holds it now.
    Taken,
    /// Another run holds it until `until` (unix ms).
    Held { holder: String, until: u64 },
}

impl Store {
    /// Takes the replay lease for `holder` until `until` (unix ms), if nobody holds it or the
    /// holder's lease ran out by `now`: one conditional write, so of two runs that try at once
    /// exactly one gets it.
    #[instrument(skip_all, fields(holder), err(level = "warn"))]
    pub async fn take_replay_lease(
        &self,
        holder: &str,
        until: u64,
        now: u64,
    ) -> Result<Lease, StoreError> {
        let taken = self
            .update_control(
                LEASE_ID,
                "SET holder = :holder, lease_until = :until, taken_at = :now",
                "attribute_not_exists(id) OR lease_until <= :now",
                [
                    (":holder", s(holder)),
                    (":until", n(until)),
                    (":now", n(now)),
                ],
            )
            .await?;
        if taken {
            return Ok(Lease::Taken);
        }
        let item = self
            .read_item(&self.payments, "id", LEASE_ID)
            .await?
            .unwrap_or_default();
        Ok(Lease::Held {
            holder: item
                .get("holder")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            until: number(&item, "lease_until").unwrap_or(0),
        })
    }

    /// Gives the lease back (it ends `now`), if `holder` still holds it; false if it had run out
    /// and another run took it.
    #[instrument(skip_all, fields(holder), err(level = "warn"))]
    pub async fn release_replay_lease(&self, holder: &str, now: u64) -> Result<bool, StoreError> {
        self.update_control(
            LEASE_ID,
            "SET lease_until = :now",
            "holder = :holder",
            [(":holder", s(holder)), (":now", n(now))],
        )
        .await
    }

    /// Where `sweep`'s last run stopped in the open index; `None` to start from the oldest.
    pub async fn replay_cursor(&self, sweep: &str) -> Result<Option<IndexPosition>, StoreError> {
        let item = self
            .read_item(&self.payments, "id", &cursor_id(sweep))
            .await?;
        Ok(item.and_then(|item| {
            Some(IndexPosition {
                updated_at: number(&item, "after_updated_at")?,
                id: item.get("after_id")?.as_s().ok()?.clone(),
            })
        }))
    }

    /// Stores where `sweep` goes on next run; `None`: from the oldest again.
    #[instrument(skip_all, fields(sweep), err(level = "warn"))]
    pub async fn save_replay_cursor(
        &self,
        sweep: &str,
        at: Option<&IndexPosition>,
        now: u64,
    ) -> Result<(), StoreError> {
        let id = cursor_id(sweep);
        match at {
            Some(at) => {
                self.update_control(
                    &id,
                    "SET after_updated_at = :at, after_id = :after, saved_at = :now",
                    "",
                    [
                        (":at", n(at.updated_at)),
                        (":after", s(&at.id)),
                        (":now", n(now)),
                    ],
                )
                .await?
            }
            None => {
                self.update_control(
                    &id,
                    "SET saved_at = :now REMOVE after_updated_at, after_id",
                    "",
                    [(":now", n(now))],
                )
                .await?
            }
        };
        Ok(())
    }

    /// One UpdateItem of a replay item, under `condition` (none if empty); false if it did not hold.
    async fn update_control<const N: usize>(
        &self,
        id: &str,
        expression: &str,
        condition: &str,
        values: [(&str, AttributeValue); N],
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.payments)
            .key("id", s(id))
            .update_expression(expression);
        if !condition.is_empty() {
            request = request.condition_expression(condition);
        }
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        Ok(super::conditional_update(Box::pin(request.send()))
            .await?
            .is_some())
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_items_never_parse_as_payment_ids() {
        assert_eq!(PaymentId::parse(LEASE_ID), None);
        assert_eq!(PaymentId::parse(&cursor_id("eip155:84532")), None);
        assert_eq!(PaymentId::parse(&cursor_id("other")), None);
    }

    #[test]
    fn an_item_that_is_not_a_record_is_undecodable_with_its_key_and_place() {
        let record = crate::store::sample(crate::store::State::Queued);
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&record).unwrap();
        assert_eq!(
            OpenEntry::decode(item.clone()),
            OpenEntry::Record(Box::new(record.clone()))
        );
        item.insert("value".to_owned(), s("not a number"));
        let OpenEntry::Undecodable(bad) = OpenEntry::decode(item) else {
            panic!("a value that is not a number decodes")
        };
        assert_eq!(bad.id, record.id.as_str());
        assert_eq!(bad.updated_at, record.updated_at);
        assert!(bad.problem.contains("not a number"), "{}", bad.problem);
    }

    #[test]
    fn the_other_sweep_filters_out_every_configured_network() {
        let networks = ["eip155:1".to_owned(), "eip155:8453".to_owned()];
        let (expression, values) = OpenFilter::NoneOf(&networks).expression().unwrap();
        assert_eq!(
            expression,
            "attribute_not_exists(#network) OR NOT (#network IN (:n0, :n1))"
        );
        assert_eq!(values.len(), 2);
        assert!(OpenFilter::NoneOf(&[]).expression().is_none());
        assert!(OpenFilter::Any.expression().is_none());
    }
}
