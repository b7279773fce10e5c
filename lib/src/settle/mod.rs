//! `POST /settle`: check the payment, record it once, sign and send it here when its lane is free
//! or else queue it on its lane, and follow its record to an honest answer within the deadline
//! (docs/settlement.md; DESIGN I2, I3, I5).
//!
//! Signing here is the worker's own code ([`Worker::lease_here`], [`Worker::sign_here`]), behind
//! the lane's lease, so the settle and worker functions are the two that need `kms:Sign` (I7).

mod pace;
mod routing;
mod upto;

use std::time::{Duration, Instant};

use alloy::primitives::{Bytes, B256};
use http::StatusCode;
use tracing::instrument;

use crate::{
    clock::{now_ms, unix_now},
    config::{Config, ConfigError},
    evm::{
        attribution,
        permit2::{self, Permit2Checked},
        Checked, ExactEvm,
    },
    facilitator::Facilitator,
    lifecycle::receipt,
    protocol::{
        payer_hint,
        payment_identifier::{self, PaymentIdentifier},
        Payment, Reason, Rejection, SettleResponse,
    },
    queue::{Queue, Simulated},
    store::{
        Binding, Claimant, Created, Failure, Mined, NewPayment, PaymentId, PaymentRecord, State,
        Store,
    },
    worker::{Here, Leasing, Worker, Written},
};

use pace::{Pace, ReceiptTime, RunningTime};
pub use routing::{lane_for, routable, Routes};

/// What cancelling a queued payment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cancel {
    Done,
    /// The record was no longer `queued`: something else moved it first.
    Moved,
    /// The write could not be made (DynamoDB failing): the payment is still queued as far as
    /// anyone knows.
    Failed(String),
}

/// The `settlement_pending` message when a payment could not be cancelled at the deadline: the
/// worker (or, later, replay) may still sign it, so neither success nor failure would be true. A
/// `/settle` of the same payment later answers from its record.
fn cancel_failed(problem: &str) -> String {
    format!(
        "nothing was broadcast before the settle deadline, and the payment could not be cancelled \
         ({problem}): it may still settle; ask again with the same payment for its outcome"
    )
}

/// How many times `/settle` asks the chain about a payment when the node fails to answer.
const CONFIRM_TRIES: u32 = 3;

/// What `/settle` answers when no configured lane is active.
const NO_ACTIVE_LANE: &str = "no signer lane is active: each new lane waits until its address has \
    gas (replay activates it), and a draining or retired one takes no new payments; fund a lane \
    (GET /supported lists them) or activate one with infra/lanes.py";

/// What `/settle` answers when the lane an `upto` payment names is not active.
const NO_UPTO_LANE: &str = "the lane whose address this upto payment's witness names (its \
    facilitator) is not active: only that lane may settle it; activate it (infra/lanes.py)";

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
    facilitator: std::sync::Arc<Facilitator>,
    store: Store,
    queue: Queue,
    /// The lanes new payments may go to (the configured ones that are active).
    routes: Routes,
    timing: Timing,
    /// How long this instance's payments have taken to be signed: when a follower first looks.
    signing: RunningTime,
    /// How long after the write-ahead this instance's receipts have been found: when a follower
    /// first looks for one.
    receipts: ReceiptTime,
    /// Signs a new payment here when its lane is free (`X402_SETTLE_SIGNS`); `None`: every
    /// payment goes through the queue.
    signs_here: Option<Worker>,
}

/// The request's view of the answer: what the wire echoes back.
struct Echo {
    network: String,
    payer: Option<String>,
    /// An `upto` payment's charge, which its success carries.
    amount: Option<String>,
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
            amount: None,
        }
    }

    /// An `upto` payment's echo carries its charge, for its success to say.
    fn charging(self, terms: &Terms) -> Self {
        let amount = terms.is_upto().then(|| terms.transfer().value.to_string());
        Echo { amount, ..self }
    }

    fn success(&self, transaction: String) -> SettleResponse {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: self.payer.clone(),
            transaction,
            network: self.network.clone(),
            amount: self.amount.clone(),
        }
    }
}

/// `/settle`'s answer and the HTTP status to send it with: 200 for every answer about the payment;
/// 400 and 409 for a `payment-identifier` that is missing, malformed or bound to another payment.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleAnswer {
    pub status: StatusCode,
    pub response: SettleResponse,
}

impl From<SettleResponse> for SettleAnswer {
    fn from(response: SettleResponse) -> Self {
        SettleAnswer {
            status: StatusCode::OK,
            response,
        }
    }
}

/// A payment that passed the checks but the time window, by its transfer method. One lives per
/// request, on the stack of `/settle`: the two variants' sizes differ by a few hundred bytes,
/// which boxing either would not make worth a heap allocation.
#[allow(clippy::large_enum_variant)]
enum Terms {
    Eip3009(Checked),
    /// A Permit2 payment, settled through the exact Permit2 proxy, or the upto one for `upto`.
    Permit2(Permit2Checked),
}

impl Terms {
    /// Whether this is an `upto` payment (whose charge the answer carries).
    fn is_upto(&self) -> bool {
        matches!(self, Terms::Permit2(c) if c.payment.is_upto())
    }

    /// What the payment moves.
    fn transfer(&self) -> crate::evm::Transfer {
        match self {
            Terms::Eip3009(c) => c.transfer(),
            Terms::Permit2(c) => c.transfer(),
        }
    }

    /// `validBefore`, or the permit's deadline: when the payment can no longer settle.
    fn valid_before(&self) -> u64 {
        let until = match self {
            Terms::Eip3009(c) => c.payment.authorization.valid_before,
            Terms::Permit2(c) => c.payment.authorization.deadline,
        };
        u64::try_from(until).unwrap_or(u64::MAX)
    }

    /// The contract the settlement calls when it is not the token.
    fn target(&self) -> Option<alloy::primitives::Address> {
        match self {
            Terms::Eip3009(c) => c.settle_target(),
            Terms::Permit2(c) => Some(c.payment.proxy()),
        }
    }

    fn check_window(&self, scheme: &ExactEvm, now: u64) -> Result<(), Rejection> {
        match self {
            Terms::Eip3009(c) => scheme.check_window(c, now),
            Terms::Permit2(c) => scheme.check_permit2_window(c, now),
        }
    }

    /// The reason a used nonce is answered with.
    fn used_reason(&self) -> Reason {
        match self {
            Terms::Eip3009(_) => Reason::NonceAlreadyUsed,
            Terms::Permit2(_) => Reason::Permit2InvalidNonce,
        }
    }
}

/// One `/settle` request, checked: everything the steps after the checks share.
struct Request<'a> {
    scheme: &'a ExactEvm,
    terms: Terms,
    /// The settlement's call (`transferWithAuthorization`, or the proxy's `settle`), encoded once:
    /// what a record stores and is compared by.
    calldata: Bytes,
    id: PaymentId,
    digest: B256,
    /// Who this request claims a success as (DESIGN I2).
    claimant: Claimant,
    echo: Echo,
    started: Instant,
}

impl Request<'_> {
    fn new_payment<'b>(&'b self, lane: &'b str) -> NewPayment<'b> {
        let transfer = self.terms.transfer();
        NewPayment {
            id: &self.id,
            network: self.scheme.network().caip2(),
            asset: transfer.asset,
            payer: transfer.from,
            pay_to: transfer.to,
            value: transfer.value,
            valid_before: self.terms.valid_before(),
            calldata: &self.calldata,
            target: self.terms.target(),
            digest: self.digest,
            lane,
        }
    }

    fn unexpected(&self, what: impl Into<String>) -> SettleResponse {
        self.echo
            .failure(Rejection::new(Reason::UnexpectedSettleError, what), None)
    }

    /// Another caller was told `success` for this payment already, or another payment holds the
    /// nonce: the reference's answer to a used authorization, with nothing named.
    fn nonce_used(&self, message: impl Into<String>) -> SettleResponse {
        self.echo
            .failure(Rejection::new(self.terms.used_reason(), message), None)
    }
}

impl Settler {
    pub fn new(
        facilitator: impl Into<std::sync::Arc<Facilitator>>,
        store: Store,
        queue: Queue,
        lanes: Vec<String>,
        timing: Timing,
    ) -> Self {
        Settler {
            routes: Routes::new(store.clone(), lanes, crate::config::DEFAULT_LANE_STATE_TTL),
            facilitator: facilitator.into(),
            store,
            queue,
            timing,
            // Until a payment has been seen signed: a quarter of the poll, as a guess.
            signing: RunningTime::new(timing.poll / 4),
            // Until a receipt has been found: at once, as the first guess that costs no latency.
            receipts: ReceiptTime::default(),
            signs_here: None,
        }
    }

    /// Signs new payments here, with `worker`'s lanes and clients, when their lane's lease is free
    /// (docs/settlement.md, "Signing in /settle").
    pub fn signing_here(mut self, worker: Worker) -> Self {
        self.signs_here = Some(worker);
        self
    }

    /// Builds the settle function's clients from the configuration; calls nothing.
    pub fn from_config(config: &Config, aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let settler =
            Self::from_config_unrouted(config, aws)?.with_lane_state_ttl(config.lane_state_ttl);
        Ok(match config.settle_signs {
            true => {
                let (facilitator, store) = (settler.facilitator.clone(), settler.store.clone());
                settler.signing_here(Worker::sharing(facilitator, store, config, aws))
            }
            false => settler,
        })
    }

    /// How long this instance trusts what it read of the lanes' states.
    pub fn with_lane_state_ttl(mut self, ttl: Duration) -> Self {
        self.routes = Routes::new(self.store.clone(), self.routes.configured().to_vec(), ttl);
        self
    }

    fn from_config_unrouted(
        config: &Config,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        let queue = Queue::new(
            aws_sdk_sqs::Client::new(aws),
            config.require_settle_queue()?.to_owned(),
        );
        Ok(Settler::new(
            Facilitator::new(config, aws),
            Store::from_config(config, aws),
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

    /// Settles a payment, or says why not, within the deadline (docs/settlement.md, `/settle`).
    #[instrument(skip_all)]
    pub async fn settle(&self, payment: &Payment) -> SettleAnswer {
        let started = Instant::now();
        let echo = Echo {
            network: payment.accepted_network.clone(),
            payer: payer_hint(&payment.payload),
            amount: None,
        };
        if self.routes.configured().is_empty() {
            return echo
                .failure(
                    Rejection::new(
                        Reason::UnexpectedSettleError,
                        "no signer lanes are configured (X402_LANE_KEYS)",
                    ),
                    None,
                )
                .into();
        }
        let identifier = match payment_identifier::parse(payment) {
            Ok(identifier) => identifier,
            Err(e) => {
                return SettleAnswer {
                    status: StatusCode::BAD_REQUEST,
                    response: echo.failure(e.0, None),
                }
            }
        };
        let scheme = match self.facilitator.route(payment) {
            Ok(scheme) => scheme,
            Err(rejection) => return echo.failure(rejection, None).into(),
        };
        // Every check but the time window: a payment with a record is answered from it whatever
        // the clock says; the window applies only to a payment seen for the first time.
        let checked = terms_of(scheme, payment);
        let (id, digest, calldata, terms) = match checked {
            Ok(checked) => checked,
            Err(rejection) => return echo.failure(rejection, None).into(),
        };
        let request = Request {
            id,
            digest,
            calldata,
            claimant: match &identifier {
                Some(identifier) => Claimant::Identifier(identifier.as_str().to_owned()),
                None => Claimant::new_request(),
            },
            scheme,
            echo: echo.charging(&terms),
            terms,
            started,
        };
        if let Some(identifier) = &identifier {
            if let Some(conflict) = self.bind(&request, identifier).await {
                return conflict;
            }
        }
        self.settle_checked(&request).await.into()
    }

    /// Binds the request's `payment-identifier` to its payment; the answer to send instead when
    /// that is not possible.
    async fn bind(
        &self,
        request: &Request<'_>,
        identifier: &PaymentIdentifier,
    ) -> Option<SettleAnswer> {
        // Scoped to the merchant (network and payTo), so that one merchant's identifiers never
        // collide with another's.
        let key = format!(
            "pid#{}#{:#x}#{}",
            request.scheme.network().caip2(),
            request.terms.transfer().to,
            identifier.as_str()
        );
        let expires_at = request
            .terms
            .valid_before()
            .saturating_add(crate::store::RETENTION_SECS);
        match self
            .store
            .bind_identifier(&key, &request.id, request.digest, expires_at)
            .await
        {
            Ok(Binding::Same) => None,
            Ok(Binding::Conflict) => Some(SettleAnswer {
                status: StatusCode::CONFLICT,
                response: request.echo.failure(
                    Rejection::new(
                        Reason::PaymentIdentifierConflict,
                        format!(
                            "payment identifier {} was already used with a different payment",
                            identifier.as_str()
                        ),
                    ),
                    None,
                ),
            }),
            Err(e) => Some(request.unexpected(e.to_string()).into()),
        }
    }

    async fn settle_checked(&self, r: &Request<'_>) -> SettleResponse {
        // The path every new payment takes asks the chain, then creates the record: creating it
        // is also how a repeated /settle finds the record it already has, so the record is read
        // first only when the chain or the clock refuses the payment (a settled payment's
        // authorization is used on chain, and its window may have passed).
        // The lane first: the simulation runs from it, as the worker will send the transfer, and
        // the worker signs with the gas it found instead of simulating again.
        if r.terms.is_upto() && r.terms.transfer().value.is_zero() {
            return self.settle_zero(r).await;
        }
        let lane = self.lane_of(r).await;
        let sender = match &lane {
            Ok(Some(lane)) => self.sender(r.scheme, lane).await,
            _ => None,
        };
        let confirmed = self.confirm(r, sender).await;
        // Which refused it: the clock's answer comes first, as the window is checked first.
        let (rejection, by_chain) = match (r.terms.check_window(r.scheme, unix_now()), confirmed) {
            (Ok(()), Ok(gas)) => {
                let simulated = gas.map(|gas| Simulated {
                    gas,
                    at_ms: now_ms(),
                });
                return self.record_and_follow(r, lane, simulated).await;
            }
            (Err(late), _) => (late, false),
            (Ok(()), Err(refused)) => (refused, true),
        };
        match self.store.get(&r.id).await {
            Ok(Some(record)) => return self.answer_from(r, record).await,
            Ok(None) => {}
            Err(e) => return r.unexpected(e.to_string()),
        }
        match rejection.reason {
            Reason::UnexpectedVerifyError if by_chain => r.unexpected(rejection.message),
            Reason::NonceAlreadyUsed if by_chain => self.used_elsewhere(r, rejection).await,
            // A payment the chain or the clock refuses never gets a record, a queue message or
            // a lane nonce.
            _ => r.echo.failure(rejection, None),
        }
    }

    /// The lane a new payment goes to: one of the active lanes, fixed by its id; for an `upto`
    /// payment, the active lane whose address its witness names (the only caller the upto proxy
    /// accepts). `None`: no active lane can take it.
    async fn lane_of(&self, r: &Request<'_>) -> Result<Option<String>, crate::store::StoreError> {
        let active = self.routes.active().await?;
        match &r.terms {
            Terms::Permit2(c) if c.payment.is_upto() => {
                let named = c.payment.authorization.facilitator.unwrap_or_default();
                Ok(self.lane_named(named, &active).await)
            }
            _ => Ok((!active.is_empty()).then(|| lane_for(&r.id, &active).to_owned())),
        }
    }

    /// A request that found a record: answered from it only if it is the same payment. Another
    /// authorization under the same (payer, nonce), or the same `upto` permit charged another
    /// amount, gets the used-nonce failure and changes nothing.
    async fn answer_from(&self, r: &Request<'_>, record: PaymentRecord) -> SettleResponse {
        if r.terms.is_upto() && record.value != r.terms.transfer().value {
            return r.nonce_used(format!(
                "a payment with this Permit2 nonce was already submitted here charging {}, not {}; a permit settles once",
                record.value,
                r.terms.transfer().value
            ));
        }
        if !record.is_payment(r.digest, &r.calldata) {
            return r.nonce_used(
                "another payment with this authorization nonce was already submitted here; this one cannot be settled",
            );
        }
        self.follow(r, record).await
    }

    /// The chain has the authorization used and we have no record of it: find the transaction
    /// that used it. If it paid exactly this payment's payee and value, the payee was paid (by a
    /// front-runner): record that and claim it. Otherwise the used-nonce failure, naming it.
    async fn used_elsewhere(&self, r: &Request<'_>, used: Rejection) -> SettleResponse {
        // A Permit2 nonce leaves no log of its use to attribute (docs/settlement.md, "Permit2").
        let Terms::Eip3009(checked) = &r.terms else {
            return r.echo.failure(used, None);
        };
        let transfer = checked.transfer();
        let nonce = checked.payment.authorization.nonce;
        let found = match attribution::find_use(r.scheme.chain(), &transfer, nonce).await {
            Ok(found) => found,
            Err(e) => {
                return r.unexpected(format!(
                    "the authorization is used on chain, and finding the transaction that used it failed: {e}"
                ))
            }
        };
        let Some(found) = found else {
            return r.echo.failure(used, None);
        };
        if !transfer.made_by(&found.receipt) {
            return r.nonce_used(format!(
                "the authorization was used by transaction {:#x}, which did not pay {} of {} to {}",
                found.tx, transfer.value, transfer.asset, transfer.to
            ));
        }
        // Only a label here (nothing will be signed): any configured lane serves.
        let lane = lane_for(&r.id, self.routes.configured()).to_owned();
        let mined = Mined {
            tx: found.tx,
            block: found.receipt.block_number,
        };
        let record =
            PaymentRecord::settled_by_other(&r.new_payment(&lane), mined, &r.claimant, now_ms());
        match self.create(r, &record).await {
            Ok(Created::New) => {
                tracing::info!(id = %r.id, tx = %found.tx, "settled by another sender's transaction");
                r.echo.success(format!("{:#x}", found.tx))
            }
            Ok(Created::Exists(existing)) => self.answer_from(r, *existing).await,
            Err(answer) => answer,
        }
    }

    /// The chain's word on the payment ([`Facilitator::confirm_as`]). A node that fails to answer
    /// (a rate limit, a timeout) is not a verdict: asked again, up to [`CONFIRM_TRIES`] times
    /// within the deadline, before the answer says it could not be checked.
    async fn confirm(
        &self,
        r: &Request<'_>,
        sender: Option<(alloy::primitives::Address, (u128, u128))>,
    ) -> Result<Option<u64>, Rejection> {
        let deadline = r.started + self.timing.deadline;
        let mut wait = Duration::from_millis(20);
        let mut tries = 1;
        loop {
            let confirmed = match &r.terms {
                Terms::Eip3009(checked) => {
                    self.facilitator.confirm_as(r.scheme, checked, sender).await
                }
                Terms::Permit2(checked) => {
                    self.facilitator
                        .confirm_permit2_as(r.scheme, checked, sender)
                        .await
                }
            };
            match confirmed {
                Err(rejection)
                    if rejection.reason == Reason::UnexpectedVerifyError
                        && tries < CONFIRM_TRIES
                        && Instant::now() + wait < deadline =>
                {
                    tracing::warn!(id = %r.id, tries, error = %rejection.message, "the simulation got no answer; asking again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    tries += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// The lane's address and the fees its transaction will offer, for the simulation; `None`
    /// (a plain `eth_call`, and the worker simulates again) when either is unknown now.
    async fn sender(
        &self,
        scheme: &ExactEvm,
        lane: &str,
    ) -> Option<(alloy::primitives::Address, (u128, u128))> {
        let (address, fees) = tokio::join!(
            self.facilitator.lanes().address_of(lane),
            scheme.chain().offered_fees()
        );
        match (address, fees) {
            (Ok(Some(address)), Ok(fees)) => Some((address, fees)),
            (address, fees) => {
                tracing::warn!(
                    lane,
                    ?address,
                    ?fees,
                    "cannot simulate from the lane; the worker simulates again"
                );
                None
            }
        }
    }

    /// Records a new payment `queued` on `lane` (the one chosen for it), signs and sends it here
    /// when the lane's lease was free or else queues it with `/settle`'s simulation, and follows it.
    async fn record_and_follow(
        &self,
        r: &Request<'_>,
        lane: Result<Option<String>, crate::store::StoreError>,
        simulated: Option<Simulated>,
    ) -> SettleResponse {
        let lane = match lane {
            Ok(Some(lane)) => lane,
            // No lane takes new payments, but a payment recorded earlier is still answered.
            Ok(None) => {
                return match self.store.get(&r.id).await {
                    Ok(Some(record)) => self.answer_from(r, record).await,
                    Ok(None) if r.terms.is_upto() => r.unexpected(NO_UPTO_LANE),
                    Ok(None) => r.unexpected(NO_ACTIVE_LANE),
                    Err(e) => r.unexpected(e.to_string()),
                }
            }
            Err(e) => return r.unexpected(e.to_string()),
        };
        let record = PaymentRecord::queued(&r.new_payment(&lane), now_ms());
        let leasing = match self.create_and_lease(r, &record, simulated).await {
            Ok(leasing) => leasing,
            Err(answer) => return answer,
        };
        let here = match &self.signs_here {
            Some(worker) => {
                let deadline = r.started + self.timing.deadline;
                worker.sign_here(&record, leasing, deadline).await
            }
            None => Here::Queue,
        };
        let queued = match here {
            Here::Sent(written) => return self.follow_sent(r, *written).await,
            Here::Stopped(step) => {
                return r.unexpected(format!("stopped after {step:?} (fault injection)"))
            }
            Here::Queue => self.queue.enqueue_created(&record, simulated).await,
            Here::FromRecord => self.queue.enqueue(r.id.as_str(), &record.lane).await,
        };
        if let Err(e) = queued {
            // Not queued, so nothing will ever sign it: cancel it so it cannot settle later unseen
            // (a record signed here meanwhile is not `queued`, and is not cancelled).
            let why = format!("could not queue the payment: {e}");
            if self.cancel(&r.id, &why).await == Cancel::Done {
                return r.unexpected(why);
            }
        }
        self.follow(r, record).await
    }

    /// Creates a new payment's record and, beside it, asks for its lane's lease when `/settle`
    /// signs ([`Worker::lease_here`]): asked after the create, the lease would cost the path one
    /// more DynamoDB round trip. Nothing is signed before the create says the payment is new. `Err`
    /// is the answer when it is not (the record found, or the deadline's answer); a lease taken
    /// for it is given back first.
    async fn create_and_lease(
        &self,
        r: &Request<'_>,
        record: &PaymentRecord,
        simulated: Option<Simulated>,
    ) -> Result<Leasing<'_>, SettleResponse> {
        let (created, leasing) = tokio::join!(self.create(r, record), async {
            match &self.signs_here {
                Some(worker) => worker.lease_here(record, simulated).await,
                None => Leasing::Queue,
            }
        });
        let existing = match created {
            Ok(Created::New) => return Ok(leasing),
            Ok(Created::Exists(existing)) => Ok(existing),
            Err(answer) => Err(answer),
        };
        // Before following the record found: the lane's signers need not wait for that.
        if let Some(worker) = &self.signs_here {
            worker.give_back(record, leasing).await;
        }
        Err(match existing {
            Ok(existing) => self.answer_from(r, *existing).await,
            Err(answer) => answer,
        })
    }

    /// Creates the record, or finds the one that is there. A write whose outcome is unknown (an
    /// error after the request may have been applied) is read back, and tried again while nothing
    /// is there; it is never answered as a failure while a record may exist. `Err` is the answer
    /// to send when the deadline came first.
    async fn create(
        &self,
        r: &Request<'_>,
        record: &PaymentRecord,
    ) -> Result<Created, SettleResponse> {
        let deadline = r.started + self.timing.deadline;
        let mut wait = Duration::from_millis(20);
        loop {
            match self.store.create(record).await {
                Ok(created) => return Ok(created),
                Err(e) => {
                    tracing::warn!(error = %e, id = %r.id, "creating the payment record failed; reading it back")
                }
            }
            match self.store.get(&r.id).await {
                // Ours (an earlier attempt's write landed) or a concurrent request's: either way
                // the record answers, and a `queued` one is queued again (SQS deduplicates).
                Ok(Some(found)) => {
                    if found.state == State::Queued && found.is_payment(r.digest, &r.calldata) {
                        if let Err(e) = self.queue.enqueue(r.id.as_str(), &found.lane).await {
                            tracing::warn!(error = %e, id = %r.id, "queueing a read-back record failed; replay will queue it");
                        }
                    }
                    return Ok(Created::Exists(Box::new(found)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, id = %r.id, "reading back the payment record failed")
                }
            }
            if Instant::now() + wait >= deadline {
                return Err(r.echo.failure(
                    Rejection::new(
                        Reason::SettlementPending,
                        "the payment could not be recorded or read back before the deadline; call /settle again with the same payment",
                    ),
                    None,
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.timing.poll);
        }
    }

    /// A `settled` record's answer for this request: success if the request holds (or wins) the
    /// claim, the used-nonce failure if an earlier request was told (DESIGN I2). `None` when the
    /// claim could not be written: the caller tries again until its deadline.
    async fn claimed_answer(
        &self,
        r: &Request<'_>,
        record: &PaymentRecord,
    ) -> Option<SettleResponse> {
        let tx = tx_text(record.tx_hash).unwrap_or_default();
        let mine = record.claimed_by.as_deref() == Some(r.claimant.stored().as_str());
        let won = match mine {
            true => true,
            false => match self.store.claim(&record.id, &r.claimant).await {
                Ok(won) => won,
                Err(e) => {
                    tracing::warn!(error = %e, id = %record.id, "claiming a settled payment failed; will retry");
                    return None;
                }
            },
        };
        Some(match won {
            true => r.echo.success(tx),
            false => r.nonce_used(format!(
                "this payment was settled (transaction {tx}) and its success was answered to an earlier request; \
                 send the same payment-identifier extension to see a success again"
            )),
        })
    }

    /// Reads the record until it is final or the deadline passes, finishing `signed` and
    /// `submitted` records from their receipts on the way, and claiming a settled one's success.
    /// What each look does: [`answer_for`]; when it looks again: [`pace`].
    async fn follow(&self, r: &Request<'_>, record: PaymentRecord) -> SettleResponse {
        let round = Round::new(&record, self.timing.poll);
        self.follow_from(r, record, round).await
    }

    /// [`Settler::follow`] for a payment signed and sent here: its transaction is known without
    /// reading the record, and its receipt is timed from the write-ahead as a worker's would be.
    /// A receipt that came with the send's answer finishes the record at once, with no lookup.
    async fn follow_sent(&self, r: &Request<'_>, written: Written) -> SettleResponse {
        let Written {
            mut record,
            receipt,
        } = written;
        if let Some(receipt) = receipt {
            let finished = receipt::finish_mined(
                r.scheme.chain(),
                &self.store,
                &record,
                *receipt,
                Some(&r.claimant),
            )
            .await;
            match finished {
                Ok(finished) => record = finished,
                Err(e) => {
                    tracing::warn!(error = %e, id = %record.id, "finishing the payment from its receipt failed; looking again");
                }
            }
        }
        let round = Round::sent(&record, self.timing.poll);
        self.follow_from(r, record, round).await
    }

    async fn follow_from(
        &self,
        r: &Request<'_>,
        mut record: PaymentRecord,
        mut round: Round,
    ) -> SettleResponse {
        let deadline = r.started + self.timing.deadline;
        loop {
            if let Some(signing) = round.observe(&record) {
                self.signing.observe(signing, self.timing.deadline);
            }
            let early = round.before_first_receipt(&record, self.receipts.get());
            if !early.is_zero() {
                tokio::time::sleep(early.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
            let look_started = now_ms();
            let looked = self.look(r, &mut record).await;
            if let Some((found, missed)) = round.looked(&looked, &record, look_started) {
                self.receipts.learn(found, missed);
            }
            match looked {
                Looked::Answer(answer) => return answer,
                Looked::Changed => continue,
                Looked::Unchanged => {}
            }
            if Instant::now() >= deadline {
                if let Some(answer) = self.at_deadline(r, &record).await {
                    return answer;
                }
            }
            let wait = round.wait(&record, self.signing.get());
            tokio::time::sleep(
                wait.min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
            )
            .await;
            if !round.reread(&record) {
                continue;
            }
            match self.store.get(&record.id).await {
                Ok(Some(latest)) => record = latest,
                Ok(None) => return r.unexpected("the payment record vanished"),
                Err(e) => {
                    tracing::warn!(error = %e, id = %record.id, "re-reading the payment failed; will retry")
                }
            }
        }
    }

    /// One look at the record, as [`answer_for`] says.
    async fn look(&self, r: &Request<'_>, record: &mut PaymentRecord) -> Looked {
        match answer_for(record) {
            Look::Claim => match self.claimed_answer(r, record).await {
                Some(answer) => Looked::Answer(answer),
                None => Looked::Unchanged,
            },
            Look::Final => Looked::Answer(
                r.echo
                    .failure(rejection_of(record), tx_text(record.tx_hash)),
            ),
            Look::FindReceipt => {
                match receipt::finish(r.scheme.chain(), &self.store, record, Some(&r.claimant))
                    .await
                {
                    Ok(Some(finished)) => {
                        *record = finished;
                        Looked::Changed
                    }
                    Ok(None) => Looked::Unchanged,
                    Err(e) => {
                        tracing::warn!(error = %e, id = %record.id, "receipt lookup failed; will retry");
                        Looked::Unchanged
                    }
                }
            }
            Look::Wait => Looked::Unchanged,
        }
    }

    /// The answer at the deadline, as [`at_deadline`] says; `None` when a `queued` record could not
    /// be cancelled because the worker took it meanwhile (the follower looks again).
    async fn at_deadline(&self, r: &Request<'_>, record: &PaymentRecord) -> Option<SettleResponse> {
        match at_deadline(record.state) {
            AtDeadline::Cancel => {
                let why = "nothing was broadcast before the settle deadline";
                match self.cancel(&record.id, why).await {
                    Cancel::Done => Some(r.unexpected("nothing was broadcast before the settle deadline; the payment was cancelled and will not be settled")),
                    // The record moved on (the worker signed it): the next look answers from it.
                    Cancel::Moved => None,
                    // Not cancelled, so it may still be signed and settle: only "pending" is true.
                    Cancel::Failed(problem) => Some(r.echo.failure(
                        Rejection::new(Reason::SettlementPending, cancel_failed(&problem)),
                        None,
                    )),
                }
            }
            AtDeadline::Pending(message) => Some(r.echo.failure(
                Rejection::new(Reason::SettlementPending, message),
                tx_text(record.tx_hash),
            )),
        }
    }

    /// `queued → cancelled`; false if the record had moved on (the worker took it).
    async fn cancel(&self, id: &PaymentId, why: &str) -> Cancel {
        let failure = Failure::new(Reason::UnexpectedSettleError, why);
        match self.store.cancel(id, &failure).await {
            Ok(true) => Cancel::Done,
            Ok(false) => Cancel::Moved,
            Err(e) => {
                tracing::error!(error = %e, %id, "cancelling a queued payment failed");
                Cancel::Failed(e.to_string())
            }
        }
    }
}

/// The checks but the time window, by the payload's transfer method, and what the record is
/// built from: the id, the digest and the settlement's calldata. A Permit2 payload (told apart by
/// its shape, as verify does) is settled through the exact Permit2 proxy, by the same record,
/// queue, lanes and replay; an `upto` one (Permit2 only) through the upto proxy, under the same id
/// (Permit2 has one nonce space per owner, whichever proxy spends it).
fn terms_of(
    scheme: &ExactEvm,
    payment: &Payment,
) -> Result<(PaymentId, B256, Bytes, Terms), Rejection> {
    let network = scheme.network().caip2();
    let upto = payment.requirements.scheme == crate::facilitator::UPTO;
    if upto || permit2::is_permit2(&payment.payload) {
        let c = scheme.check_permit2_terms(payment)?;
        let a = &c.payment.authorization;
        return Ok((
            PaymentId::permit2(network, c.payment.asset, a.from, a.nonce),
            c.digest(network),
            c.settle_calldata(),
            Terms::Permit2(c),
        ));
    }
    let c = scheme.check_terms(payment)?;
    let a = &c.payment.authorization;
    Ok((
        PaymentId::new(network, c.payment.asset, a.from, a.nonce),
        c.digest(network),
        c.settle_calldata(),
        Terms::Eip3009(c),
    ))
}

/// What one look at the record does (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// `settled`: the answer is the success if this request holds or wins the claim.
    Claim,
    /// `failed`, `expired` or `cancelled`: the failure the record keeps, with its transaction.
    Final,
    /// `signed` or `submitted`: look for the receipt. `signed` already names its transaction
    /// (written ahead of the broadcast), so the answer does not wait for the worker's move to
    /// `submitted`, one DynamoDB write after the broadcast.
    FindReceipt,
    /// `queued`: the worker has not signed it yet.
    Wait,
}

pub fn answer_for(record: &PaymentRecord) -> Look {
    match record.state {
        State::Settled => Look::Claim,
        State::Failed | State::Expired | State::Cancelled => Look::Final,
        State::Signed | State::Submitted => Look::FindReceipt,
        State::Queued => Look::Wait,
    }
}

/// What the deadline does to a payment not answered yet (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDeadline {
    /// Nothing was signed: cancel it, so it can never settle unseen.
    Cancel,
    /// `settlement_pending`, with this message and the record's transaction.
    Pending(&'static str),
}

pub fn at_deadline(state: State) -> AtDeadline {
    match state {
        State::Queued => AtDeadline::Cancel,
        State::Settled => AtDeadline::Pending(
            "the payment is settled but this answer could not be recorded; call /settle again with the same payment",
        ),
        _ => AtDeadline::Pending(
            "broadcast but not mined yet; call /settle again with the same payment for the final result",
        ),
    }
}

/// What a look came to.
enum Looked {
    Answer(SettleResponse),
    /// The record moved on (finished from its receipt): look at it again at once.
    Changed,
    Unchanged,
}

/// A follower's bookkeeping between looks: the state it last saw and since when, when it last read
/// the record, and its [`Pace`].
struct Round {
    poll: Duration,
    pace: Pace,
    last_state: State,
    state_since: Instant,
    read_at: Instant,
    first: bool,
    /// The payment's receipt lookups, once this follower saw it leave `queued`.
    receipt: Option<ReceiptLookups>,
}

/// A follower's receipt lookups for the transaction it saw written ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReceiptLookups {
    /// The write-ahead's time (the record's `updated_at` then), unix ms.
    written_ahead: u64,
    /// The last lookup that found nothing, unix ms; `None` until one has (a lookup that finds the
    /// receipt ends the lookups, so `None` also says none has been made).
    missed: Option<u64>,
}

impl Round {
    fn new(record: &PaymentRecord, poll: Duration) -> Self {
        Round {
            poll,
            pace: Pace::new(poll),
            last_state: record.state,
            state_since: Instant::now(),
            read_at: Instant::now(),
            first: true,
            receipt: None,
        }
    }

    /// A round for a record this instance wrote ahead and sent itself: its first receipt lookup
    /// waits, as for a write-ahead seen happen ([`Round::observe`]).
    fn sent(record: &PaymentRecord, poll: Duration) -> Self {
        Round {
            receipt: Some(ReceiptLookups {
                written_ahead: record.updated_at,
                missed: None,
            }),
            ..Round::new(record, poll)
        }
    }

    /// Notes a change of state; returns how long the worker took to sign, when the record was
    /// just seen leaving `queued` for `signed` (or `submitted`, if `signed` was missed): the worker
    /// stamped `updated_at` then, for the next follower's first read.
    fn observe(&mut self, record: &PaymentRecord) -> Option<Duration> {
        if record.state == self.last_state {
            return None;
        }
        let signed = self.last_state == State::Queued
            && matches!(record.state, State::Signed | State::Submitted);
        self.last_state = record.state;
        self.state_since = Instant::now();
        self.pace.entered();
        // Timed from the write-ahead only when this follower saw it happen; a `submitted` record's
        // `updated_at` is replay's send, not the worker's.
        self.receipt = (signed && record.state == State::Signed).then_some(ReceiptLookups {
            written_ahead: record.updated_at,
            missed: None,
        });
        signed.then(|| Duration::from_millis(record.updated_at.saturating_sub(record.created_at)))
    }

    /// The wait before this follower's first receipt lookup, as [`Pace::first_receipt_wait`]
    /// says from `receipts` (how long after the write-ahead receipts have typically been found);
    /// zero for every other look.
    fn before_first_receipt(&self, record: &PaymentRecord, receipts: Duration) -> Duration {
        match self.receipt {
            Some(lookups) if lookups.missed.is_none() && record.state == State::Signed => self
                .pace
                .first_receipt_wait(receipts, lookups.written_ahead, now_ms()),
            _ => Duration::ZERO,
        }
    }

    /// Notes what a look at a `signed` record, started at `started` (unix ms), came to; once the
    /// receipt is found, returns when the lookup that found it and the last one that missed it
    /// started, from the write-ahead ([`pace::ReceiptTime::learn`]). Timed from each lookup's
    /// start: a found receipt was there when it was asked for, and the write that settles the
    /// record after it is not the chain's time.
    fn looked(
        &mut self,
        looked: &Looked,
        record: &PaymentRecord,
        started: u64,
    ) -> Option<(Duration, Option<Duration>)> {
        let lookups = self.receipt.as_mut()?;
        match looked {
            Looked::Unchanged if record.state == State::Signed => {
                lookups.missed = Some(started);
                None
            }
            // Finished from its receipt: by this follower's lookup, so the receipt was there.
            Looked::Changed => {
                let lookups = self.receipt.take()?;
                let since = |t: u64| Duration::from_millis(t.saturating_sub(lookups.written_ahead));
                Some((since(started), lookups.missed.map(since)))
            }
            _ => None,
        }
    }

    /// How long to wait before the next look.
    fn wait(&mut self, record: &PaymentRecord, signing: Duration) -> Duration {
        let first = std::mem::replace(&mut self.first, false);
        if record.state == State::Settled {
            Duration::from_millis(20)
        } else if first && record.state == State::Queued {
            let age = Duration::from_millis(now_ms().saturating_sub(record.created_at));
            self.pace.first_queued_wait(signing, age)
        } else {
            self.pace
                .next_wait(record.state, self.state_since.elapsed())
        }
    }

    /// Whether the next look re-reads the record. Once broadcast, what the follower waits for is
    /// a receipt, which it looks for on every round; re-reading the record each round as well
    /// would double the reads of every waiting /settle for nothing. The record could change only
    /// by a replacement (replay asks for one only after X402_REPLAY_MIN_AGE_MS, which the config
    /// holds above the settle deadline) or by another follower finishing it from the same
    /// receipt. An occasional re-read still catches a replacement where the grace is 0 (tests).
    fn reread(&mut self, record: &PaymentRecord) -> bool {
        let broadcast = matches!(
            record.state,
            State::Signed | State::Submitted | State::Settled
        );
        if broadcast && self.read_at.elapsed() < self.poll * 4 {
            return false;
        }
        self.read_at = Instant::now();
        true
    }
}

/// A terminal record's failure, as the wire says it.
fn rejection_of(record: &PaymentRecord) -> Rejection {
    let failure = record.failure();
    Rejection::new(failure.reason, failure.message)
}

/// A transaction hash as answers carry it.
fn tx_text(hash: Option<B256>) -> Option<String> {
    hash.map(|h| format!("{h:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sample;

    const POLL: Duration = Duration::from_millis(250);

    #[test]
    fn a_settled_record_answers_only_through_the_claim() {
        assert_eq!(answer_for(&sample(State::Settled)), Look::Claim);
    }

    #[test]
    fn a_failed_expired_or_cancelled_record_answers_its_kept_failure() {
        for state in [State::Failed, State::Expired, State::Cancelled] {
            assert_eq!(answer_for(&sample(state)), Look::Final, "{state:?}");
        }
    }

    #[test]
    fn a_signed_or_submitted_record_is_finished_from_its_receipt() {
        // `signed` too: its transaction hash is written ahead of the broadcast.
        for state in [State::Signed, State::Submitted] {
            assert_eq!(answer_for(&sample(state)), Look::FindReceipt, "{state:?}");
        }
    }

    #[test]
    fn a_queued_record_is_waited_for() {
        assert_eq!(answer_for(&sample(State::Queued)), Look::Wait);
    }

    #[test]
    fn at_the_deadline_a_payment_nothing_signed_is_cancelled() {
        assert_eq!(at_deadline(State::Queued), AtDeadline::Cancel);
    }

    #[test]
    fn at_the_deadline_a_broadcast_payment_is_pending_never_failed() {
        for state in [State::Signed, State::Submitted] {
            let AtDeadline::Pending(message) = at_deadline(state) else {
                panic!("{state:?} must be pending at the deadline");
            };
            assert!(message.contains("not mined yet"), "{message}");
        }
    }

    #[test]
    fn at_the_deadline_a_settled_payment_whose_claim_failed_is_pending() {
        // The success belongs to whoever records the claim; one that could not must not say
        // "failed" about a payment that moved the money.
        let AtDeadline::Pending(message) = at_deadline(State::Settled) else {
            panic!("settled must be pending at the deadline");
        };
        assert!(message.contains("could not be recorded"), "{message}");
    }

    #[test]
    fn a_final_answer_carries_the_kept_reason_or_what_the_state_says() {
        let failed = PaymentRecord {
            reason: Some(Reason::InsufficientBalance),
            message: Some("balance 5 < 10000".into()),
            ..sample(State::Failed)
        };
        let rejection = rejection_of(&failed);
        assert_eq!(rejection.reason, Reason::InsufficientBalance);
        assert_eq!(rejection.message, "balance 5 < 10000");

        let bare = rejection_of(&sample(State::Cancelled));
        assert_eq!(bare.reason, Reason::UnexpectedSettleError);
        assert_eq!(bare.message, "the payment is cancelled");
    }

    #[test]
    fn answers_name_the_transaction_as_0x_hex() {
        assert_eq!(tx_text(None), None);
        assert_eq!(
            tx_text(Some(B256::repeat_byte(9))).as_deref(),
            Some(format!("0x{}", "09".repeat(32)).as_str())
        );
    }

    #[test]
    fn leaving_the_queue_reports_how_long_signing_took_once() {
        let mut round = Round::new(&sample(State::Queued), POLL);
        assert_eq!(round.observe(&sample(State::Queued)), None);
        let signed = PaymentRecord {
            created_at: 1_000,
            updated_at: 1_045,
            ..sample(State::Signed)
        };
        assert_eq!(round.observe(&signed), Some(Duration::from_millis(45)));
        // Later moves are not signing times.
        assert_eq!(round.observe(&sample(State::Submitted)), None);
        assert_eq!(round.observe(&sample(State::Settled)), None);
    }

    #[test]
    fn a_missed_signed_state_still_reports_the_signing_time() {
        let mut round = Round::new(&sample(State::Queued), POLL);
        let submitted = PaymentRecord {
            created_at: 1_000,
            updated_at: 1_070,
            ..sample(State::Submitted)
        };
        assert_eq!(round.observe(&submitted), Some(Duration::from_millis(70)));
    }

    #[test]
    fn the_first_receipt_lookup_of_a_write_ahead_just_seen_waits_for_the_typical_receipt_time() {
        let mut round = Round::new(&sample(State::Queued), POLL);
        let signed = PaymentRecord {
            updated_at: now_ms(),
            ..sample(State::Signed)
        };
        round.observe(&signed);
        let wait = round.before_first_receipt(&signed, Duration::from_millis(200));
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Missed: later lookups follow the pace, not the typical time.
        let at = signed.updated_at;
        assert_eq!(round.looked(&Looked::Unchanged, &signed, at + 20), None);
        assert_eq!(
            round.before_first_receipt(&signed, Duration::from_millis(200)),
            Duration::ZERO
        );
        // Found: when the two lookups started, from the write-ahead, whatever the look itself took.
        let took = round.looked(&Looked::Changed, &signed, at + 30);
        let ms = Duration::from_millis;
        assert_eq!(took, Some((ms(30), Some(ms(20)))));
        let again = round.looked(&Looked::Changed, &signed, at + 40);
        assert_eq!(again, None, "one sample a payment");
    }

    #[test]
    fn a_record_not_seen_leaving_the_queue_is_looked_up_at_once_and_teaches_nothing() {
        // A retry of a payment already signed, and a record replay sent (`submitted`).
        for state in [State::Signed, State::Submitted] {
            let mut round = Round::new(&sample(state), POLL);
            let record = PaymentRecord {
                updated_at: now_ms(),
                ..sample(state)
            };
            round.observe(&record);
            let wait = round.before_first_receipt(&record, Duration::from_millis(200));
            assert_eq!(wait, Duration::ZERO);
            assert_eq!(round.looked(&Looked::Changed, &record, now_ms()), None);
        }
    }

    #[test]
    fn a_payment_signed_here_is_timed_from_its_own_write_ahead() {
        let written = PaymentRecord {
            updated_at: now_ms(),
            ..sample(State::Signed)
        };
        let mut round = Round::sent(&written, POLL);
        // Waits for the typical receipt time after the write-ahead, as for a worker's.
        let wait = round.before_first_receipt(&written, Duration::from_millis(200));
        assert!(
            wait > Duration::from_millis(150) && wait <= POLL,
            "{wait:?}"
        );
        // And learns from what its lookups found.
        let found = round.looked(&Looked::Changed, &written, written.updated_at + 12);
        assert_eq!(found, Some((Duration::from_millis(12), None)));
    }

    #[test]
    fn a_queued_record_is_re_read_every_round() {
        let mut round = Round::new(&sample(State::Queued), POLL);
        assert!(round.reread(&sample(State::Queued)));
        assert!(round.reread(&sample(State::Queued)));
    }

    #[test]
    fn a_broadcast_record_is_re_read_only_every_fourth_poll() {
        let mut round = Round::new(&sample(State::Signed), POLL);
        // Just read (by `Round::new`): its receipt is what changes, not the record.
        assert!(!round.reread(&sample(State::Signed)));
        assert!(!round.reread(&sample(State::Submitted)));
        let mut quick = Round::new(&sample(State::Signed), Duration::ZERO);
        assert!(quick.reread(&sample(State::Signed)));
    }

    #[test]
    fn a_settled_record_is_looked_at_again_soon() {
        let mut round = Round::new(&sample(State::Settled), POLL);
        assert_eq!(
            round.wait(&sample(State::Settled), POLL),
            Duration::from_millis(20)
        );
    }
}
