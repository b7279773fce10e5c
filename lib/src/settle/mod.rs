//! `POST /settle`: check the payment, record it once, queue it on its lane, and follow its record
//! to an honest answer within the deadline (docs/settlement.md; DESIGN I2, I3, I5).
//!
//! This side never signs: the worker ([`worker`]) does, so only the worker function needs
//! `kms:Sign` (I7).

mod pace;
pub(crate) mod receipt;
pub mod worker;

use std::time::{Duration, Instant};

use alloy::primitives::Address;
use aws_sdk_dynamodb::types::AttributeValue;
use tracing::instrument;

use crate::{
    config::{Config, ConfigError},
    evm::ExactEvm,
    facilitator::{unix_now, Facilitator},
    protocol::{payer_hint, Payment, Reason, Rejection, SettleResponse},
    queue::Queue,
    store::{now_ms, Created, PaymentId, PaymentRecord, State, Store},
};

use pace::{Pace, SigningTime};
pub use receipt::reason_from_revert;

/// Tunables of the settle function.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When `/settle` must answer; under API Gateway's 29 s.
    pub deadline: Duration,
    /// How often a follower re-reads the record and looks for a receipt.
    pub poll: Duration,
}

/// The settle function's state, built once per instance.
#[derive(Debug)]
pub struct Settler {
    facilitator: Facilitator,
    store: Store,
    queue: Queue,
    lanes: Vec<String>,
    timing: Timing,
    /// How long this instance's payments have taken to be signed: when a follower first looks.
    signing: SigningTime,
}

/// The request's view of the answer: what the wire echoes back.
struct Echo {
    network: String,
    payer: Option<String>,
}

impl Echo {
    fn failure(&self, rejection: Rejection, transaction: Option<String>) -> SettleResponse {
        SettleResponse {
            success: false,
            error_reason: Some(rejection.reason),
            error_message: Some(rejection.message),
            payer: self.payer.clone(),
            transaction: transaction.unwrap_or_default(),
            network: self.network.clone(),
        }
    }

    fn success(&self, transaction: String) -> SettleResponse {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: self.payer.clone(),
            transaction,
            network: self.network.clone(),
        }
    }
}

impl Settler {
    pub fn new(
        facilitator: Facilitator,
        store: Store,
        queue: Queue,
        lanes: Vec<String>,
        timing: Timing,
    ) -> Self {
        Settler {
            facilitator,
            store,
            queue,
            lanes,
            timing,
            // Until a payment has been seen signed: a quarter of the poll, as a guess.
            signing: SigningTime::new(timing.poll / 4),
        }
    }

    /// Builds the settle function's clients from the configuration; calls nothing.
    pub fn from_config(config: &Config, aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let queue = Queue::new(
            aws_sdk_sqs::Client::new(aws),
            config.require_settle_queue()?.to_owned(),
        );
        Ok(Settler::new(
            Facilitator::new(config, aws),
            store_from(config, aws),
            queue,
            config.lane_keys.clone(),
            Timing {
                deadline: config.settle_deadline,
                poll: config.settle_poll,
            },
        ))
    }

    pub fn facilitator(&self) -> &Facilitator {
        &self.facilitator
    }

    /// Settles a payment, or says why not, within the deadline.
    #[instrument(skip_all)]
    pub async fn settle(&self, payment: &Payment) -> SettleResponse {
        let started = Instant::now();
        let echo = Echo {
            network: payment.accepted_network.clone(),
            payer: payer_hint(&payment.payload),
        };
        let unexpected = |what: String| Rejection::new(Reason::UnexpectedSettleError, what);
        if self.lanes.is_empty() {
            return echo.failure(
                unexpected("no signer lanes are configured (X402_LANE_KEYS)".into()),
                None,
            );
        }
        let scheme = match self.facilitator.route(payment) {
            Ok(scheme) => scheme,
            Err(rejection) => return echo.failure(rejection, None),
        };
        let checked = match scheme.check(payment, unix_now()) {
            Ok(checked) => checked,
            Err(rejection) => return echo.failure(rejection, None),
        };
        let a = &checked.payment.authorization;
        let id = PaymentId::new(
            scheme.network().caip2(),
            checked.payment.asset,
            a.from,
            a.nonce,
        );

        // Someone settled (or is settling) this authorization already: follow that (I2). Whether a
        // record exists and what the chain says of the transfer are asked at once: one round trip
        // instead of two on the path every new payment takes, for one wasted simulation when a
        // client repeats a /settle (its result is then not used: the record answers).
        let (existing, confirmed) =
            tokio::join!(self.store.get(id.as_str()), scheme.confirm(&checked));
        match existing {
            Ok(Some(record)) => return self.follow(scheme, record, &echo, started).await,
            Ok(None) => {}
            Err(e) => return echo.failure(unexpected(e.to_string()), None),
        }
        // A payment the chain would refuse never gets a record, a queue message or a lane nonce.
        if let Err(rejection) = confirmed {
            let rejection = match rejection.reason {
                Reason::UnexpectedVerifyError => unexpected(rejection.message),
                _ => rejection,
            };
            return echo.failure(rejection, None);
        }

        let now = now_ms();
        let lane = lane_for(&id, &self.lanes).to_owned();
        let valid_before = u64::try_from(a.valid_before).unwrap_or(u64::MAX);
        let record = PaymentRecord {
            id: id.to_string(),
            state: State::Queued,
            network: scheme.network().caip2().to_owned(),
            asset: hex_address(checked.payment.asset),
            payer: hex_address(a.from),
            pay_to: hex_address(a.to),
            value: a.value.to_string(),
            valid_before,
            calldata: checked.transfer_calldata().to_string(),
            lane: lane.clone(),
            lane_nonce: None,
            raw_tx: None,
            tx_hash: None,
            sender: None,
            replaced: vec![],
            reason: None,
            message: None,
            created_at: now,
            updated_at: now,
            open_shard: Some("open".to_owned()),
            expires_at: valid_before.saturating_add(crate::store::RETENTION_SECS),
        };
        match self.store.create(&record).await {
            Ok(Created::New) => {}
            Ok(Created::Exists(existing)) => {
                return self.follow(scheme, *existing, &echo, started).await
            }
            Err(e) => return echo.failure(unexpected(e.to_string()), None),
        }
        if let Err(e) = self.queue.enqueue(id.as_str(), &lane).await {
            // Not queued, so nothing will ever sign it: cancel it so it cannot settle later unseen.
            let cancelled = self
                .cancel(id.as_str(), &format!("could not queue the payment: {e}"))
                .await;
            if cancelled {
                return echo.failure(
                    unexpected(format!("could not queue the payment: {e}")),
                    None,
                );
            }
        }
        self.follow(scheme, record, &echo, started).await
    }

    /// Reads the record until it is final or the deadline passes, finishing `signed` and
    /// `submitted` records from their receipts on the way. When it looks again: [`pace`].
    async fn follow(
        &self,
        scheme: &ExactEvm,
        mut record: PaymentRecord,
        echo: &Echo,
        started: Instant,
    ) -> SettleResponse {
        let deadline = started + self.timing.deadline;
        let mut pace = Pace::new(self.timing.poll);
        let mut last_state = record.state;
        let mut state_since = Instant::now();
        let mut read_at = Instant::now();
        let mut first_round = true;
        loop {
            if record.state != last_state {
                if last_state == State::Queued
                    && matches!(record.state, State::Signed | State::Submitted)
                {
                    // The worker stamped `updated_at` when it signed (or sent, if we missed
                    // `signed`): how long this lane took, for the next follower's first read.
                    self.signing.observe(
                        Duration::from_millis(record.updated_at.saturating_sub(record.created_at)),
                        self.timing.deadline,
                    );
                }
                last_state = record.state;
                state_since = Instant::now();
                pace.entered();
            }
            match record.state {
                State::Settled => return echo.success(record.tx_hash.unwrap_or_default()),
                State::Failed | State::Expired | State::Cancelled => {
                    let reason = record
                        .reason
                        .as_deref()
                        .and_then(Reason::from_wire)
                        .unwrap_or(Reason::UnexpectedSettleError);
                    let message = record
                        .message
                        .unwrap_or_else(|| format!("the payment is {}", record.state.as_str()));
                    return echo.failure(Rejection::new(reason, message), record.tx_hash);
                }
                // `signed` already names its transaction (written ahead of the broadcast): look
                // for its receipt too, so the answer does not wait for the worker's move to
                // `submitted`, one DynamoDB write after the broadcast.
                State::Signed | State::Submitted => {
                    match receipt::finish(scheme.chain(), &self.store, &record).await {
                        Ok(Some(finished)) => {
                            record = finished;
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, id = %record.id, "receipt lookup failed; will retry")
                        }
                    }
                }
                State::Queued => {}
            }
            if Instant::now() >= deadline {
                if record.state == State::Queued {
                    if self
                        .cancel(
                            &record.id,
                            "nothing was broadcast before the settle deadline",
                        )
                        .await
                    {
                        return echo.failure(
                            Rejection::new(
                                Reason::UnexpectedSettleError,
                                "nothing was broadcast before the settle deadline; the payment was cancelled and will not be settled",
                            ),
                            None,
                        );
                    }
                } else {
                    return echo.failure(
                        Rejection::new(
                            Reason::SettlementPending,
                            "broadcast but not mined yet; call /settle again with the same payment for the final result",
                        ),
                        record.tx_hash,
                    );
                }
            }
            let wait = if first_round && record.state == State::Queued {
                let age = Duration::from_millis(now_ms().saturating_sub(record.created_at));
                pace.first_queued_wait(self.signing.get(), age)
            } else {
                pace.next_wait(record.state, state_since.elapsed())
            };
            first_round = false;
            tokio::time::sleep(
                wait.min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
            )
            .await;
            // Once broadcast, what the follower waits for is a receipt, which it looks for on every
            // round above; re-reading the record each round as well would double the reads of every
            // waiting /settle for nothing. The record could change only by a replacement (replay
            // asks for one only after X402_REPLAY_MIN_AGE_MS, which the config holds above the
            // settle deadline) or by another follower finishing it from the same receipt. An
            // occasional re-read still catches a replacement where the grace is 0 (tests).
            if matches!(record.state, State::Signed | State::Submitted)
                && read_at.elapsed() < self.timing.poll * 4
            {
                continue;
            }
            read_at = Instant::now();
            match self.store.get(&record.id).await {
                Ok(Some(latest)) => record = latest,
                Ok(None) => {
                    return echo.failure(
                        Rejection::new(
                            Reason::UnexpectedSettleError,
                            "the payment record vanished",
                        ),
                        record.tx_hash,
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, id = %record.id, "re-reading the payment failed; will retry")
                }
            }
        }
    }

    /// `queued → cancelled`; false if the record had moved on (the worker took it).
    async fn cancel(&self, id: &str, why: &str) -> bool {
        let fields = [
            (
                "reason",
                AttributeValue::S(Reason::UnexpectedSettleError.as_str().to_owned()),
            ),
            ("message", AttributeValue::S(why.to_owned())),
        ];
        match self
            .store
            .transition(id, State::Queued, State::Cancelled, &fields)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, id, "cancelling a queued payment failed");
                false
            }
        }
    }
}

/// The payments and lanes tables, as configured.
pub fn store_from(config: &Config, aws: &aws_config::SdkConfig) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(aws),
        config.payments_table.clone(),
        config.lanes_table.clone(),
    )
}

/// The lane a payment goes to: fixed by its id, so a retry lands on the same lane.
pub fn lane_for<'a>(id: &PaymentId, lanes: &'a [String]) -> &'a str {
    lane_for_id(id.as_str(), lanes)
}

/// [`lane_for`] from the id as stored.
pub fn lane_for_id<'a>(id: &str, lanes: &'a [String]) -> &'a str {
    let hash = alloy::primitives::keccak256(id.as_bytes());
    let index =
        u64::from_be_bytes(hash[..8].try_into().unwrap_or_default()) % lanes.len().max(1) as u64;
    lanes
        .get(index as usize)
        .map(String::as_str)
        .unwrap_or_default()
}

fn hex_address(address: Address) -> String {
    format!("{address:#x}")
}

/// The EIP-1559 transaction inside a stored raw transaction (`0x…`, EIP-2718 encoded): what a
/// replacement copies and outbids. `None` for anything else.
pub(crate) fn decode_eip1559(raw: &str) -> Option<alloy::consensus::TxEip1559> {
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
