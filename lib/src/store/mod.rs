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
    types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update},
};
use tracing::instrument;

pub use record::{Claimant, NewPayment, PaymentId, PaymentRecord, State, RETENTION_SECS};

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

/// What binding a `payment-identifier` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The identifier is this payment's (bound now, or earlier to the same payment).
    Same,
    /// The identifier is bound to another payment.
    Conflict,
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
        if self.put_new(item).await? {
            return Ok(Created::New);
        }
        let existing = self.get(&record.id).await?.ok_or_else(|| StoreError {
            operation: "PutItem",
            problem: format!("{} exists by its condition but cannot be read", record.id),
        })?;
        Ok(Created::Exists(Box::new(existing)))
    }

    /// Puts an item into the payments table only if no item has its `id`; false if one has.
    async fn put_new(&self, item: HashMap<String, AttributeValue>) -> Result<bool, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.payments)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send();
        match Box::pin(put).await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
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
        self.change(id, &Change::new(from, to, fields)).await
    }

    /// [`Store::transition`] that also answers with the record as the move left it (DynamoDB's
    /// `ReturnValues: ALL_NEW`), or `None` if the record was not in `from`: one call where a
    /// transition and a read would be two.
    #[instrument(skip_all, fields(id, from = ?from, to = ?to), err(level = "warn"))]
    pub async fn transition_and_read(
        &self,
        id: &str,
        from: State,
        to: State,
        fields: &[(&str, AttributeValue)],
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.change_and_read(id, &Change::new(from, to, fields))
            .await
    }

    /// [`Store::transition_and_read`] from a record that is `signed` or `submitted`: a follower
    /// that found the receipt of a `signed` record need not lose a round to the worker's move to
    /// `submitted`, which changes nothing else. A `/settle` follower that settles the record claims
    /// its success in the same write (`claim`); replay claims nothing.
    #[instrument(skip_all, fields(id, to = ?to), err(level = "warn"))]
    pub async fn finish_broadcast_and_read(
        &self,
        id: &str,
        to: State,
        fields: &[(&str, AttributeValue)],
        claim: Option<&Claimant>,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let claimed = claim.filter(|_| to == State::Settled).map(Claimant::stored);
        let change = Change {
            or_from: Some(State::Submitted),
            claim: claimed.as_deref(),
            ..Change::new(State::Signed, to, fields)
        };
        self.change_and_read(id, &change).await
    }

    /// Claims a `settled` record's success for `claimant` (DESIGN I2): true if the claim is now
    /// `claimant`'s, because nobody held it or `claimant` already did (the same request retrying
    /// the write, or the same `payment-identifier`); false if another caller holds it, or the
    /// record is not `settled`.
    #[instrument(skip_all, fields(id), err(level = "warn"))]
    pub async fn claim(&self, id: &str, claimant: &Claimant) -> Result<bool, StoreError> {
        let who = claimant.stored();
        let change = Change {
            claim: Some(&who),
            ..Change::new(State::Settled, State::Settled, &[])
        };
        self.change(id, &change).await
    }

    /// Applies one conditional change and answers with the record as it left it, or `None` if
    /// its conditions did not hold.
    async fn change_and_read(
        &self,
        id: &str,
        change: &Change<'_>,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(item) = self.update(id, change, ReturnValue::AllNew).await? else {
            return Ok(None);
        };
        let item = item.ok_or_else(|| StoreError {
            operation: "UpdateItem",
            problem: "the answer has no attributes although ALL_NEW was asked".to_owned(),
        })?;
        serde_dynamo::from_item(item)
            .map(Some)
            .map_err(fail("deserialise"))
    }

    /// Applies one conditional change; returns whether its conditions held (and it was made).
    async fn change(&self, id: &str, change: &Change<'_>) -> Result<bool, StoreError> {
        Ok(self.update(id, change, ReturnValue::None).await?.is_some())
    }

    /// One conditional UpdateItem: `None` if its conditions did not hold, else the attributes
    /// `returns` asked for.
    async fn update(
        &self,
        id: &str,
        change: &Change<'_>,
        returns: ReturnValue,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>, StoreError> {
        let update = transition_update(&self.payments, id, change);
        let request = self
            .client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .condition_expression(update.condition_expression().unwrap_or_default())
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .return_values(returns)
            .send();
        match Box::pin(request).await {
            Ok(answer) => Ok(Some(answer.attributes)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
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
        sender: &str,
        nonce: u64,
        raw_tx: &str,
        tx_hash: &str,
    ) -> Result<bool, StoreError> {
        let fields = [
            ("sender", AttributeValue::S(sender.to_owned())),
            ("lane_nonce", AttributeValue::N(nonce.to_string())),
            ("raw_tx", AttributeValue::S(raw_tx.to_owned())),
            ("tx_hash", AttributeValue::S(tx_hash.to_owned())),
        ];
        let record = transition_update(
            &self.payments,
            id,
            &Change::new(State::Queued, State::Signed, &fields),
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

    /// The write-ahead of a replacement (I3): a `signed` or `submitted` record's transaction is
    /// superseded by another at the same lane nonce (a fee bump, or a cancellation). The new bytes
    /// and hash are stored, and the old hash appended to `replaced`, before the new bytes are sent;
    /// only if the record still holds `old_hash`, so two replacements never race. The state stays.
    #[instrument(skip_all, fields(id, old_hash), err(level = "warn"))]
    pub async fn write_replacement(
        &self,
        id: &str,
        state: State,
        old_hash: &str,
        raw_tx: &str,
        tx_hash: &str,
    ) -> Result<bool, StoreError> {
        let fields = [
            ("raw_tx", AttributeValue::S(raw_tx.to_owned())),
            ("tx_hash", AttributeValue::S(tx_hash.to_owned())),
        ];
        let change = Change {
            replaced: Some(old_hash),
            unchanged: Some(("tx_hash", AttributeValue::S(old_hash.to_owned()))),
            ..Change::new(state, state, &fields)
        };
        self.change(id, &change).await
    }

    /// Back to `queued`, to be signed afresh: the record's lane nonce was used by another
    /// transaction, so none of its own can ever be mined. Its hash joins `replaced`; its bytes and
    /// nonce go. Only if the record still holds `old_hash`.
    #[instrument(skip_all, fields(id, old_hash), err(level = "warn"))]
    pub async fn requeue_unsent(
        &self,
        id: &str,
        state: State,
        old_hash: &str,
    ) -> Result<bool, StoreError> {
        let change = Change {
            remove: &["raw_tx", "tx_hash", "lane_nonce", "sender"],
            replaced: Some(old_hash),
            unchanged: Some(("tx_hash", AttributeValue::S(old_hash.to_owned()))),
            ..Change::new(state, State::Queued, &[])
        };
        self.change(id, &change).await
    }

    /// Moves a `queued` record from `old_lane` to `new_lane` (its lane was drained: no worker signs
    /// with it any more). Nothing was signed, so no nonce is involved.
    #[instrument(skip_all, fields(id, old_lane, new_lane), err(level = "warn"))]
    pub async fn move_lane(
        &self,
        id: &str,
        old_lane: &str,
        new_lane: &str,
    ) -> Result<bool, StoreError> {
        let fields = [("lane", AttributeValue::S(new_lane.to_owned()))];
        let change = Change {
            unchanged: Some(("lane", AttributeValue::S(old_lane.to_owned()))),
            ..Change::new(State::Queued, State::Queued, &fields)
        };
        self.change(id, &change).await
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

    /// Binds a `payment-identifier` to a payment, once (the x402 extension's idempotency key). The
    /// binding is an item of its own in the payments table (`key` never looks like a payment id)
    /// and lives as long as the payment's record.
    #[instrument(skip_all, err(level = "warn"))]
    pub async fn bind_identifier(
        &self,
        key: &str,
        payment: &str,
        digest: alloy::primitives::B256,
        expires_at: u64,
    ) -> Result<Binding, StoreError> {
        let digest = format!("{digest:#x}");
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(key.to_owned())),
            ("payment".to_owned(), AttributeValue::S(payment.to_owned())),
            ("digest".to_owned(), AttributeValue::S(digest.clone())),
            (
                "expires_at".to_owned(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]);
        if self.put_new(item).await? {
            return Ok(Binding::Same);
        }
        let read = self
            .client
            .get_item()
            .table_name(&self.payments)
            .key("id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send();
        let bound = Box::pin(read)
            .await
            .map_err(fail("GetItem"))?
            .item
            .and_then(|item| item.get("digest").and_then(|d| d.as_s().ok()).cloned());
        Ok(match bound {
            Some(d) if d == digest => Binding::Same,
            _ => Binding::Conflict,
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

/// One conditional change of a record, as the store's writes share it: `state` from `from` to
/// `to` and `updated_at` always; then fields set, fields removed, a hash appended to `replaced`, and
/// a further condition that one attribute still holds the value the caller read.
#[derive(Debug, Clone)]
struct Change<'a> {
    from: State,
    /// A second state the change may start from.
    or_from: Option<State>,
    to: State,
    set: &'a [(&'a str, AttributeValue)],
    remove: &'a [&'a str],
    replaced: Option<&'a str>,
    unchanged: Option<(&'a str, AttributeValue)>,
    /// Sets `claimed_by`, only if nobody else holds it.
    claim: Option<&'a str>,
}

impl<'a> Change<'a> {
    fn new(from: State, to: State, set: &'a [(&'a str, AttributeValue)]) -> Self {
        Change {
            from,
            or_from: None,
            to,
            set,
            remove: &[],
            replaced: None,
            unchanged: None,
            claim: None,
        }
    }
}

/// The conditional update behind every change of a record; `open_shard` is removed when the new
/// state is terminal (the record leaves replay's index).
fn transition_update(table: &str, id: &str, change: &Change<'_>) -> Update {
    let mut set = vec!["#state = :to".to_owned(), "updated_at = :now".to_owned()];
    let mut names = HashMap::from([("#state".to_owned(), "state".to_owned())]);
    let mut values = HashMap::from([
        (
            ":from".to_owned(),
            AttributeValue::S(change.from.as_str().to_owned()),
        ),
        (
            ":to".to_owned(),
            AttributeValue::S(change.to.as_str().to_owned()),
        ),
        (":now".to_owned(), AttributeValue::N(now_ms().to_string())),
    ]);
    for (i, (name, value)) in change.set.iter().enumerate() {
        set.push(format!("#f{i} = :f{i}"));
        names.insert(format!("#f{i}"), (*name).to_owned());
        values.insert(format!(":f{i}"), value.clone());
    }
    if let Some(hash) = change.replaced {
        set.push("replaced = list_append(if_not_exists(replaced, :none), :old)".to_owned());
        values.insert(":none".to_owned(), AttributeValue::L(vec![]));
        values.insert(
            ":old".to_owned(),
            AttributeValue::L(vec![AttributeValue::S(hash.to_owned())]),
        );
    }
    if let Some(who) = change.claim {
        set.push("claimed_by = :who".to_owned());
        values.insert(":who".to_owned(), AttributeValue::S(who.to_owned()));
    }
    let mut remove: Vec<&str> = change.remove.to_vec();
    if change.to.is_terminal() {
        remove.push("open_shard");
    }
    let mut expression = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    let mut condition = "#state = :from".to_owned();
    if let Some(or_from) = change.or_from {
        condition = "#state IN (:from, :or_from)".to_owned();
        values.insert(
            ":or_from".to_owned(),
            AttributeValue::S(or_from.as_str().to_owned()),
        );
    }
    if change.claim.is_some() {
        condition.push_str(" AND (attribute_not_exists(claimed_by) OR claimed_by = :who)");
    }
    if let Some((name, value)) = &change.unchanged {
        condition.push_str(" AND #unchanged = :unchanged");
        names.insert("#unchanged".to_owned(), (*name).to_owned());
        values.insert(":unchanged".to_owned(), value.clone());
    }
    // Every field above is set, so the builder cannot fail; expect() would be the honest
    // alternative, but the lints keep panics out of library code.
    Update::builder()
        .table_name(table)
        .key("id", AttributeValue::S(id.to_owned()))
        .update_expression(expression)
        .condition_expression(condition)
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
