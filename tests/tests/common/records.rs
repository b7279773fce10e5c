//! What the facilitator keeps in DynamoDB, read as the library types it: payment records
//! ([`PaymentRecord`], decoded by the library's own mapping), the lanes' nonces, whole-table scans
//! for "nothing changed" checks, and waits for a record's next state.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use facilitator::store::{PaymentId, PaymentRecord, State, Store};
use serde::Deserialize;

use super::{
    chain::transaction,
    stack::{aws, config, stack},
    wait::eventually,
};

/// A DynamoDB item as the SDK returns it, for tables the library has no type for.
pub type Item = HashMap<String, AttributeValue>;

/// The DynamoDB client for the stack's moto.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack().aws_endpoint_url)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

/// The facilitator's store, on the stack's tables.
pub async fn store() -> Store {
    facilitator::store::Store::from_config(&config(), &aws().await)
}

/// A payment's record as stored (`Store::get`: a strongly consistent read), if there is one.
pub async fn find_payment_record(id: &str) -> Option<PaymentRecord> {
    let id = PaymentId::parse(id).unwrap_or_else(|| panic!("{id} is not a payment id"));
    store().await.get(&id).await.unwrap()
}

/// A payment's record as stored (strongly consistent read); panics if there is none.
pub async fn payment_record(id: &str) -> PaymentRecord {
    find_payment_record(id)
        .await
        .unwrap_or_else(|| panic!("no record {id}"))
}

/// Waits until the record satisfies `done` (`what` names it for the failure).
pub async fn wait_until(
    id: &str,
    what: &str,
    done: impl Fn(&PaymentRecord) -> bool,
) -> PaymentRecord {
    let what = format!("{id} getting to {what}");
    eventually(&what, 300, Duration::from_millis(100), || async {
        let record = payment_record(id).await;
        if done(&record) {
            Ok(record)
        } else {
            Err(record)
        }
    })
    .await
}

/// Waits until the record is in one of `states`.
pub async fn wait_for(id: &str, states: &[State]) -> PaymentRecord {
    wait_until(id, &format!("{states:?}"), |r| states.contains(&r.state)).await
}

/// The record, if its transaction is sent: `signed` or `submitted`, and the node knows its hash
/// (in the pool, or mined). The worker does not record its broadcast, so `signed` alone does not
/// say the transaction left.
pub async fn sent_record(id: &str) -> Option<PaymentRecord> {
    let record = find_payment_record(id).await?;
    let hash = record.tx_hash?;
    let in_flight = matches!(record.state, State::Signed | State::Submitted);
    (in_flight && transaction(hash).await.is_some()).then_some(record)
}

/// Waits until the worker has sent the record's transaction ([`sent_record`]).
pub async fn wait_sent(id: &str) -> PaymentRecord {
    let what = format!("{id}'s transaction sent");
    eventually(&what, 300, Duration::from_millis(100), || async {
        match sent_record(id).await {
            Some(record) => Ok(record),
            None => Err(find_payment_record(id).await.map(|r| (r.state, r.tx_hash))),
        }
    })
    .await
}

/// An item of the payments table as stored, attribute by attribute, read strongly consistent: for
/// items the library cannot read (which is what the tests that use it look at).
pub async fn payment_item(id: &str) -> Option<Item> {
    dynamodb()
        .await
        .get_item()
        .table_name(&stack().payments_table)
        .key("id", AttributeValue::S(id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

/// Every item of `table`, page after page.
pub async fn scan(table: &str) -> Vec<Item> {
    let client = dynamodb().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    items
}

/// Every payment record in the payments table, by id: not the other items kept beside them
/// (`payment-identifier` bindings, payers' revert counts, replay's lease and cursors), whose keys
/// are no payment id.
pub async fn all_records() -> Vec<PaymentRecord> {
    let is_record = |item: &Item| {
        item.get("id")
            .and_then(|id| id.as_s().ok())
            .is_some_and(|id| PaymentId::parse(id).is_some())
    };
    let mut records: Vec<PaymentRecord> = scan(&stack().payments_table)
        .await
        .into_iter()
        .filter(is_record)
        .map(|item| serde_dynamo::from_item(item).expect("a payment record"))
        .collect();
    records.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    records
}

/// A row of the lanes table: the lane's state and its next nonce on each network. The library
/// keeps the row private (`Store::lane_next_nonce` reads one nonce); the tests compare the whole
/// table, every attribute.
#[derive(Debug, Clone)]
pub struct LaneRow {
    pub lane: String,
    pub item: Item,
}

/// Two rows are the same when everything but their leases is: a lease is a hint a signer takes
/// and gives back without writing anything ahead (docs/settlement.md, "The lane's lease"), so a
/// crash after signing may leave one where no nonce was taken.
impl PartialEq for LaneRow {
    fn eq(&self, other: &Self) -> bool {
        let without_lease = |item: &Item| -> Item {
            item.iter()
                .filter(|(name, _)| !name.starts_with("lease#") && !name.starts_with("lease_by#"))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        };
        self.lane == other.lane && without_lease(&self.item) == without_lease(&other.item)
    }
}

impl LaneRow {
    /// The next nonce on `network` (0 until the lane first signs there).
    pub fn next_nonce(&self, network: &str) -> u64 {
        self.item
            .get(&facilitator::store::nonce_attribute(network))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The whole lanes table, by lane: its nonces must not move when nothing was written ahead.
pub async fn lanes_table() -> Vec<LaneRow> {
    let mut rows: Vec<LaneRow> = scan(&stack().lanes_table)
        .await
        .into_iter()
        .map(|item| LaneRow {
            lane: item["lane"].as_s().expect("a lane row").clone(),
            item,
        })
        .collect();
    rows.sort_by(|a, b| a.lane.cmp(&b.lane));
    rows
}

/// Item counts of the facilitator's DynamoDB tables, to prove verify writes nothing.
pub async fn table_item_counts() -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    for table in [&stack().payments_table, &stack().lanes_table] {
        counts.push((table.clone(), scan(table).await.len()));
    }
    counts
}
