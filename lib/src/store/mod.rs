//! Payments and signer lanes in DynamoDB (docs/settlement.md).
//!
//! Every change of a payment's state is a conditional write on the state it leaves, so two
//! writers (two `/settle` calls, the worker, replay) can never both move one record; the loser
//! learns it lost and reads what the winner did.

mod record;

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::{put_item::PutItemError, update_item::UpdateItemError},
    types::{AttributeValue, Put, TransactWriteItem, Update},
};
use tracing::instrument;

pub use record::{PaymentId, PaymentRecord, State, RETENTION_SECS};

/// DynamoDB could not be asked, or answered with an error we do not expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DynamoDB {operation} failed: {problem}")]
pub struct StoreError {
    pub operation: &'static str,
    pub problem: String,
}

fn fail<E: std::error::Error + 'static>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError {
        operation,
        problem: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
    }
}

/// What a create found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// This call created the record.
    New,
    /// A record for the same authorization was already there: this one.
    Exists(Box<PaymentRecord>),
}

/// The sparse index of records that are not terminal, by `open_shard` and `updated_at`.
pub const OPEN_INDEX: &str = "open-by-age";
/// `open_shard`'s value while a record is not terminal.
pub const OPEN_SHARD: &str = "open";

/// A page of [`Store::open_records`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPage {
    pub records: Vec<PaymentRecord>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<HashMap<String, AttributeValue>>,
}

/// The two tables.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_dynamodb::Client,
    payments: String,
    lanes: String,
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, payments: String, lanes: String) -> Self {
        Store {
            client,
            payments,
            lanes,
        }
    }

    /// Creates the record if no record has this id. Never overwrites (I2).
    #[instrument(skip_all, fields(id = %record.id), err(level = "warn"))]
    pub async fn create(&self, record: &PaymentRecord) -> Result<Created, StoreError> {
        let item = serde_dynamo::to_item(record).map_err(fail("serialise"))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.payments)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send();
        match Box::pin(put).await {
            Ok(_) => Ok(Created::New),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let existing = self.get(&record.id).await?.ok_or_else(|| StoreError {
                    operation: "PutItem",
                    problem: format!("{} exists by its condition but cannot be read", record.id),
                })?;
                Ok(Created::Exists(Box::new(existing)))
            }
            Err(e) => Err(fail("PutItem")(e)),
        }
    }

    /// Reads a record, strongly consistent (a follower must see the latest transition).
    pub async fn get(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.payments)
            .key("id", AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send();
        let answer = Box::pin(read).await.map_err(fail("GetItem"))?;
        answer
            .item
            .map(|item| serde_dynamo::from_item(item).map_err(fail("deserialise")))
            .transpose()
    }

    /// Moves a record from `from` to `to` and sets `fields`, only if it is still in `from`.
    /// Returns whether this call made the move.
    #[instrument(skip_all, fields(id, from = ?from, to = ?to), err(level = "warn"))]
    pub async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        fields: &[(&str, AttributeValue)],
    ) -> Result<bool, StoreError> {
        let update = transition_update(&self.payments, id, from, to, fields);
        let request = self
            .client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .condition_expression(update.condition_expression().unwrap_or_default())
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .send();
        match Box::pin(request).await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(fail("UpdateItem")(e)),
        }
    }

    /// The write-ahead of a signed transaction (I3) and the lane's nonce step (I4), as one
    /// transaction: the record `queued → signed` with the raw transaction and its hash, and the lane's
    /// `next_nonce` from `nonce` to `nonce + 1`. Returns false when either condition failed (the
    /// record moved on, or another sender took that nonce): then nothing was written.
    #[instrument(skip_all, fields(id, lane, nonce), err(level = "warn"))]
    pub async fn write_ahead(
        &self,
        id: &str,
        lane: &str,
        nonce: u64,
        raw_tx: &str,
        tx_hash: &str,
    ) -> Result<bool, StoreError> {
        let record = transition_update(
            &self.payments,
            id,
            State::Queued,
            State::Signed,
            &[
                ("lane_nonce", AttributeValue::N(nonce.to_string())),
                ("raw_tx", AttributeValue::S(raw_tx.to_owned())),
                ("tx_hash", AttributeValue::S(tx_hash.to_owned())),
            ],
        );
        let lane_item: HashMap<String, AttributeValue> = HashMap::from([
            ("lane".to_owned(), AttributeValue::S(lane.to_owned())),
            (
                "next_nonce".to_owned(),
                AttributeValue::N((nonce + 1).to_string()),
            ),
            (
                "updated_at".to_owned(),
                AttributeValue::N(now_ms().to_string()),
            ),
        ]);
        let lane_put = Put::builder()
            .table_name(&self.lanes)
            .set_item(Some(lane_item))
            // The lane moves only from the nonce we read; a missing lane starts anywhere the chain says.
            .condition_expression("attribute_not_exists(lane) OR next_nonce <= :n")
            .expression_attribute_values(":n", AttributeValue::N(nonce.to_string()))
            .build()
            .map_err(fail("build Put"))?;
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(record).build())
            .transact_items(TransactWriteItem::builder().put(lane_put).build())
            .send();
        match Box::pin(request).await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                Ok(false)
            }
            Err(e) => Err(fail("TransactWriteItems")(e)),
        }
    }

    /// One page of the records that are not terminal and have not changed since `changed_by`
    /// (unix ms), oldest first, from the sparse `open-by-age` index (replay's scan). Index reads are
    /// eventually consistent: read a record again with [`Store::get`] before acting on it. Returns
    /// the page and where the next page starts (`None` at the end).
    pub async fn open_records(
        &self,
        changed_by: u64,
        limit: i32,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<OpenPage, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.payments)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_shard = :open AND updated_at <= :cutoff")
            .expression_attribute_values(":open", AttributeValue::S(OPEN_SHARD.to_owned()))
            .expression_attribute_values(":cutoff", AttributeValue::N(changed_by.to_string()))
            .scan_index_forward(true)
            .limit(limit.max(1))
            .set_exclusive_start_key(start)
            .send();
        let answer = Box::pin(query).await.map_err(fail("Query"))?;
        let records = answer
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(fail("deserialise")))
            .collect::<Result<Vec<PaymentRecord>, _>>()?;
        Ok(OpenPage {
            records,
            next: answer.last_evaluated_key.filter(|k| !k.is_empty()),
        })
    }

    /// The lane's next nonce as the table has it (0 for a lane never used).
    pub async fn lane_next_nonce(&self, lane: &str) -> Result<u64, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .consistent_read(true)
            .send();
        let answer = Box::pin(read).await.map_err(fail("GetItem"))?;
        Ok(answer
            .item
            .and_then(|item| {
                item.get("next_nonce")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0))
    }
}

/// The conditional update behind every transition: `state` and `updated_at` always, the given
/// fields, and `open_shard` removed when the new state is terminal (it leaves replay's index).
fn transition_update(
    table: &str,
    id: &str,
    from: State,
    to: State,
    fields: &[(&str, AttributeValue)],
) -> Update {
    let mut set = vec!["#state = :to".to_owned(), "updated_at = :now".to_owned()];
    let mut names = HashMap::from([("#state".to_owned(), "state".to_owned())]);
    let mut values = HashMap::from([
        (
            ":from".to_owned(),
            AttributeValue::S(from.as_str().to_owned()),
        ),
        (":to".to_owned(), AttributeValue::S(to.as_str().to_owned())),
        (":now".to_owned(), AttributeValue::N(now_ms().to_string())),
    ]);
    for (i, (name, value)) in fields.iter().enumerate() {
        set.push(format!("#f{i} = :f{i}"));
        names.insert(format!("#f{i}"), (*name).to_owned());
        values.insert(format!(":f{i}"), value.clone());
    }
    let mut expression = format!("SET {}", set.join(", "));
    if to.is_terminal() {
        expression.push_str(" REMOVE open_shard");
    }
    // Every field above is set, so the builder cannot fail; expect() would be the honest
    // alternative, but the lints keep panics out of library code.
    Update::builder()
        .table_name(table)
        .key("id", AttributeValue::S(id.to_owned()))
        .update_expression(expression)
        .condition_expression("#state = :from")
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .build()
        .unwrap_or_else(|_| unreachable!("table, key and update expression are always set"))
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
