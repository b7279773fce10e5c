//! One SQS batch of the settlement queue, within the invocation's time.
//!
//! Lanes (message groups) run side by side, each in queue order. A failure never holds a lane for
//! the queue's visibility timeout (minutes, during which FIFO order would hold every payment behind
//! it, and `/settle` would cancel them at its deadline): a transient error is retried in-process
//! ([`Worker::process_within`]); if it outlasts that, the message is put at the end of its lane as
//! its next attempt and the lane goes on; after the last attempt the payment is given up with a
//! reason. Messages the invocation has no time left for are handed back at once
//! (docs/settlement.md, "When the worker fails").

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::join_all;

use super::{
    decide::{self, AfterFailure},
    run::Ran,
    WorkError, Worker,
};
use crate::{
    protocol::Reason,
    queue::{Queue, SettlementMessage, ATTEMPT_ATTRIBUTE},
    store::{Failure, PaymentId},
};

/// The time a batch may take when the caller gives no deadline (tests, tools): a Lambda
/// invocation's, less its margin.
const DEFAULT_BATCH_TIME: Duration = Duration::from_secs(25);

/// What became of one message.
enum Handled {
    /// Finished, dropped, put back as a new message, or given up: delete it.
    Done,
    /// Report it as a batch item failure; with `Some`, it is received again after that long
    /// instead of after the queue's visibility timeout.
    Back(Option<Duration>),
}

impl Worker {
    /// [`Worker::handle_batch_until`] with [`DEFAULT_BATCH_TIME`] from now.
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_batch_until(event, Instant::now() + DEFAULT_BATCH_TIME)
            .await
    }

    /// Handles one Lambda invocation's batch by its deadline (unix milliseconds, from the
    /// invocation's context); with [`DEFAULT_BATCH_TIME`] if that has passed already, which only a
    /// local emulator sends.
    pub async fn handle_invocation(
        &self,
        event: SqsEvent,
        deadline_unix_ms: u64,
    ) -> SqsBatchResponse {
        match crate::clock::deadline_in(deadline_unix_ms) {
            Some(deadline) => self.handle_batch_until(event, deadline).await,
            None => {
                tracing::warn!(deadline_unix_ms, "the invocation's deadline has passed at its start; assuming {DEFAULT_BATCH_TIME:?}");
                self.handle_batch(event).await
            }
        }
    }

    /// Handles one SQS batch by `deadline` (the Lambda invocation's). A message reported as a
    /// failure is reported with every later message of its lane in the batch, so that a lane never
    /// runs out of order.
    pub async fn handle_batch_until(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        // Another instance may have served these lanes since this one's last batch.
        self.nonces.clear();
        let source = match event.records.first() {
            Some(first) => self.source(first).await,
            None => None,
        };
        let mut lanes: Vec<(String, Vec<SqsMessage>)> = Vec::new();
        for message in event.records {
            let lane = message
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default();
            match lanes.iter_mut().find(|(name, _)| *name == lane) {
                Some((_, messages)) => messages.push(message),
                None => lanes.push((lane, vec![message])),
            }
        }
        let failures =
            join_all(lanes.into_iter().map(|(lane, messages)| {
                self.handle_lane(lane, messages, deadline, source.as_ref())
            }))
            .await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures
            .into_iter()
            .flatten()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        response
    }

    /// One lane's messages of a batch, in order; returns the ids to report as failures, after
    /// making each visible again as [`Handled::Back`] says (the ones after a failure at once: the
    /// failed one still holds the lane, and FIFO order brings them after it).
    async fn handle_lane(
        &self,
        lane: String,
        messages: Vec<SqsMessage>,
        deadline: Instant,
        source: Option<&Queue>,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let mut visible_again = Vec::new();
        self.nonces.expect(&lane, messages.len());
        let mut ran = self.run_first(&lane, &messages, deadline).await;
        for (index, message) in messages.into_iter().enumerate() {
            let id = message.message_id.clone().unwrap_or_default();
            let left = deadline.saturating_duration_since(Instant::now());
            let ran = ran.remove(&index);
            let handled = if let Some(Ran::Finished(outcome)) = ran {
                match outcome {
                    Ok(()) => Handled::Done,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = %id, %lane, "settlement will be retried");
                        Handled::Back(None)
                    }
                }
            } else if !failures.is_empty() {
                Handled::Back(Some(Duration::ZERO))
            } else if !decide::may_start(left) {
                tracing::warn!(message_id = %id, %lane, ?left, "too little time left to start a settlement; handed back");
                Handled::Back(Some(Duration::ZERO))
            } else {
                let from_record = matches!(ran, Some(Ran::FromRecord));
                self.handle_message(&message, &lane, left, source, from_record)
                    .await
            };
            self.nonces.handled_one(&lane);
            if let Handled::Back(delay) = handled {
                failures.push(id);
                if let (Some(delay), Some(receipt)) = (delay, message.receipt_handle) {
                    visible_again.push((receipt, delay));
                }
            }
        }
        if let Some(queue) = source {
            for (receipt, delay) in visible_again {
                // On failure the message comes back after the queue's visibility timeout: later.
                let _ = queue.set_visibility(&receipt, delay).await;
            }
        }
        failures
    }

    /// The lane's new payments signed together as a run ([`Worker::run`]), when runs are on
    /// (`X402_LANE_RUNS`), the batch brings the lane more than one and there is time to start;
    /// what became of each, by its index.
    async fn run_first(
        &self,
        lane: &str,
        messages: &[SqsMessage],
        deadline: Instant,
    ) -> HashMap<usize, Ran> {
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.lane_runs || messages.len() < 2 || !decide::may_start(left) {
            return HashMap::new();
        }
        let fresh: Vec<(usize, SettlementMessage)> = messages
            .iter()
            .enumerate()
            .filter(|(_, message)| attempt_of(message) == 1)
            .filter_map(|(index, message)| {
                let body = message.body.as_deref().unwrap_or("");
                serde_json::from_str(body)
                    .ok()
                    .map(|settlement| (index, settlement))
            })
            .collect();
        if fresh.len() < 2 {
            return HashMap::new();
        }
        self.run(lane, fresh).await.into_iter().collect()
    }

    /// One message, with in-process retries; `from_record`: a run wrote its payment ahead, so the
    /// copy of the record the message carries is out of date.
    async fn handle_message(
        &self,
        message: &SqsMessage,
        lane: &str,
        left: Duration,
        source: Option<&Queue>,
        from_record: bool,
    ) -> Handled {
        let id = message.message_id.as_deref().unwrap_or_default();
        let settlement = match serde_json::from_str::<SettlementMessage>(
            message.body.as_deref().unwrap_or(""),
        ) {
            Ok(settlement) => settlement,
            Err(e) => {
                // A body we cannot read will never become readable: drop it loudly.
                tracing::error!(error = %e, message_id = %id, "unreadable settlement message dropped");
                return Handled::Done;
            }
        };
        let attempt = attempt_of(message);
        let settlement = match attempt {
            1 if !from_record => settlement,
            // A redelivery, or a payment a run wrote ahead: the earlier delivery may have moved
            // the record on, so the copy the message carries is not used.
            _ => SettlementMessage {
                created: None,
                ..settlement
            },
        };
        match self
            .process_within(&settlement, decide::retry_budget(left))
            .await
        {
            Ok(()) => Handled::Done,
            Err(e) if !e.retry_in_process() => {
                // A configuration problem (a drained lane, an unknown network): the same message
                // fails the same way until replay or an operator changes the record or the lanes.
                tracing::warn!(error = %e, message_id = %id, %lane, "settlement will be retried");
                Handled::Back(None)
            }
            Err(e) => {
                self.after_failure(&settlement, lane, attempt, &e, source)
                    .await
            }
        }
    }

    /// A message whose in-process retries ran out: put it at the end of its lane as the next
    /// attempt, or give the payment up after the last one.
    async fn after_failure(
        &self,
        settlement: &SettlementMessage,
        lane: &str,
        attempt: u32,
        error: &WorkError,
        source: Option<&Queue>,
    ) -> Handled {
        let back = Handled::Back(Some(decide::visibility_backoff(attempt)));
        match decide::after_failure(attempt, self.max_attempts) {
            AfterFailure::GiveUp => match self.give_up(settlement, attempt, error).await {
                Ok(()) => Handled::Done,
                Err(e) => {
                    tracing::error!(error = %e, id = %settlement.id, "giving up on a payment failed; the message comes back");
                    back
                }
            },
            AfterFailure::Retry { attempt: next } => {
                let Some(queue) = source else {
                    tracing::warn!(error = %error, id = %settlement.id, attempt, "settlement failed; the message comes back");
                    return back;
                };
                match queue.retry(settlement, lane, next).await {
                    Ok(()) => {
                        tracing::warn!(error = %error, id = %settlement.id, attempt, "settlement failed; put at the end of its lane");
                        Handled::Done
                    }
                    Err(e) => {
                        tracing::warn!(error = %error, queue_error = %e, id = %settlement.id, attempt, "settlement failed and could not be put back; the message comes back");
                        back
                    }
                }
            }
        }
    }

    /// Ends a payment after its last failed attempt: a `queued` one is cancelled with the reason
    /// (nothing was signed for it, so nothing can settle it later); one that has moved on was
    /// signed, and replay finishes it from the chain, so only the message is dropped.
    async fn give_up(
        &self,
        settlement: &SettlementMessage,
        attempts: u32,
        error: &WorkError,
    ) -> Result<(), WorkError> {
        let Some(id) = PaymentId::parse(&settlement.id) else {
            return Ok(());
        };
        let failure = Failure::new(
            Reason::UnexpectedSettleError,
            format!("the settlement failed {attempts} times and was given up; last error: {error}"),
        );
        if self.store.cancel(&id, &failure).await? {
            tracing::error!(%id, attempts, error = %error, "gave up on a payment: cancelled");
        } else {
            tracing::error!(%id, attempts, error = %error, "gave up on a settlement message; the payment had been signed, replay finishes it");
        }
        Ok(())
    }

    /// The queue a batch came from (its `eventSourceARN`), looked up once per instance; `None`
    /// when the event names none (a hand-made event) or the lookup failed, in which case failed
    /// messages come back after the queue's visibility timeout.
    async fn source(&self, message: &SqsMessage) -> Option<Queue> {
        let arn = message.event_source_arn.as_deref()?;
        let mut sources = self.sources.lock().await;
        if let Some(queue) = sources.get(arn) {
            return Some(queue.clone());
        }
        match Queue::from_arn(self.sqs.clone(), arn).await {
            Ok(queue) => {
                sources.insert(arn.to_owned(), queue.clone());
                Some(queue)
            }
            Err(e) => {
                tracing::warn!(error = %e, %arn, "the settlement queue's URL is unknown; failed messages wait out its visibility timeout");
                None
            }
        }
    }
}

/// Which attempt a received message is ([`decide::attempt_of`]).
fn attempt_of(message: &SqsMessage) -> u32 {
    let attribute = message
        .message_attributes
        .get(ATTEMPT_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .and_then(|v| v.parse().ok());
    let receive_count = message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok());
    decide::attempt_of(attribute, receive_count)
}
