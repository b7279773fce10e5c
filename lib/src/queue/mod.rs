//! The settlement queue: an SQS FIFO queue with one message group per signer lane, so that Lambda's
//! event source mapping hands each lane's messages to one worker at a time, in order (I4), and
//! deduplication by payment id, so that a retried `/settle` never queues a payment twice.

use serde::{Deserialize, Serialize};
use tracing::instrument;

/// What a queue message carries: the payment's id (everything else is in its record), and, when
/// replay asks for a replacement, the hash of the transaction to replace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementMessage {
    pub id: String,
    /// Replace this transaction at the same lane nonce: with higher fees, or with a cancelling
    /// self-transfer once the authorization has expired. Only if the record still holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
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
        // SQS deduplication ids are at most 128 characters of [A-Za-z0-9!-~]; ours are longer, so
        // the id's hash stands in for it.
        self.send(
            id,
            lane,
            alloy::primitives::keccak256(id.as_bytes()).to_string(),
        )
        .await
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
        };
        let dedup =
            alloy::primitives::keccak256(format!("{id}#replace#{tx_hash}").as_bytes()).to_string();
        self.send_message(&message, lane, dedup).await
    }

    async fn send(&self, id: &str, lane: &str, dedup: String) -> Result<(), QueueError> {
        let message = SettlementMessage {
            id: id.to_owned(),
            replace: None,
        };
        self.send_message(&message, lane, dedup).await
    }

    async fn send_message(
        &self,
        message: &SettlementMessage,
        lane: &str,
        dedup: String,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(e.to_string()))?;
        let send = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(lane)
            .message_deduplication_id(dedup)
            .send();
        Box::pin(send)
            .await
            .map(|_| ())
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
    }
}
