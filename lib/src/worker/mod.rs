//! The settlement worker: the consumer of the settlement queue, and the only code that signs.
//! It shares the record's lifecycle steps with `/settle` and replay ([`crate::lifecycle`]).
//!
//! For each message, one lane at a time (the FIFO message group): simulate with `eth_estimateGas`,
//! take the lane's next nonce, sign with KMS, write the signed transaction ahead into the record
//! together with the lane's nonce step, then broadcast (docs/settlement.md; DESIGN I3, I4, I7).
//! It does not wait for receipts: `/settle` and replay finish `submitted` records.

use std::collections::HashMap;

use alloy::{
    consensus::TxEip1559,
    primitives::{Bytes, TxKind, U256},
};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::join_all;
use tokio::sync::{Mutex, OnceCell};
use tracing::instrument;

use crate::{
    evm::{attribution, hex, Chain},
    facilitator::{unix_now, Facilitator},
    lifecycle::{
        self,
        receipt::{self, reason_from_revert},
    },
    protocol::Reason,
    queue::SettlementMessage,
    signer::LaneSigner,
    store::{PaymentRecord, State, Store},
};

/// A failure worth retrying: a transient one is first tried again in this invocation, a few
/// times with a short backoff; then the message goes back to the queue (and, after the queue's
/// maxReceiveCount, to the dead-letter queue, where replay still finishes the payment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Retry {
    /// An RPC, DynamoDB or KMS call failed, or the payment's state moved under us.
    #[error("{0}")]
    Transient(String),
    /// Fault injection ([`Worker::stop_after`]): the worker stops here as if it had died.
    #[error("stopped after {0:?} (fault injection)")]
    Stopped(Step),
}

fn retry<E: std::fmt::Display>(e: E) -> Retry {
    Retry::Transient(e.to_string())
}

/// How often [`Worker::process`] tries a payment within one invocation before the message goes
/// back to the queue: a throttle or a node's hiccup must not cost the queue's visibility timeout,
/// which holds the whole lane (FIFO).
const ATTEMPTS: u32 = 3;
/// The first wait between two attempts; it doubles, with up to as much again of jitter.
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// A step of signing and sending, after which [`Worker::stop_after`] makes the worker stop as if
/// its process had died there: the fault tests' way to leave exactly what a crash leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// KMS signed; nothing written.
    Signed,
    /// The signed transaction is written ahead; nothing sent.
    WrittenAhead,
    /// Sent to the node; the record still says `signed`.
    Broadcast,
}

/// The worker's state, built once per instance.
#[derive(Debug)]
pub struct Worker {
    facilitator: Facilitator,
    store: Store,
    kms: aws_sdk_kms::Client,
    /// The configured lanes: the only keys this worker will sign with.
    lanes: Vec<String>,
    signers: Mutex<HashMap<String, std::sync::Arc<OnceCell<LaneSigner>>>>,
    stop_after: Option<Step>,
}

impl Worker {
    pub fn new(
        facilitator: Facilitator,
        store: Store,
        kms: aws_sdk_kms::Client,
        lanes: Vec<String>,
    ) -> Self {
        Worker {
            facilitator,
            store,
            kms,
            lanes,
            signers: Mutex::new(HashMap::new()),
            stop_after: None,
        }
    }

    /// Fault injection for tests: every payment stops after `step`, as if the process died there.
    /// Nothing sets it in the deployed functions.
    pub fn stop_after(mut self, step: Step) -> Self {
        self.stop_after = Some(step);
        self
    }

    fn crash_point(&self, step: Step) -> Result<(), Retry> {
        match self.stop_after {
            Some(stop) if stop == step => Err(Retry::Stopped(step)),
            _ => Ok(()),
        }
    }

    /// Builds the worker's clients from the configuration; calls nothing.
    pub fn from_config(config: &crate::config::Config, aws: &aws_config::SdkConfig) -> Self {
        Worker::new(
            Facilitator::new(config, aws),
            crate::settle::store_from(config, aws),
            aws_sdk_kms::Client::new(aws),
            config.lane_keys.clone(),
        )
    }

    /// Handles one SQS batch. A batch may hold several lanes (message groups): they are independent
    /// (each has its own nonces), so they run side by side, each in queue order. A message that must
    /// be retried is reported as a batch item failure, and so is every later message of its lane in
    /// the batch, so that a lane never runs out of order.
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
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
        let failures = join_all(
            lanes
                .into_iter()
                .map(|(lane, messages)| self.handle_lane(lane, messages)),
        )
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

    /// One lane's messages of a batch, in order; returns the ids to report as failures.
    async fn handle_lane(&self, lane: String, messages: Vec<SqsMessage>) -> Vec<String> {
        let mut failures = Vec::new();
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            if !failures.is_empty() {
                failures.push(id);
                continue;
            }
            let outcome = match serde_json::from_str::<SettlementMessage>(
                message.body.as_deref().unwrap_or(""),
            ) {
                Ok(settlement) => self.process(&settlement).await,
                Err(e) => {
                    // A body we cannot read will never become readable: drop it loudly.
                    tracing::error!(error = %e, message_id = %id, "unreadable settlement message dropped");
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, message_id = %id, lane = %lane, "settlement will be retried");
                failures.push(id);
            }
        }
        failures
    }

    /// Moves one payment forward as far as this worker can, or replaces its transaction when the
    /// message asks for that (replay). A transient failure is tried again here, [`ATTEMPTS`] times
    /// in all: each attempt starts from the record as it is, exactly as a redelivery would.
    #[instrument(skip_all, fields(id = %message.id))]
    pub async fn process(&self, message: &SettlementMessage) -> Result<(), Retry> {
        let mut wait = FIRST_BACKOFF;
        for attempt in 1.. {
            match self.process_once(message).await {
                Err(Retry::Transient(e)) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "settlement step failed; trying again");
                    tokio::time::sleep(wait + jitter(wait)).await;
                    wait *= 2;
                }
                outcome => return outcome,
            }
        }
        Ok(())
    }

    async fn process_once(&self, message: &SettlementMessage) -> Result<(), Retry> {
        let id = message.id.as_str();
        let Some(record) = self.store.get(id).await.map_err(retry)? else {
            tracing::warn!(id, "no record for a queued payment; nothing to do");
            return Ok(());
        };
        match (record.state, &message.replace) {
            (State::Queued, _) => self.sign_and_send(record).await,
            (State::Signed | State::Submitted, Some(hash))
                if record.tx_hash.as_deref() == Some(hash.as_str()) =>
            {
                self.replace(record).await
            }
            // Signed but maybe never broadcast (a crash after the write-ahead): the same bytes again.
            (State::Signed, None) => self.broadcast(&record).await,
            _ => Ok(()),
        }
    }

    async fn sign_and_send(&self, record: PaymentRecord) -> Result<(), Retry> {
        let Some(scheme) = self.facilitator.network(&record.network) else {
            return self
                .fail(
                    &record,
                    Reason::InvalidNetwork,
                    &format!("{} is not configured here", record.network),
                )
                .await;
        };
        if unix_now() >= record.valid_before {
            lifecycle::expire_queued(&self.store, &record.id)
                .await
                .map_err(retry)?;
            return Ok(());
        }
        let (Some(calldata), Some(asset)) =
            (hex::bytes(&record.calldata), hex::address(&record.asset))
        else {
            return self
                .fail(
                    &record,
                    Reason::UnexpectedSettleError,
                    "the record's calldata or asset is not hex",
                )
                .await;
        };
        let signer = self.signer(&record.lane).await?;
        let chain = scheme.chain();

        // The simulation, the lane's nonce (table and chain) and the fees do not depend on each
        // other: asked at once, they cost one round trip instead of four.
        let (estimate, table_nonce, chain_nonce, fees) = tokio::join!(
            chain.estimate_gas(signer.address(), asset, calldata.clone()),
            self.store.lane_next_nonce(&record.lane),
            chain.pending_nonce(signer.address()),
            chain.fees(),
        );
        // The simulation before signing: a call that would revert never takes a lane nonce.
        let gas = match estimate.map_err(retry)? {
            Ok(gas) => gas + gas / 5,
            Err(revert) => {
                return match reason_from_revert(&revert) {
                    Reason::NonceAlreadyUsed => {
                        self.used_before_signing(chain, &record, &revert).await
                    }
                    reason => self.fail(&record, reason, &revert).await,
                }
            }
        };
        let nonce = table_nonce.map_err(retry)?.max(chain_nonce.map_err(retry)?);
        let (max_fee_per_gas, max_priority_fee_per_gas) = fees.map_err(retry)?;
        let tx = TxEip1559 {
            chain_id: scheme.network().chain_id(),
            nonce,
            gas_limit: gas,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            to: TxKind::Call(asset),
            value: U256::ZERO,
            access_list: Default::default(),
            input: calldata,
        };
        let signed = signer.sign(tx).await.map_err(retry)?;
        self.crash_point(Step::Signed)?;
        let (raw, hash) = (signed.raw.to_string(), signed.hash.to_string());
        let sender = format!("{:#x}", signer.address());
        if !self
            .store
            .write_ahead(&record.id, &record.lane, &sender, nonce, &raw, &hash)
            .await
            .map_err(retry)?
        {
            let latest = self.store.get(&record.id).await.map_err(retry)?;
            return match latest {
                // The lane's nonce moved under us: take the next one on the retry.
                Some(r) if r.state == State::Queued => Err(Retry::Transient(format!(
                    "lane {} nonce {nonce} was taken",
                    record.lane
                ))),
                // Signed already: by an earlier run, or by this one when the transaction committed
                // but its answer was lost and the SDK's retry then failed the condition. Either way
                // the stored bytes are the ones to send, now, rather than waiting for replay (I3).
                Some(r) if r.state == State::Signed => self.broadcast(&r).await,
                // /settle cancelled it at its deadline, or it was sent and finished meanwhile.
                _ => Ok(()),
            };
        }
        tracing::info!(id = %record.id, lane = %record.lane, nonce, tx = %hash, "signed and written ahead");
        self.crash_point(Step::WrittenAhead)?;
        let written = PaymentRecord {
            raw_tx: Some(raw),
            tx_hash: Some(hash),
            lane_nonce: Some(nonce),
            sender: Some(sender),
            state: State::Signed,
            ..record
        };
        self.broadcast(&written).await
    }

    /// Sends a signed record's bytes and marks it `submitted`.
    async fn broadcast(&self, record: &PaymentRecord) -> Result<(), Retry> {
        let Some(scheme) = self.facilitator.network(&record.network) else {
            return Err(Retry::Transient(format!(
                "{} is not configured here",
                record.network
            )));
        };
        if self.stop_after == Some(Step::Broadcast) {
            lifecycle::send_stored(scheme.chain(), record)
                .await
                .map_err(retry)?;
            return self.crash_point(Step::Broadcast);
        }
        lifecycle::submit(scheme.chain(), &self.store, record)
            .await
            .map_err(retry)?;
        Ok(())
    }

    /// Replaces a `signed` or `submitted` record's transaction with another at the same lane nonce
    /// (DESIGN I3, I6): the same transfer with higher fees while the authorization is valid, or a
    /// zero-value self-transfer once it has expired, so the nonce is used without a payment. The
    /// replacement is written ahead, next to the hashes it supersedes, before it is sent.
    async fn replace(&self, record: PaymentRecord) -> Result<(), Retry> {
        let Some(scheme) = self.facilitator.network(&record.network) else {
            return Err(Retry::Transient(format!(
                "{} is not configured here",
                record.network
            )));
        };
        let chain = scheme.chain();
        let (Some(old_hash), Some(sender), Some(nonce), Some(old)) = (
            record.tx_hash.clone(),
            record.sender.as_deref().and_then(hex::address),
            record.lane_nonce,
            record.raw_tx.as_deref().and_then(decode_eip1559),
        ) else {
            tracing::error!(id = %record.id, "a record to replace lacks its transaction, sender or nonce");
            return Ok(());
        };
        // Mined meanwhile (this transaction or another at its nonce): there is nothing to replace,
        // and the receipt decides the record.
        let mined_nonce = chain.latest_nonce(sender).await.map_err(retry)?;
        if mined_nonce > nonce {
            return Ok(());
        }
        let cancel = unix_now() >= record.valid_before;
        if !cancel && mined_nonce < nonce {
            // Waiting behind an earlier nonce of the lane: higher fees would not get it mined.
            return Ok(());
        }
        let signer = self.signer(&record.lane).await?;
        if signer.address() != sender {
            return Err(Retry::Transient(format!(
                "lane {} now signs as {:#x}, not as the record's sender {sender:#x}",
                record.lane,
                signer.address()
            )));
        }
        let (market_max, market_tip) = chain.fees().await.map_err(retry)?;
        // Nodes take a replacement only when both fee caps rise by at least 10 %.
        let tip = bump(old.max_priority_fee_per_gas).max(market_tip);
        let max_fee = bump(old.max_fee_per_gas).max(market_max).max(tip);
        let tx = if cancel {
            TxEip1559 {
                to: TxKind::Call(sender),
                value: U256::ZERO,
                input: Bytes::new(),
                gas_limit: 21_000,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                ..old
            }
        } else {
            TxEip1559 {
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                ..old
            }
        };
        let signed = signer.sign(tx).await.map_err(retry)?;
        let (raw, hash) = (signed.raw.to_string(), signed.hash.to_string());
        if !self
            .store
            .write_replacement(&record.id, record.state, &old_hash, &raw, &hash)
            .await
            .map_err(retry)?
        {
            return Ok(()); // moved on meanwhile: replaced, finished or re-queued by someone else
        }
        tracing::info!(
            id = %record.id, nonce, replaced = %old_hash, tx = %hash, cancel, max_fee, tip,
            "replacement written ahead"
        );
        let mut replaced = record.replaced.clone();
        replaced.push(old_hash);
        let written = PaymentRecord {
            raw_tx: Some(raw),
            tx_hash: Some(hash),
            replaced,
            ..record
        };
        match written.state {
            State::Signed => {
                lifecycle::submit(chain, &self.store, &written)
                    .await
                    .map_err(retry)?;
            }
            _ => {
                lifecycle::send_stored(chain, &written)
                    .await
                    .map_err(retry)?;
            }
        }
        Ok(())
    }

    async fn fail(
        &self,
        record: &PaymentRecord,
        reason: Reason,
        message: &str,
    ) -> Result<(), Retry> {
        self.store
            .transition(
                &record.id,
                State::Queued,
                State::Failed,
                &receipt::failure(reason, message),
            )
            .await
            .map_err(retry)?;
        Ok(())
    }

    /// A `queued` payment whose authorization the token already has as used: find the transaction
    /// that used it before calling this a failure. Ours (a lagging node hid its receipt from
    /// replay, which had it signed afresh) or somebody else's that paid the payee exactly: the
    /// payment is settled, by that transaction. Another transaction, or none (cancelled on chain):
    /// failed, naming it.
    async fn used_before_signing(
        &self,
        chain: &Chain,
        record: &PaymentRecord,
        revert: &str,
    ) -> Result<(), Retry> {
        let (Some(transfer), Some(nonce)) = (
            record.transfer(),
            record.authorization_nonce().and_then(hex::b256),
        ) else {
            return self
                .fail(
                    record,
                    Reason::UnexpectedSettleError,
                    "the record's payment is not well formed",
                )
                .await;
        };
        let Some(found) = attribution::find_use(chain, &transfer, nonce)
            .await
            .map_err(retry)?
        else {
            return self.fail(record, Reason::NonceAlreadyUsed, revert).await;
        };
        if !transfer.made_by(&found.receipt) {
            let message = format!(
                "the authorization was used by transaction {:#x}, which did not make this payment",
                found.tx
            );
            return self.fail(record, Reason::NonceAlreadyUsed, &message).await;
        }
        let fields = lifecycle::settled_by(
            found.tx,
            found.receipt.block_number,
            record.is_ours(found.tx),
        );
        let moved = self
            .store
            .transition(&record.id, State::Queued, State::Settled, &fields)
            .await
            .map_err(retry)?;
        if moved {
            tracing::info!(id = %record.id, tx = %found.tx, "the authorization was already used by a transaction that paid the payee");
        }
        Ok(())
    }

    /// The lane's signer, connected once per instance (one KMS `GetPublicKey`).
    async fn signer(&self, lane: &str) -> Result<LaneSigner, Retry> {
        // A record names its lane; a worker signs only with the lanes it was configured with, so a
        // changed or drained lane list can never make it sign with a key nobody meant it to use.
        if !self.lanes.iter().any(|l| l == lane) {
            return Err(Retry::Transient(format!(
                "lane {lane} is not one of X402_LANE_KEYS; leaving the payment for reconciliation"
            )));
        }
        let cell = self
            .signers
            .lock()
            .await
            .entry(lane.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| LaneSigner::connect(self.kms.clone(), lane.to_owned()))
            .await
            .cloned()
            .map_err(retry)
    }
}

/// Up to `wait` more, so that retries of many payments do not fall in step.
fn jitter(wait: std::time::Duration) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    std::time::Duration::from_millis(u64::from(nanos) % millis)
}

/// A fee raised by an eighth and one wei: above the 10 % nodes ask of a replacement.
fn bump(fee: u128) -> u128 {
    fee.saturating_add(fee / 8).saturating_add(1)
}

/// The EIP-1559 transaction inside a stored raw transaction (`0x…`, EIP-2718 encoded): what a
/// replacement copies and outbids. `None` for anything else.
fn decode_eip1559(raw: &str) -> Option<alloy::consensus::TxEip1559> {
    use alloy::eips::eip2718::Decodable2718;
    let bytes = crate::evm::hex::bytes(raw)?;
    let envelope = alloy::consensus::TxEnvelope::decode_2718(&mut bytes.as_ref()).ok()?;
    envelope.as_eip1559().map(|signed| signed.tx().clone())
}

#[cfg(test)]
mod tests {
    use alloy::{
        consensus::{SignableTransaction, TxEip1559, TxEnvelope},
        eips::eip2718::Encodable2718,
        primitives::{address, Bytes, Signature, TxKind, U256},
    };

    #[test]
    fn a_stored_transaction_decodes_back_to_what_was_signed() {
        let tx = TxEip1559 {
            chain_id: 84532,
            nonce: 7,
            gas_limit: 90_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000,
            to: TxKind::Call(address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e")),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::from(vec![0xe3, 0xee, 0x16, 0x0e]),
        };
        let signature = Signature::new(U256::from(1), U256::from(2), false);
        let envelope: TxEnvelope = tx.clone().into_signed(signature).into();
        let raw = format!("0x{}", alloy::hex::encode(envelope.encoded_2718()));
        assert_eq!(super::decode_eip1559(&raw), Some(tx));
        assert_eq!(super::decode_eip1559("0x02"), None);
        assert_eq!(super::decode_eip1559("not hex"), None);
    }
}
