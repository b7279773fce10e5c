//! Payments and signer lanes in DynamoDB (docs/settlement.md).
//!
//! Every change of a payment's state is a conditional write on the state it leaves, so two
//! writers (two `/settle` calls, the worker, replay) can never both move one record; the loser
//! learns it lost and reads what the winner did.

mod control;
mod item;
mod lane_lease;
mod lanes;
mod payer;
mod record;

#[cfg(test)]
pub(crate) use record::sample;

use std::collections::HashMap;

use alloy::primitives::{Address, Bytes, B256};
use aws_sdk_dynamodb::{
    error::SdkError,
    operation::{put_item::PutItemError, update_item::UpdateItemError},
    types::{AttributeValue, ReturnValue, TransactWriteItem, Update},
};
use tracing::instrument;

use crate::clock::now_ms;
pub use control::{IndexPosition, Lease, OpenEntry, OpenFilter, Undecodable};
pub use lane_lease::{LaneLease, LeaseAfter, SETTLE_HOLDER, WORKER_HOLDER};
pub use lanes::LaneState;
pub use payer::{refused_until, Standing};
pub use record::{
    Claimant, Ending, Failure, Mined, NewPayment, PaymentId, PaymentRecord, State, MESSAGE_LIMIT,
    RETENTION_SECS,
};

/// DynamoDB could not be asked, answered with an error we do not expect, or holds an item that is
/// not what we wrote. The SDK's error is kept as the source; the message is its full context.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {operation} failed: {problem}")]
pub struct StoreError {
    pub operation: &'static str,
    pub problem: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    fn new(operation: &'static str, problem: impl Into<String>) -> Self {
        StoreError {
            operation,
            problem: problem.into(),
            source: None,
        }
    }
}

fn fail<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError {
        operation,
        problem: aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
        source: Some(Box::new(e)),
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

type UpdateItemOutput = aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
type UpdateRequest<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    UpdateItemOutput,
                    SdkError<UpdateItemError, aws_sdk_dynamodb::config::http::HttpResponse>,
                >,
            > + Send
            + 'a,
    >,
>;

/// An UpdateItem with a condition: `Some(its answer)` when the condition held and the change was
/// made, `None` when it did not; any other failure is an error. Every conditional write of the
/// store's items reads its outcome this way.
/// The request comes boxed as a trait object: the SDK's future types are deep enough to overflow
/// rustc's query depth when an async fn holds one by type.
async fn conditional_update(
    request: UpdateRequest<'_>,
) -> Result<Option<UpdateItemOutput>, StoreError> {
    match request.await {
        Ok(answer) => Ok(Some(answer)),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(None)
        }
        Err(e) => Err(fail("UpdateItem")(e)),
    }
}

/// A page of [`Store::open_records`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPage {
    /// The page's items in index order: each a record, or an item that does not decode as one.
    pub entries: Vec<OpenEntry>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<IndexPosition>,
}

/// The two tables.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_dynamodb::Client,
    payments: String,
    lanes: String,
    /// When a payer whose settlements revert is refused ([`payer`]).
    payer_policy: crate::config::RevertPolicy,
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, payments: String, lanes: String) -> Self {
        Store {
            client,
            payments,
            lanes,
            payer_policy: Default::default(),
        }
    }

    /// When a payer whose settlements revert on chain is refused.
    pub fn payer_policy(&self) -> crate::config::RevertPolicy {
        self.payer_policy
    }

    /// The payments and lanes tables, as configured.
    pub fn from_config(config: &crate::config::Config, aws: &aws_config::SdkConfig) -> Self {
        Store::new(
            aws_sdk_dynamodb::Client::new(aws),
            config.payments_table.clone(),
            config.lanes_table.clone(),
        )
        .with_payer_policy(config.payer_reverts)
    }

    /// Sets when a payer whose settlements revert on chain is refused (the default otherwise).
    pub fn with_payer_policy(mut self, policy: crate::config::RevertPolicy) -> Self {
        self.payer_policy = policy;
        self
    }

    /// Creates the record if no record has this id. Never overwrites (I2).
    #[instrument(skip_all, fields(id = %record.id), err(level = "warn"))]
    pub async fn create(&self, record: &PaymentRecord) -> Result<Created, StoreError> {
        let item = serde_dynamo::to_item(record).map_err(fail("serialise"))?;
        if self.put_new(item).await? {
            return Ok(Created::New);
        }
        let existing = self.get(&record.id).await?.ok_or_else(|| {
            StoreError::new(
                "PutItem",
                format!("{} exists by its condition but cannot be read", record.id),
            )
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
    pub async fn get(&self, id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_item(&self.payments, "id", id.as_str())
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(fail("deserialise")))
            .transpose()
    }

    /// One item by its key, strongly consistent.
    async fn read_item(
        &self,
        table: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.to_owned()))
            .consistent_read(true)
            .send();
        Ok(Box::pin(read).await.map_err(fail("GetItem"))?.item)
    }

    /// `signed → submitted`: the node took the signed transaction.
    #[instrument(skip_all, fields(%id), err(level = "warn"))]
    pub async fn submit(&self, id: &PaymentId) -> Result<bool, StoreError> {
        self.change(id, &Change::new(State::Signed, State::Submitted))
            .await
    }

    /// `from → settled` by `mined`, a transaction the chain names as having used the
    /// authorization and paid the payee: one of ours, or `by_other`'s.
    #[instrument(skip_all, fields(%id, from = ?from), err(level = "warn"))]
    pub async fn settle(
        &self,
        id: &PaymentId,
        from: State,
        mined: Mined,
        by_other: bool,
    ) -> Result<bool, StoreError> {
        let change = Change::new(from, State::Settled)
            .mined(mined)
            .settled_by_other(by_other);
        self.change(id, &change).await
    }

    /// `from → failed`, keeping why.
    #[instrument(skip_all, fields(%id, from = ?from, reason = failure.reason.as_str()), err(level = "warn"))]
    pub async fn fail(
        &self,
        id: &PaymentId,
        from: State,
        failure: &Failure,
    ) -> Result<bool, StoreError> {
        let change = Change::new(from, State::Failed).failure(failure);
        self.change(id, &change).await
    }

    /// `from → expired`: the authorization ran out before anything that pays was mined.
    #[instrument(skip_all, fields(%id, from = ?from), err(level = "warn"))]
    pub async fn expire(
        &self,
        id: &PaymentId,
        from: State,
        failure: &Failure,
    ) -> Result<bool, StoreError> {
        let change = Change::new(from, State::Expired).failure(failure);
        self.change(id, &change).await
    }

    /// `queued → cancelled`: `/settle` gave up on a payment nothing was signed for.
    #[instrument(skip_all, fields(%id), err(level = "warn"))]
    pub async fn cancel(&self, id: &PaymentId, failure: &Failure) -> Result<bool, StoreError> {
        let change = Change::new(State::Queued, State::Cancelled).failure(failure);
        self.change(id, &change).await
    }

    /// Ends a `signed` or `submitted` record by what was mined, and answers with the record as the
    /// move left it (DynamoDB's `ReturnValues: ALL_NEW`), or `None` if it had moved on: one call
    /// where a transition and a read would be two. A follower that found the receipt of a `signed`
    /// record need not lose a round to the worker's move to `submitted`, which changes nothing
    /// else. A `/settle` follower that settles the record claims its success in the same write
    /// (`claim`); replay claims nothing.
    #[instrument(skip_all, fields(%id), err(level = "warn"))]
    pub async fn finish(
        &self,
        id: &PaymentId,
        mined: Mined,
        ending: &Ending,
        claim: Option<&Claimant>,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let claimed = claim.map(Claimant::stored);
        let change = match ending {
            Ending::Settled { by_other } => Change::new(State::Signed, State::Settled)
                .settled_by_other(*by_other)
                .claim(claimed.as_deref()),
            Ending::Failed(failure) => Change::new(State::Signed, State::Failed).failure(failure),
            Ending::Expired(failure) => Change::new(State::Signed, State::Expired).failure(failure),
        };
        let change = change.or_from(State::Submitted).mined(mined);
        self.change_and_read(id, &change).await
    }

    /// Claims a `settled` record's success for `claimant` (DESIGN I2): true if the claim is now
    /// `claimant`'s, because nobody held it or `claimant` already did (the same request retrying
    /// the write, or the same `payment-identifier`); false if another caller holds it, or the
    /// record is not `settled`.
    #[instrument(skip_all, fields(%id), err(level = "warn"))]
    pub async fn claim(&self, id: &PaymentId, claimant: &Claimant) -> Result<bool, StoreError> {
        let who = claimant.stored();
        let change = Change::new(State::Settled, State::Settled).claim(Some(&who));
        self.change(id, &change).await
    }

    /// Applies one conditional change and answers with the record as it left it, or `None` if
    /// its conditions did not hold.
    async fn change_and_read(
        &self,
        id: &PaymentId,
        change: &Change<'_>,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(item) = self.update(id, change, ReturnValue::AllNew).await? else {
            return Ok(None);
        };
        let item = item.ok_or_else(|| {
            StoreError::new(
                "UpdateItem",
                "the answer has no attributes although ALL_NEW was asked",
            )
        })?;
        serde_dynamo::from_item(item)
            .map(Some)
            .map_err(fail("deserialise"))
    }

    /// Applies one conditional change; returns whether its conditions held (and it was made).
    async fn change(&self, id: &PaymentId, change: &Change<'_>) -> Result<bool, StoreError> {
        Ok(self.update(id, change, ReturnValue::None).await?.is_some())
    }

    /// One conditional UpdateItem: `None` if its conditions did not hold, else the attributes
    /// `returns` asked for.
    async fn update(
        &self,
        id: &PaymentId,
        change: &Change<'_>,
        returns: ReturnValue,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>, StoreError> {
        let update = change.update(&self.payments, id)?;
        let request = self.update_item(&update).return_values(returns).send();
        Ok(conditional_update(Box::pin(request))
            .await?
            .map(|answer| answer.attributes))
    }

    /// `update` (built as a transaction's item) as an UpdateItem of its own.
    fn update_item(
        &self,
        update: &Update,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .condition_expression(update.condition_expression().unwrap_or_default())
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
    }

    /// The write-ahead of a signed transaction (I3) and the lane's nonce step (I4), as one
    /// transaction: the record `queued → signed` with the raw transaction and its hash, and the
    /// lane's next nonce on the record's network from `signed.nonce` to the one after. Returns false
    /// when either condition failed (the record moved on or no longer holds what `record` says, or
    /// another sender took that nonce): then nothing was written.
    #[instrument(skip_all, fields(id = %record.id, lane = %record.lane, nonce = signed.nonce), err(level = "warn"))]
    pub async fn sign(
        &self,
        record: &PaymentRecord,
        signed: &Signed,
        lease: LeaseAfter<'_>,
    ) -> Result<bool, StoreError> {
        self.sign_run(&[(record, signed)], lease).await
    }

    /// The write-ahead of a lane's run ([`Store::sign`] for several payments at once): each record
    /// `queued → signed` with its transaction, and the lane's next nonce stepped past all of them,
    /// in one transaction. The run's nonces must follow each other from the first; every record
    /// must be on the first one's lane and network. All or nothing: false when any condition failed,
    /// and another signer's live lease on the lane fails it too ([`lane_lease`]).
    #[instrument(skip_all, fields(payments = run.len()), err(level = "warn"))]
    pub async fn sign_run(
        &self,
        run: &[(&PaymentRecord, &Signed)],
        lease: LeaseAfter<'_>,
    ) -> Result<bool, StoreError> {
        let Some(((first, first_signed), rest)) = run.split_first() else {
            return Ok(true);
        };
        let (lane, network) = (first.lane.as_str(), first.network.as_str());
        let mut request = self.client.transact_write_items();
        for (i, (record, signed)) in run.iter().enumerate() {
            let next = first_signed.nonce + i as u64;
            if record.lane != lane || record.network != network || signed.nonce != next {
                return Err(StoreError::new(
                    "TransactWriteItems",
                    format!(
                        "a run's payments must share a lane and network and take consecutive nonces; {} is on {} {} at {}",
                        record.id, record.lane, record.network, signed.nonce
                    ),
                ));
            }
            request = request.transact_items(
                TransactWriteItem::builder()
                    .update(Self::write_ahead(record, signed).update(&self.payments, &record.id)?)
                    .build(),
            );
        }
        let step = self.nonce_step(
            (lane, network),
            first_signed.nonce,
            first_signed.nonce + 1 + rest.len() as u64,
            lease,
        )?;
        let request = request
            .transact_items(TransactWriteItem::builder().update(step).build())
            .send();
        match Box::pin(request).await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                Ok(false)
            }
            Err(e) => Err(fail("TransactWriteItems")(e)),
        }
    }

    /// One record's part of a write-ahead: `queued → signed`, only if the record still holds what
    /// the transaction was built from (the worker may have built it from the copy the queue
    /// message carries rather than from a read of the record).
    fn write_ahead<'a>(record: &PaymentRecord, signed: &Signed) -> Change<'a> {
        let mut unchanged = vec![
            ("lane", AttributeValue::S(record.lane.clone())),
            ("asset", hex_value(&record.asset)),
            ("calldata", hex_value(&record.calldata)),
        ];
        // The contract the transaction calls is part of what it was built from: a copy naming
        // another target (or none where the record has one) must not be written ahead.
        let absent: &'a [&'a str] = match record.target {
            Some(target) => {
                unchanged.push(("target", hex_value(&target)));
                &[]
            }
            None => &["target"],
        };
        let change = Change {
            unchanged,
            absent,
            ..Change::new(State::Queued, State::Signed)
        };
        change
            .set("sender", hex_value(&signed.sender))
            .set("lane_nonce", AttributeValue::N(signed.nonce.to_string()))
            .set("raw_tx", hex_value(&signed.raw))
            .set("tx_hash", hex_value(&signed.hash))
    }

    /// The lane's next nonce on `network` from `from` to `to`: only if no transaction holds `from`
    /// or a later nonce yet (the counter is at or below `from`), and no other signer holds a live
    /// lease on the lane; a lane never used there starts wherever the chain says. The lease is
    /// kept or given back as `lease` says.
    fn nonce_step(
        &self,
        (lane, network): (&str, &str),
        from: u64,
        to: u64,
        lease: LeaseAfter<'_>,
    ) -> Result<Update, StoreError> {
        let (until_name, by_name) = lane_lease::lease_attributes(network);
        let now = now_ms();
        let (lease_change, until) = match lease {
            LeaseAfter::Keep { until, .. } => (", #until = :until, #by = :holder", Some(until)),
            LeaseAfter::Release { .. } => (" REMOVE #until, #by", None),
        };
        let mut update = Update::builder()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression(format!(
                "SET #nonce = :next, updated_at = :now{lease_change}"
            ))
            .condition_expression(format!(
                "(attribute_not_exists(#nonce) OR #nonce <= :from) AND {}",
                lane_lease::FREE_FOR
            ))
            .expression_attribute_names("#nonce", nonce_attribute(network))
            .expression_attribute_names("#until", until_name)
            .expression_attribute_names("#by", by_name)
            .expression_attribute_values(":from", AttributeValue::N(from.to_string()))
            .expression_attribute_values(":next", AttributeValue::N(to.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":takes_over", lane_lease::takes_over(lease.holder()));
        // Named only where the lease is kept: DynamoDB refuses a value the expressions do not use.
        if let Some(until) = until {
            update = update
                .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
                .expression_attribute_values(
                    ":holder",
                    AttributeValue::S(lease.holder().to_owned()),
                );
        }
        update.build().map_err(fail("build Update"))
    }

    /// The lane's next nonce on `network` set to `next`, only upward (or where it is not set yet).
    /// An update, not a put: the row also keeps the lane's state ([`LaneState`]) and its nonces on
    /// other networks.
    fn nonce_raise(&self, lane: &str, network: &str, next: u64) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.lanes)
            .key("lane", AttributeValue::S(lane.to_owned()))
            .update_expression("SET #nonce = :next, updated_at = :now")
            .condition_expression("attribute_not_exists(#nonce) OR #nonce < :next")
            .expression_attribute_names("#nonce", nonce_attribute(network))
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms().to_string()))
            .build()
            .map_err(fail("build Update"))
    }

    /// Raises the lane's next nonce on `network` to `next` (the chain's pending count, when the
    /// node refused a transaction at the table's nonce as too low); never lowers it.
    #[instrument(skip_all, fields(lane, network, next), err(level = "warn"))]
    pub async fn raise_lane_nonce(
        &self,
        lane: &str,
        network: &str,
        next: u64,
    ) -> Result<(), StoreError> {
        let raise = self.nonce_raise(lane, network, next)?;
        let request = self.update_item(&raise).send();
        conditional_update(Box::pin(request)).await.map(drop)
    }

    /// The write-ahead of a replacement (I3): a `signed` or `submitted` record's transaction is
    /// superseded by another at the same lane nonce (a fee bump, or a cancellation). The new bytes
    /// and hash are stored, and the old hash appended to `replaced`, before the new bytes are sent;
    /// only if the record still holds `old_hash`, so two replacements never race. The state stays.
    #[instrument(skip_all, fields(%id, %old_hash), err(level = "warn"))]
    pub async fn replace(
        &self,
        id: &PaymentId,
        state: State,
        old_hash: B256,
        raw: &Bytes,
        hash: B256,
    ) -> Result<bool, StoreError> {
        let change = Change::new(state, state)
            .set("raw_tx", hex_value(raw))
            .set("tx_hash", hex_value(&hash))
            .replacing(old_hash);
        self.change(id, &change).await
    }

    /// Back to `queued`, to be signed afresh: the record's lane nonce was used by another
    /// transaction, so none of its own can ever be mined. Its hash joins `replaced`; its bytes and
    /// nonce go. Only if the record still holds `old_hash`.
    #[instrument(skip_all, fields(%id, %old_hash), err(level = "warn"))]
    pub async fn requeue(
        &self,
        id: &PaymentId,
        state: State,
        old_hash: B256,
    ) -> Result<bool, StoreError> {
        let change = Change {
            remove: &["raw_tx", "tx_hash", "lane_nonce", "sender"],
            ..Change::new(state, State::Queued).replacing(old_hash)
        };
        self.change(id, &change).await
    }

    /// Moves a `queued` record from `old_lane` to `new_lane` (its lane was drained: no worker signs
    /// with it any more). Nothing was signed, so no nonce is involved.
    #[instrument(skip_all, fields(%id, old_lane, new_lane), err(level = "warn"))]
    pub async fn move_lane(
        &self,
        id: &PaymentId,
        old_lane: &str,
        new_lane: &str,
    ) -> Result<bool, StoreError> {
        let change = Change {
            unchanged: vec![("lane", AttributeValue::S(old_lane.to_owned()))],
            ..Change::new(State::Queued, State::Queued)
                .set("lane", AttributeValue::S(new_lane.to_owned()))
        };
        self.change(id, &change).await
    }

    /// One page of the items that are not terminal and have not changed since `changed_by` (unix
    /// ms), oldest first, from the sparse `open-by-age` index (replay's scan), of the networks
    /// `filter` names, starting after `after` (from the oldest when `None`). Index reads are
    /// eventually consistent: read a record again with [`Store::get`] before acting on it. An item
    /// that does not decode as a record is returned as [`OpenEntry::Undecodable`], never an error:
    /// one bad item must not stop the scan of all the others.
    pub async fn open_records(
        &self,
        changed_by: u64,
        filter: &OpenFilter<'_>,
        limit: i32,
        after: Option<&IndexPosition>,
    ) -> Result<OpenPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.payments)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_shard = :open AND updated_at <= :cutoff")
            .expression_attribute_values(":open", AttributeValue::S(OPEN_SHARD.to_owned()))
            .expression_attribute_values(":cutoff", AttributeValue::N(changed_by.to_string()))
            .scan_index_forward(true)
            .limit(limit.max(1))
            .set_exclusive_start_key(after.map(IndexPosition::start_key));
        if let Some((expression, values)) = filter.expression() {
            query = query
                .filter_expression(expression)
                .expression_attribute_names("#network", "network");
            for (name, value) in values {
                query = query.expression_attribute_values(name, value);
            }
        }
        let answer = Box::pin(query.send()).await.map_err(fail("Query"))?;
        Ok(OpenPage {
            entries: answer
                .items
                .unwrap_or_default()
                .into_iter()
                .map(OpenEntry::decode)
                .collect(),
            next: answer
                .last_evaluated_key
                .as_ref()
                .and_then(IndexPosition::from_key),
        })
    }

    /// Binds a `payment-identifier` to a payment, once (the x402 extension's idempotency key). The
    /// binding is an item of its own in the payments table (`key` never parses as a payment id)
    /// and lives as long as the payment's record.
    #[instrument(skip_all, err(level = "warn"))]
    pub async fn bind_identifier(
        &self,
        key: &str,
        payment: &PaymentId,
        digest: B256,
        expires_at: u64,
    ) -> Result<Binding, StoreError> {
        let digest = format!("{digest:#x}");
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(key.to_owned())),
            (
                "payment".to_owned(),
                AttributeValue::S(payment.as_str().to_owned()),
            ),
            ("digest".to_owned(), AttributeValue::S(digest.clone())),
            (
                "expires_at".to_owned(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]);
        if self.put_new(item).await? {
            return Ok(Binding::Same);
        }
        let bound = self
            .read_item(&self.payments, "id", key)
            .await?
            .and_then(|item| item.get("digest").and_then(|d| d.as_s().ok()).cloned());
        Ok(match bound {
            Some(d) if d == digest => Binding::Same,
            _ => Binding::Conflict,
        })
    }

    /// The lane's next nonce as the table has it (0 for a lane never used).
    pub async fn lane_next_nonce(&self, lane: &str, network: &str) -> Result<u64, StoreError> {
        Ok(self.lane_nonce(lane, network).await?.unwrap_or(0))
    }

    /// The lane's next nonce on `network` as the table has it; `None` if the lane never signed
    /// there (its first nonce is then the chain's).
    pub async fn lane_nonce(&self, lane: &str, network: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .read_item(&self.lanes, "lane", lane)
            .await?
            .and_then(|item| {
                item.get(&nonce_attribute(network))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            }))
    }
}

/// The lanes-table attribute holding a lane's next nonce on `network` (CAIP-2): one per network,
/// because an address's nonces are counted per chain. (Rows from before networks were told apart
/// have a single `next_nonce`, which is not read: a lane's first nonce on each network then comes
/// from the chain's pending count, as for a new lane.)
pub fn nonce_attribute(network: &str) -> String {
    format!("nonce#{network}")
}

/// A transaction the worker signed, as the write-ahead keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The lane's address.
    pub sender: Address,
    /// The lane nonce it was signed at.
    pub nonce: u64,
    pub raw: Bytes,
    pub hash: B256,
}

fn hex_value(v: &impl std::fmt::LowerHex) -> AttributeValue {
    AttributeValue::S(format!("{v:#x}"))
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
    set: Vec<(&'static str, AttributeValue)>,
    remove: &'a [&'a str],
    /// The transaction hash the record must still hold; it is appended to `replaced`.
    replaced: Option<B256>,
    unchanged: Vec<(&'a str, AttributeValue)>,
    /// Attributes the record must not have.
    absent: &'a [&'a str],
    /// Sets `claimed_by`, only if nobody else holds it.
    claim: Option<&'a str>,
}

impl<'a> Change<'a> {
    fn new(from: State, to: State) -> Self {
        Change {
            from,
            or_from: None,
            to,
            set: Vec::new(),
            remove: &[],
            replaced: None,
            unchanged: Vec::new(),
            absent: &[],
            claim: None,
        }
    }

    fn set(mut self, name: &'static str, value: AttributeValue) -> Self {
        self.set.push((name, value));
        self
    }

    fn or_from(mut self, state: State) -> Self {
        self.or_from = Some(state);
        self
    }

    fn claim(mut self, who: Option<&'a str>) -> Self {
        self.claim = who;
        self
    }

    fn replacing(mut self, old_hash: B256) -> Self {
        self.replaced = Some(old_hash);
        self
    }

    fn failure(self, failure: &Failure) -> Self {
        self.set(
            "reason",
            AttributeValue::S(failure.reason.as_str().to_owned()),
        )
        .set("message", AttributeValue::S(failure.message.clone()))
    }

    /// The record names the transaction that decided it, always: an earlier one may have won
    /// over its replacement, and the caller's copy of the record may predate a replacement.
    fn mined(self, mined: Mined) -> Self {
        let change = self.set("tx_hash", hex_value(&mined.tx));
        match mined.block {
            Some(block) => change.set("block_number", AttributeValue::N(block.to_string())),
            None => change,
        }
    }

    fn settled_by_other(self, by_other: bool) -> Self {
        match by_other {
            true => self.set("settled_by_other", AttributeValue::Bool(true)),
            false => self,
        }
    }

    /// The UpdateItem of this change; `open_shard` is removed when the new state is terminal (the
    /// record leaves replay's index).
    fn update(&self, table: &str, id: &PaymentId) -> Result<Update, StoreError> {
        let mut names = HashMap::from([("#state".to_owned(), "state".to_owned())]);
        let mut values = HashMap::from([
            (":from".to_owned(), state_value(self.from)),
            (":to".to_owned(), state_value(self.to)),
            (":now".to_owned(), AttributeValue::N(now_ms().to_string())),
        ]);
        let expression = self.expression(&mut names, &mut values);
        let condition = self.condition(&mut names, &mut values);
        Update::builder()
            .table_name(table)
            .key("id", AttributeValue::S(id.as_str().to_owned()))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(fail("build Update"))
    }

    /// The `SET … REMOVE …` expression, adding the names and values it uses.
    fn expression(
        &self,
        names: &mut HashMap<String, String>,
        values: &mut HashMap<String, AttributeValue>,
    ) -> String {
        let mut set = vec!["#state = :to".to_owned(), "updated_at = :now".to_owned()];
        for (i, (name, value)) in self.set.iter().enumerate() {
            set.push(format!("#f{i} = :f{i}"));
            names.insert(format!("#f{i}"), (*name).to_owned());
            values.insert(format!(":f{i}"), value.clone());
        }
        if let Some(hash) = self.replaced {
            set.push("replaced = list_append(if_not_exists(replaced, :none), :old)".to_owned());
            values.insert(":none".to_owned(), AttributeValue::L(vec![]));
            values.insert(":old".to_owned(), AttributeValue::L(vec![hex_value(&hash)]));
        }
        if let Some(who) = self.claim {
            set.push("claimed_by = :who".to_owned());
            values.insert(":who".to_owned(), AttributeValue::S(who.to_owned()));
        }
        let mut remove: Vec<&str> = self.remove.to_vec();
        if self.to.is_terminal() {
            remove.push("open_shard");
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        expression
    }

    /// The condition: the state it leaves, the claim nobody else holds, the hash or lane the
    /// caller read.
    fn condition(
        &self,
        names: &mut HashMap<String, String>,
        values: &mut HashMap<String, AttributeValue>,
    ) -> String {
        let mut condition = "#state = :from".to_owned();
        if let Some(or_from) = self.or_from {
            condition = "#state IN (:from, :or_from)".to_owned();
            values.insert(":or_from".to_owned(), state_value(or_from));
        }
        if self.claim.is_some() {
            condition.push_str(" AND (attribute_not_exists(claimed_by) OR claimed_by = :who)");
        }
        let unchanged = self
            .replaced
            .map(|hash| ("tx_hash", hex_value(&hash)))
            .into_iter()
            .chain(self.unchanged.iter().cloned());
        for (i, (name, value)) in unchanged.enumerate() {
            condition.push_str(&format!(" AND #unchanged{i} = :unchanged{i}"));
            names.insert(format!("#unchanged{i}"), name.to_owned());
            values.insert(format!(":unchanged{i}"), value);
        }
        for (i, name) in self.absent.iter().enumerate() {
            condition.push_str(&format!(" AND attribute_not_exists(#absent{i})"));
            names.insert(format!("#absent{i}"), (*name).to_owned());
        }
        condition
    }
}

fn state_value(state: State) -> AttributeValue {
    AttributeValue::S(state.as_str().to_owned())
}

/// 64 random bits in hex; the time in nanoseconds if the system has no randomness to give.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes[..4].copy_from_slice(&nanos.to_be_bytes());
    }
    alloy::hex::encode(bytes)
}
