//! A settlement queue of a test's own, delivered to a worker in this process one batch at a time,
//! so that a test decides when the event source mapping runs and what the worker is.

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName as A};
use facilitator::worker::Worker;
use serde_json::json;

use super::{payment::random_nonce, process::finish_detached, stack::aws};

/// A FIFO queue of the test's own, with a short visibility timeout and `max_receives` receives
/// before its dead-letter queue, so retries and the redrive happen in seconds (the stack's queue
/// waits 60 s, five times). Deleted when dropped.
pub struct OwnQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
}

impl OwnQueue {
    pub async fn create(name: &str, max_receives: u32) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&aws().await);
        let suffix = format!("{name}-{}", random_nonce().to_string()[2..10].to_owned());
        let dlq_url = Self::create_fifo(&sqs, &format!("x402-test-dlq-{suffix}.fifo"), &[]).await;
        let dlq_arn = Self::arn_of(&sqs, &dlq_url).await;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives});
        let url = Self::create_fifo(
            &sqs,
            &format!("x402-test-{suffix}.fifo"),
            &[
                (A::VisibilityTimeout, "1".to_owned()),
                (A::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await;
        let arn = Self::arn_of(&sqs, &url).await;
        OwnQueue {
            sqs,
            url,
            arn,
            dlq_url,
        }
    }

    async fn create_fifo(
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        attributes: &[(A, String)],
    ) -> String {
        let mut create = sqs
            .create_queue()
            .queue_name(name)
            .attributes(A::FifoQueue, "true");
        for (name, value) in attributes {
            create = create.attributes(name.clone(), value);
        }
        create.send().await.unwrap().queue_url.unwrap()
    }

    async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
        sqs.get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&A::QueueArn]
            .clone()
    }

    pub fn queue(&self) -> facilitator::queue::Queue {
        facilitator::queue::Queue::new(self.sqs.clone(), self.url.clone())
    }

    pub async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
    }

    /// How many messages the queue holds, visible or not (moto counts exactly).
    pub async fn depth(&self) -> usize {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|a| {
            attributes
                .get(a)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    /// One turn of the event source mapping, as Lambda runs it: receive a batch, hand it to the
    /// worker, delete what succeeded; what failed comes back after its visibility timeout. The
    /// event names no source queue, so the worker cannot put anything back or change a
    /// visibility: the plain redelivery path. Returns how many messages were handed over and how
    /// many failed.
    pub async fn deliver_once(&self, worker: &Worker) -> (usize, usize) {
        self.deliver(worker, false).await
    }

    /// [`OwnQueue::deliver_once`] with the event Lambda really sends: the queue's ARN, the
    /// receive count and the message attributes, so the worker can put a failed message back at
    /// the end of its lane and change visibilities.
    pub async fn deliver_as_lambda(&self, worker: &Worker) -> (usize, usize) {
        self.deliver(worker, true).await
    }

    async fn deliver(&self, worker: &Worker, as_lambda: bool) -> (usize, usize) {
        let batch = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if batch.is_empty() {
            return (0, 0);
        }
        let mut event = SqsEvent::default();
        event.records = batch
            .iter()
            .map(|m| self.lambda_record(m, as_lambda))
            .collect();
        let failed: Vec<String> = worker
            .handle_batch(event)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        for m in &batch {
            if !failed.contains(m.message_id.as_ref().unwrap()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        (batch.len(), failed.len())
    }

    /// The record of an SQS event for a received message; without the source queue and the
    /// counts unless `as_lambda`.
    fn lambda_record(&self, m: &aws_sdk_sqs::types::Message, as_lambda: bool) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = m.message_id.clone();
        message.receipt_handle = m.receipt_handle.clone();
        message.body = m.body.clone();
        let system = m.attributes.clone().unwrap_or_default();
        let group = system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned()
            .unwrap_or_default();
        message.attributes.insert("MessageGroupId".into(), group);
        if as_lambda {
            message.event_source_arn = Some(self.arn.clone());
            if let Some(count) = system.get(&MessageSystemAttributeName::ApproximateReceiveCount) {
                message
                    .attributes
                    .insert("ApproximateReceiveCount".into(), count.clone());
            }
            for (name, value) in m.message_attributes.clone().unwrap_or_default() {
                let mut attribute = aws_lambda_events::sqs::SqsMessageAttribute::default();
                attribute.string_value = value.string_value;
                attribute.data_type = Some(value.data_type);
                message.message_attributes.insert(name, attribute);
            }
        }
        message
    }
}

impl Drop for OwnQueue {
    fn drop(&mut self) {
        let (sqs, urls) = (self.sqs.clone(), [self.url.clone(), self.dlq_url.clone()]);
        finish_detached(async move {
            for url in urls {
                let _ = sqs.delete_queue().queue_url(url).send().await;
            }
        });
    }
}
