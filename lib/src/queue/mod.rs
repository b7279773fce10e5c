//! The settlement queue: an SQS FIFO queue with one message group per signer lane, so that Lambda's
//! event source mapping hands each lane's messages to one worker at a time, in order (I4), and
//! deduplication by payment id, so that a retried `/settle` never queues a payment twice.

use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::store::PaymentRecord;

/// What a queue message carries: the payment's id, and, when replay asks for a replacement, the
/// hash of the transaction to replace. A sweep of a retired lane's gas (the lanes tool) is
/// `sweep#<lane>#<to>` instead of a payment id.
///
/// The record is the truth; `/settle` also sends the record as it created it, so that the worker
/// need not read it back before signing a new payment. The worker uses that copy only on a first
/// delivery, and the write-ahead holds only if the record still is `queued` with the copy's lane,
/// asset and calldata (docs/settlement.md, "The worker").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementMessage {
    pub id: String,
    /// Replace this transaction at the same lane nonce: with higher fees, or with a cancelling
    /// self-transfer once the authorization has expired. Only if the record still holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// The record as `/settle` created it (`queued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Box<PaymentRecord>>,
    /// `/settle`'s simulation of the transfer, run from the record's lane: the worker signs with
    /// its gas instead of simulating again while it is fresh (`X402_SIMULATION_REUSE_MS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<Simulated>,
}

/// A gas estimate of a payment's transfer, as its lane would send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Simulated {
    /// What `eth_estimateGas` answered.
    pub gas: u64,
    /// When, in unix milliseconds.
    pub at_ms: u64,
}

/// The queue could not take the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQS SendMessage failed: {0}")]
pub struct QueueError(pub String);

/// The settlement queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Queue { client, url }
    }

    /// Queues a payment on its lane.
    #[instrument(skip_all, fields(id, lane), err(level = "warn"))]
    pub async fn enqueue(&self, id: &str, lane: &str) -> Result<(), QueueError> {
        self.send(id, lane, first_dedup(id)).await
    }

    /// Queues a payment `/settle` has just created, with the record as created
    /// ([`SettlementMessage::created`]), on its lane.
    #[instrument(skip_all, fields(id = %record.id, lane = %record.lane), err(level = "warn"))]
    pub async fn enqueue_created(
        &self,
        record: &PaymentRecord,
        simulated: Option<Simulated>,
    ) -> Result<(), QueueError> {
        let message = SettlementMessage {
            id: record.id.as_str().to_owned(),
            replace: None,
            created: Some(Box::new(record.clone())),
            simulated,
        };
        let dedup = first_dedup(&message.id);
        self.send_message(&message, &record.lane, dedup, None).await
    }

    /// Queues a payment on its lane again (replay). FIFO deduplication would drop a second message
    /// with the first one's id for five minutes, so `attempt` (e.g. the replay run) makes a new one;
    /// the worker ignores a message whose record has moved on, so a duplicate is harmless.
    #[instrument(skip_all, fields(id, lane), err(level = "warn"))]
    pub async fn requeue(&self, id: &str, lane: &str, attempt: &str) -> Result<(), QueueError> {
        let dedup = alloy::primitives::keccak256(format!("{id}#{attempt}").as_bytes()).to_string();
        self.send(id, lane, dedup).await
    }

    /// Asks the lane's worker to replace a stuck or expired transaction (replay). Deduplicated on
    /// the transaction it replaces, so two replay runs cannot ask twice for the same replacement.
    #[instrument(skip_all, fields(id, lane, tx_hash), err(level = "warn"))]
    pub async fn request_replacement(
        &self,
        id: &str,
        lane: &str,
        tx_hash: &str,
    ) -> Result<(), QueueError> {
        let message = SettlementMessage {
            id: id.to_owned(),
            replace: Some(tx_hash.to_owned()),
            created: None,
            simulated: None,
        };
        let dedup =
            alloy::primitives::keccak256(format!("{id}#replace#{tx_hash}").as_bytes()).to_string();
        self.send_message(&message, lane, dedup, None).await
    }

    /// Asks the lane's worker to move a retired lane's gas to `to` (the lanes tool). The worker
    /// refuses unless the lane is retired and `to` is one of its `X402_SWEEP_ADDRESSES`.
    #[instrument(skip_all, fields(lane, %to), err(level = "warn"))]
    pub async fn request_sweep(
        &self,
        lane: &str,
        to: alloy::primitives::Address,
    ) -> Result<(), QueueError> {
        let id = format!("sweep#{lane}#{to:#x}");
        let dedup =
            alloy::primitives::keccak256(format!("{id}#{}", crate::clock::now_ms()).as_bytes())
                .to_string();
        self.send(&id, lane, dedup).await
    }

    /// Puts a message the worker could not finish back at the end of its lane, as attempt
    /// `attempt` (the [`ATTEMPT_ATTRIBUTE`] message attribute), so that the lane's other payments
    /// go on meanwhile. Deduplicated on the attempt: a worker that retries the send cannot queue
    /// the same attempt twice.
    #[instrument(skip_all, fields(id = %message.id, lane, attempt), err(level = "warn"))]
    pub async fn retry(
        &self,
        message: &SettlementMessage,
        lane: &str,
        attempt: u32,
    ) -> Result<(), QueueError> {
        let replace = message.replace.as_deref().unwrap_or("");
        let dedup = alloy::primitives::keccak256(
            format!("{}#retry#{replace}#{attempt}", message.id).as_bytes(),
        )
        .to_string();
        // Without the created record: by a later attempt the record may have moved on.
        let message = SettlementMessage {
            created: None,
            simulated: None,
            ..message.clone()
        };
        self.send_message(&message, lane, dedup, Some(attempt))
            .await
    }

    /// Makes a received message visible again after `delay` instead of the queue's visibility
    /// timeout, which on a FIFO queue would hold the message's whole lane that long.
    #[instrument(skip_all, err(level = "warn"))]
    pub async fn set_visibility(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let change = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
            .send();
        Box::pin(change).await.map(|_| ()).map_err(sqs_error)
    }

    /// The queue an SQS event came from, by its ARN (`arn:aws:sqs:<region>:<account>:<name>`):
    /// one `GetQueueUrl`.
    pub async fn from_arn(client: aws_sdk_sqs::Client, arn: &str) -> Result<Self, QueueError> {
        let mut parts = arn.rsplitn(3, ':');
        let (Some(name), Some(account)) = (parts.next(), parts.next()) else {
            return Err(QueueError(format!("{arn:?} is not an SQS queue ARN")));
        };
        let lookup = client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send();
        let url = Box::pin(lookup)
            .await
            .map_err(sqs_error)?
            .queue_url
            .ok_or_else(|| QueueError(format!("GetQueueUrl returned no URL for {arn}")))?;
        Ok(Queue::new(client, url))
    }

    async fn send(&self, id: &str, lane: &str, dedup: String) -> Result<(), QueueError> {
        let message = SettlementMessage {
            id: id.to_owned(),
            replace: None,
            created: None,
            simulated: None,
        };
        self.send_message(&message, lane, dedup, None).await
    }

    /// Sends `message` on its lane; with `attempt`, as that attempt ([`ATTEMPT_ATTRIBUTE`]).
    async fn send_message(
        &self,
        message: &SettlementMessage,
        lane: &str,
        dedup: String,
        attempt: Option<u32>,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(e.to_string()))?;
        let attempt = attempt
            .map(|n| {
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(n.to_string())
                    .build()
                    .map_err(|e| QueueError(e.to_string()))
            })
            .transpose()?;
        let send = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(lane)
            .message_deduplication_id(dedup)
            .set_message_attributes(attempt.map(|a| [(ATTEMPT_ATTRIBUTE.to_owned(), a)].into()))
            .send();
        Box::pin(send).await.map(|_| ()).map_err(sqs_error)
    }
}

/// An SQS call's error with its whole context (the SDK's `Display` alone says "service error").
fn sqs_error(e: impl std::error::Error) -> QueueError {
    QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

/// The message attribute that counts a payment's attempts across the worker's retries (a
/// message put back by [`Queue::retry`] is a new message, whose SQS receive count starts again).
pub const ATTEMPT_ATTRIBUTE: &str = "x402-attempt";

/// A payment's first message's deduplication id. SQS takes at most 128 characters of
/// [A-Za-z0-9!-~]; payment ids are longer, so the id's hash stands in for it.
fn first_dedup(id: &str) -> String {
    alloy::primitives::keccak256(id.as_bytes()).to_string()
}
