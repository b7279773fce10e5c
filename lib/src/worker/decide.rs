//! The worker's decisions, apart from its I/O: each takes the facts the worker read and says what
//! to do, so that each rule is unit-tested on its own (docs/settlement.md, "The worker").

use std::time::Duration;

use alloy::{
    consensus::TxEip1559,
    primitives::{Address, Bytes, TxKind, B256, U256},
};

pub(super) use crate::lifecycle::decode_eip1559;
use crate::{
    lifecycle::receipt::reason_from_revert,
    protocol::Reason,
    store::{PaymentRecord, State},
};

/// What the worker does with a payment, from its record and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// `queued` and valid: simulate, sign, write ahead, send.
    Sign,
    /// `queued` on a network this deployment does not serve: fail it.
    FailUnknownNetwork,
    /// `queued` past `validBefore`: nothing was signed, so it expires.
    Expire,
    /// Replay asked for a replacement of the transaction the record still holds.
    Replace,
    /// `signed` (sent, or never sent: a crash after the write-ahead): the stored bytes again,
    /// unless the node has them.
    Broadcast,
    /// Anything else: moved on, finished, or a replacement request for a superseded hash.
    Nothing,
}

/// The worker's next step for `record`; `replace` is the hash a replacement request names,
/// `now` unix seconds.
pub fn next_step(
    record: &PaymentRecord,
    replace: Option<B256>,
    now: u64,
    network_known: bool,
) -> Next {
    match (record.state, replace) {
        (State::Queued, _) if !network_known => Next::FailUnknownNetwork,
        (State::Queued, _) if now >= record.valid_before => Next::Expire,
        (State::Queued, _) => Next::Sign,
        (State::Signed | State::Submitted, Some(hash)) if record.tx_hash == Some(hash) => {
            Next::Replace
        }
        (State::Signed, None) => Next::Broadcast,
        _ => Next::Nothing,
    }
}

/// What the simulation says of a `queued` payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GasLimit {
    /// It would succeed: sign with this gas limit (the estimate and a fifth more, at most the cap).
    Limit(u64),
    /// It would succeed but use more gas than one settlement may: fail it, naming both.
    OverCap { needed: u64, cap: u64 },
    /// The token has the authorization as used: find who used it before failing anything.
    UsedBefore(String),
    /// It would revert for another reason: fail it with that reason; no lane nonce is taken.
    Refused(String),
}

/// The gas limit from `eth_estimateGas`'s answer and the settlement's cap, or the revert's meaning.
pub fn gas_limit(estimate: Result<u64, String>, cap: u64) -> GasLimit {
    match estimate {
        Ok(gas) if gas > cap => GasLimit::OverCap { needed: gas, cap },
        Ok(gas) => GasLimit::Limit(gas.saturating_add(gas / 5).min(cap)),
        Err(revert) if reason_from_revert(&revert) == Reason::NonceAlreadyUsed => {
            GasLimit::UsedBefore(revert)
        }
        Err(revert) => GasLimit::Refused(revert),
    }
}

/// The gas cap for a settlement's calldata on chain `chain_id`: the `bytes` overload of
/// `transferWithAuthorization` carries a contract wallet's signature (or one that only a contract
/// could judge), the `v, r, s` overload a key's; a Permit2 proxy's settlement is a key's when its
/// signature recovers to the permit's owner, else a contract wallet's, whose `isValidSignature`
/// Permit2 runs inside the transfer ([`crate::evm::permit2::signer::signed_by_key`]). The exact
/// (or upto) Permit2 proxy's `settleWithPermit` (the `eip2612GasSponsoring` extension) also
/// submits the payer's EIP-2612 permit, which takes it past the key's cap (about 180,000 gas
/// estimated on the local stack): it gets the larger cap.
pub fn gas_cap(calldata: &Bytes, chain_id: u64, caps: crate::config::GasCaps) -> u64 {
    use crate::evm::abi::{IX402ExactPermit2Proxy as Exact, IX402UptoPermit2Proxy as Upto};
    use alloy::sol_types::SolCall;
    let selector = calldata.get(..4);
    let sponsored = [
        &Exact::settleWithPermitCall::SELECTOR[..],
        &Upto::settleWithPermitCall::SELECTOR[..],
    ];
    if selector == Some(&crate::evm::abi::IMulticall3::aggregate3Call::SELECTOR[..]) {
        // An ERC-6492 wallet deployed by its factory, then asked by the token (evm::counterfactual).
        caps.wallet_deployment
    } else if selector.is_some_and(|s| sponsored.contains(&s)) {
        caps.contract_wallet
    } else if crate::evm::permit2::signer::signed_by_key(calldata, chain_id) {
        caps.eoa
    } else {
        caps.contract_wallet
    }
}

/// The settlement transaction: the record's call to its target (`transferWithAuthorization` to
/// the token, or `settle` to the exact Permit2 proxy).
pub fn transfer_tx(
    record: &PaymentRecord,
    chain_id: u64,
    nonce: u64,
    gas_limit: u64,
    (max_fee_per_gas, max_priority_fee_per_gas): (u128, u128),
) -> TxEip1559 {
    TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas,
        max_priority_fee_per_gas,
        to: TxKind::Call(record.target()),
        value: U256::ZERO,
        access_list: Default::default(),
        input: record.calldata.clone(),
    }
}

/// What to do when the write-ahead's condition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLost {
    /// Still `queued`: the lane's nonce moved under us; the next attempt takes the next one.
    TakeNextNonce,
    /// `signed` already: by an earlier run, or by this one when the transaction committed but its
    /// answer was lost and the SDK's retry then failed the condition. Either way the stored bytes
    /// are the ones to send, now, rather than waiting for replay (I3).
    Broadcast,
    /// Cancelled by `/settle` at its deadline, or sent and finished meanwhile.
    Nothing,
}

/// The step after a lost write-ahead, from the record as it is now.
pub fn after_lost_write_ahead(latest: Option<&PaymentRecord>) -> AfterLost {
    match latest.map(|r| r.state) {
        Some(State::Queued) => AfterLost::TakeNextNonce,
        Some(State::Signed) => AfterLost::Broadcast,
        _ => AfterLost::Nothing,
    }
}

/// Whether a node's refusal of a transaction says its nonce is already used on chain. Nodes word
/// it differently: geth, reth, anvil and erigon say "nonce too low", Nethermind "OldNonce".
pub fn nonce_too_low(refusal: &str) -> bool {
    let refusal = refusal.to_ascii_lowercase();
    refusal.contains("nonce too low") || refusal.contains("oldnonce")
}

/// Whether a transaction at lane nonce `nonce` is replaced, from the lane's mined nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacementPlan {
    /// Mined meanwhile (this transaction or another at its nonce), so there is nothing to replace
    /// and the receipt decides the record; or waiting behind an earlier nonce of the lane, where
    /// higher fees would not get it mined.
    Nothing,
    /// The same transfer with higher fees.
    Bump,
    /// The authorization expired: a zero-value self-transfer uses the nonce without paying.
    Cancel,
}

pub fn replacement_plan(mined_nonce: u64, nonce: u64, expired: bool) -> ReplacementPlan {
    if mined_nonce > nonce {
        ReplacementPlan::Nothing
    } else if expired {
        ReplacementPlan::Cancel
    } else if mined_nonce < nonce {
        ReplacementPlan::Nothing
    } else {
        ReplacementPlan::Bump
    }
}

/// The replacement of `old` at its nonce, from `sender`: fees at least an eighth higher (nodes take
/// a replacement only when both caps rise by 10 %) and at least the market's, never above `cap`
/// (wei per gas); the same transfer, or, to `cancel`, a zero-value self-transfer. `None` when the
/// raise would pass the cap: the transaction then waits as it is ([`crate::metrics::fee_cap_reached`]).
pub fn replacement(
    old: TxEip1559,
    sender: Address,
    (market_max, market_tip): (u128, u128),
    cancel: bool,
    cap: u128,
) -> Option<TxEip1559> {
    let (least_max, least_tip) = (
        bump(old.max_fee_per_gas),
        bump(old.max_priority_fee_per_gas),
    );
    if least_max > cap || least_tip > cap {
        return None;
    }
    let max_fee = least_max.max(market_max).max(least_tip).min(cap);
    let tip = least_tip.max(market_tip).min(max_fee);
    let bumped = TxEip1559 {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        ..old
    };
    Some(match cancel {
        false => bumped,
        true => TxEip1559 {
            to: TxKind::Call(sender),
            value: U256::ZERO,
            input: Bytes::new(),
            gas_limit: 21_000,
            ..bumped
        },
    })
}

pub use crate::evm::chain::capped;

/// A fee raised by an eighth and one wei: above the 10 % nodes ask of a replacement.
fn bump(fee: u128) -> u128 {
    fee.saturating_add(fee / 8).saturating_add(1)
}

/// The least time left in the invocation to start on a message: one attempt at every step's
/// timeout (the chain's 5 s, KMS, DynamoDB), plus putting the message back. Less than that, and the
/// message is handed back untouched for the next invocation.
pub const MIN_TIME_TO_START: Duration = Duration::from_secs(10);
/// The most time one message's in-process retries may take: a throttle or a node's hiccup passes
/// within it; a longer outage is better waited out with the message at the end of its lane, so
/// that the lane's other payments are tried meanwhile.
pub const RETRY_BUDGET: Duration = Duration::from_secs(5);
/// What is kept back from the in-process retries to put the message back and answer Lambda.
const FINISH_MARGIN: Duration = Duration::from_secs(2);
/// The longest a failed message waits before it is received again (when it could not be put at
/// the end of its lane).
pub const MAX_VISIBILITY_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a message may be started with `left` of the invocation.
pub fn may_start(left: Duration) -> bool {
    left >= MIN_TIME_TO_START
}

/// How long a message started with `left` of the invocation may spend retrying in-process.
pub fn retry_budget(left: Duration) -> Duration {
    RETRY_BUDGET.min(left.saturating_sub(FINISH_MARGIN))
}

/// Which attempt at its payment a received message is: its attempt attribute (1 when absent: the
/// message `/settle` or replay queued) plus the times SQS delivered this very message before
/// (a crashed or timed-out invocation).
pub fn attempt_of(attribute: Option<u32>, receive_count: Option<u32>) -> u32 {
    attribute
        .unwrap_or(1)
        .max(1)
        .saturating_add(receive_count.unwrap_or(1).max(1) - 1)
}

/// What follows an attempt that failed with an error worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Put the message at the end of its lane as this attempt.
    Retry { attempt: u32 },
    /// `max` attempts failed: end the payment (cancel it if nothing was signed) with a reason,
    /// so that it stops costing the lane time.
    GiveUp,
}

/// After attempt `attempt` failed, with at most `max` attempts in all.
pub fn after_failure(attempt: u32, max: u32) -> AfterFailure {
    if attempt >= max {
        AfterFailure::GiveUp
    } else {
        AfterFailure::Retry {
            attempt: attempt + 1,
        }
    }
}

/// How long a message that failed attempt `attempt` and could not be put back at the end of its
/// lane stays invisible: 1 s, 2 s, 4 s, … up to [`MAX_VISIBILITY_BACKOFF`], instead of the queue's
/// visibility timeout (minutes), which would hold the whole lane.
pub fn visibility_backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_VISIBILITY_BACKOFF)
}

#[cfg(test)]
mod tests {
    use alloy::{
        consensus::{SignableTransaction, TxEnvelope},
        eips::eip2718::Encodable2718,
        primitives::{address, Signature},
    };

    use super::*;

    const TOKEN: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    const LANE: Address = address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

    fn record(state: State) -> PaymentRecord {
        crate::store::sample(state)
    }

    fn tx() -> TxEip1559 {
        transfer_tx(&record(State::Queued), 84532, 7, 90_000, (2_000, 100))
    }

    #[test]
    fn a_valid_queued_payment_is_signed() {
        assert_eq!(
            next_step(&record(State::Queued), None, 999, true),
            Next::Sign
        );
    }

    #[test]
    fn a_queued_payment_past_valid_before_expires() {
        assert_eq!(
            next_step(&record(State::Queued), None, 1_000, true),
            Next::Expire
        );
    }

    #[test]
    fn a_queued_payment_on_an_unknown_network_fails_before_anything_else() {
        let step = next_step(&record(State::Queued), None, 1_000, false);
        assert_eq!(step, Next::FailUnknownNetwork);
    }

    #[test]
    fn a_signed_payment_is_broadcast_again() {
        assert_eq!(
            next_step(&record(State::Signed), None, 0, true),
            Next::Broadcast
        );
    }

    #[test]
    fn a_submitted_payment_waits_for_its_receipt() {
        assert_eq!(
            next_step(&record(State::Submitted), None, 0, true),
            Next::Nothing
        );
    }

    #[test]
    fn a_replacement_is_made_only_for_the_hash_the_record_still_holds() {
        let current = Some(B256::repeat_byte(9));
        let superseded = Some(B256::repeat_byte(8));
        for state in [State::Signed, State::Submitted] {
            assert_eq!(next_step(&record(state), current, 0, true), Next::Replace);
            assert_eq!(
                next_step(&record(state), superseded, 0, true),
                Next::Nothing
            );
        }
    }

    #[test]
    fn a_finished_payment_is_left_alone() {
        for state in [
            State::Settled,
            State::Failed,
            State::Expired,
            State::Cancelled,
        ] {
            let step = next_step(&record(state), Some(B256::repeat_byte(9)), 0, true);
            assert_eq!(step, Next::Nothing);
        }
    }

    #[test]
    fn the_gas_limit_is_the_estimate_and_a_fifth() {
        assert_eq!(gas_limit(Ok(100_000), 150_000), GasLimit::Limit(120_000));
    }

    #[test]
    fn the_gas_limit_never_passes_the_cap() {
        // The estimate fits, its fifth more does not: the cap is the limit.
        assert_eq!(gas_limit(Ok(140_000), 150_000), GasLimit::Limit(150_000));
        assert_eq!(gas_limit(Ok(150_000), 150_000), GasLimit::Limit(150_000));
        assert_eq!(
            gas_limit(Ok(150_001), 150_000),
            GasLimit::OverCap {
                needed: 150_001,
                cap: 150_000
            }
        );
        assert_eq!(
            gas_limit(Ok(u64::MAX), 150_000),
            GasLimit::OverCap {
                needed: u64::MAX,
                cap: 150_000
            }
        );
    }

    #[test]
    fn a_contract_wallets_settlement_gets_the_contract_wallet_cap() {
        use crate::{config::GasCaps, evm::abi::IEip3009};
        use alloy::sol_types::SolCall;
        let caps = GasCaps {
            eoa: 1,
            contract_wallet: 2,
            wallet_deployment: 3,
        };
        let key = Bytes::from(IEip3009::transferWithAuthorization_0Call::SELECTOR.to_vec());
        let wallet = Bytes::from(IEip3009::transferWithAuthorization_1Call::SELECTOR.to_vec());
        assert_eq!(gas_cap(&key, 1, caps), 1);
        assert_eq!(gas_cap(&wallet, 1, caps), 2);
        assert_eq!(
            gas_cap(&Bytes::new(), 1, caps),
            2,
            "anything else: the larger, still a cap"
        );
    }

    #[test]
    fn a_wallets_deployment_and_first_payment_gets_the_deployment_cap() {
        use crate::{config::GasCaps, evm::abi::IMulticall3};
        use alloy::sol_types::SolCall;
        let caps = GasCaps {
            eoa: 1,
            contract_wallet: 2,
            wallet_deployment: 3,
        };
        let deploy = Bytes::from(IMulticall3::aggregate3Call::SELECTOR.to_vec());
        assert_eq!(gas_cap(&deploy, 1, caps), 3);
    }

    #[test]
    fn a_used_authorization_is_attributed_before_it_fails() {
        let revert = "EIP3009: authorization is used or canceled".to_owned();
        assert_eq!(
            gas_limit(Err(revert.clone()), 150_000),
            GasLimit::UsedBefore(revert)
        );
    }

    #[test]
    fn any_other_revert_refuses_the_payment() {
        let revert = "ERC20: transfer amount exceeds balance".to_owned();
        assert_eq!(
            gas_limit(Err(revert.clone()), 150_000),
            GasLimit::Refused(revert)
        );
    }

    /// The exact proxy's `settle` of a permit on chain 1 whose signature is `key`'s.
    fn permit2_settle(owner: alloy::primitives::Address, key: u8) -> Bytes {
        use crate::evm::{
            abi::{IX402ExactPermit2Proxy as Proxy, EXACT_PERMIT2_PROXY},
            permit2::eip712,
            test_keys,
        };
        use alloy::sol_types::{SolCall, SolStruct};
        let (token, amount, nonce, deadline) = (owner, U256::from(1u8), U256::from(7u8), U256::MAX);
        let digest = eip712::PermitWitnessTransferFrom {
            permitted: eip712::TokenPermissions { token, amount },
            spender: EXACT_PERMIT2_PROXY,
            nonce,
            deadline,
            witness: eip712::Witness {
                to: owner,
                validAfter: U256::ZERO,
            },
        }
        .eip712_signing_hash(&eip712::domain(1));
        Proxy::settleCall {
            permit: Proxy::PermitTransferFrom {
                permitted: Proxy::TokenPermissions { token, amount },
                nonce,
                deadline,
            },
            owner,
            witness: Proxy::Witness {
                to: owner,
                validAfter: U256::ZERO,
            },
            signature: test_keys::sign_digest(digest, &test_keys::key(key)),
        }
        .abi_encode()
        .into()
    }

    #[test]
    fn a_permit2_settlement_gets_the_key_cap_if_the_owners_key_signed_it() {
        use crate::{config::GasCaps, evm::abi::IX402ExactPermit2Proxy, evm::test_keys};
        use alloy::sol_types::SolCall;
        let caps = GasCaps {
            eoa: 1,
            contract_wallet: 2,
            wallet_deployment: 3,
        };
        let owner = test_keys::address_of(&test_keys::key(0x11));
        assert_eq!(gas_cap(&permit2_settle(owner, 0x11), 1, caps), 1);
        assert_eq!(
            gas_cap(&permit2_settle(owner, 0x22), 1, caps),
            2,
            "another key's signature: a contract wallet's, run by Permit2"
        );
        assert_eq!(
            gas_cap(&permit2_settle(owner, 0x11), 8453, caps),
            2,
            "over another chain it is nobody's key"
        );
        let sponsored = IX402ExactPermit2Proxy::settleWithPermitCall::SELECTOR.to_vec();
        assert_eq!(
            gas_cap(&sponsored.into(), 1, caps),
            2,
            "it also submits a permit"
        );
    }

    #[test]
    fn a_permit2_settlement_calls_the_proxy_with_the_stored_calldata() {
        let proxy = crate::evm::abi::EXACT_PERMIT2_PROXY;
        let record = PaymentRecord {
            target: Some(proxy),
            ..record(State::Queued)
        };
        let tx = transfer_tx(&record, 84532, 7, 90_000, (2_000, 100));
        assert_eq!((tx.to, tx.input), (TxKind::Call(proxy), record.calldata));
    }

    #[test]
    fn the_transfer_calls_the_token_with_the_stored_calldata() {
        let tx = tx();
        assert_eq!(
            (tx.to, tx.value, tx.nonce),
            (TxKind::Call(TOKEN), U256::ZERO, 7)
        );
        assert_eq!(tx.input, record(State::Queued).calldata);
    }

    #[test]
    fn a_lost_write_ahead_retries_with_the_next_nonce_while_still_queued() {
        let queued = record(State::Queued);
        assert_eq!(
            after_lost_write_ahead(Some(&queued)),
            AfterLost::TakeNextNonce
        );
    }

    #[test]
    fn a_lost_write_ahead_of_a_signed_record_sends_the_stored_bytes() {
        let signed = record(State::Signed);
        assert_eq!(after_lost_write_ahead(Some(&signed)), AfterLost::Broadcast);
    }

    #[test]
    fn a_lost_write_ahead_of_a_cancelled_or_finished_record_does_nothing() {
        for state in [State::Cancelled, State::Submitted, State::Settled] {
            assert_eq!(
                after_lost_write_ahead(Some(&record(state))),
                AfterLost::Nothing
            );
        }
        assert_eq!(after_lost_write_ahead(None), AfterLost::Nothing);
    }

    #[test]
    fn nodes_refusals_of_a_used_nonce_are_recognised() {
        assert!(nonce_too_low("nonce too low: next nonce 5, tx nonce 4"));
        assert!(nonce_too_low("Nonce too low"));
        assert!(nonce_too_low(
            "OldNonce, Current nonce: 5, nonce of rejected tx: 4"
        ));
        assert!(!nonce_too_low("replacement transaction underpriced"));
        assert!(!nonce_too_low("nonce too high"));
    }

    #[test]
    fn a_mined_nonce_needs_no_replacement() {
        assert_eq!(replacement_plan(8, 7, false), ReplacementPlan::Nothing);
        assert_eq!(replacement_plan(8, 7, true), ReplacementPlan::Nothing);
    }

    #[test]
    fn a_transaction_behind_an_earlier_nonce_is_not_bumped() {
        assert_eq!(replacement_plan(6, 7, false), ReplacementPlan::Nothing);
    }

    #[test]
    fn the_lanes_next_nonce_is_bumped() {
        assert_eq!(replacement_plan(7, 7, false), ReplacementPlan::Bump);
    }

    #[test]
    fn an_expired_authorization_is_cancelled_even_behind_an_earlier_nonce() {
        assert_eq!(replacement_plan(7, 7, true), ReplacementPlan::Cancel);
        assert_eq!(replacement_plan(6, 7, true), ReplacementPlan::Cancel);
    }

    #[test]
    fn a_bump_raises_both_fees_by_more_than_a_tenth_and_keeps_the_transfer() {
        let bumped = replacement(tx(), LANE, (0, 0), false, u128::MAX).unwrap();
        assert_eq!(
            (bumped.max_fee_per_gas, bumped.max_priority_fee_per_gas),
            (2_251, 113)
        );
        assert_eq!(
            (bumped.to, bumped.input.clone(), bumped.nonce),
            (tx().to, tx().input, 7)
        );
    }

    #[test]
    fn a_bump_follows_the_market_when_it_is_higher() {
        let bumped = replacement(tx(), LANE, (10_000, 500), false, u128::MAX).unwrap();
        assert_eq!(
            (bumped.max_fee_per_gas, bumped.max_priority_fee_per_gas),
            (10_000, 500)
        );
    }

    #[test]
    fn a_cancellation_is_a_zero_value_self_transfer_at_the_same_nonce() {
        let cancel = replacement(tx(), LANE, (0, 0), true, u128::MAX).unwrap();
        assert_eq!(
            (cancel.to, cancel.value, cancel.nonce),
            (TxKind::Call(LANE), U256::ZERO, 7)
        );
        assert!(cancel.input.is_empty() && cancel.gas_limit == 21_000);
        assert!(cancel.max_fee_per_gas > tx().max_fee_per_gas);
    }

    #[test]
    fn a_stored_transaction_decodes_back_to_what_was_signed() {
        let signature = Signature::new(U256::from(1), U256::from(2), false);
        let envelope: TxEnvelope = tx().into_signed(signature).into();
        let raw = Bytes::from(envelope.encoded_2718());
        assert_eq!(decode_eip1559(&raw), Some(tx()));
        assert_eq!(decode_eip1559(&Bytes::from(vec![0x02])), None);
    }

    #[test]
    fn a_message_is_started_only_with_time_for_one_attempt_at_every_timeout() {
        assert!(may_start(Duration::from_secs(30)));
        assert!(may_start(MIN_TIME_TO_START));
        assert!(!may_start(MIN_TIME_TO_START - Duration::from_millis(1)));
    }

    #[test]
    fn in_process_retries_stop_at_the_budget_or_before_the_invocation_ends() {
        assert_eq!(retry_budget(Duration::from_secs(30)), RETRY_BUDGET);
        assert_eq!(retry_budget(Duration::from_secs(4)), Duration::from_secs(2));
        assert_eq!(retry_budget(Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn attempts_count_the_puts_back_and_the_redeliveries() {
        assert_eq!(attempt_of(None, None), 1);
        assert_eq!(attempt_of(None, Some(1)), 1);
        assert_eq!(attempt_of(None, Some(3)), 3, "redelivered twice");
        assert_eq!(attempt_of(Some(4), Some(1)), 4, "put back three times");
        assert_eq!(attempt_of(Some(4), Some(2)), 5);
        assert_eq!(
            attempt_of(Some(0), Some(0)),
            1,
            "nonsense counts as a first attempt"
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_until_the_last_then_given_up() {
        assert_eq!(after_failure(1, 5), AfterFailure::Retry { attempt: 2 });
        assert_eq!(after_failure(4, 5), AfterFailure::Retry { attempt: 5 });
        assert_eq!(after_failure(5, 5), AfterFailure::GiveUp);
        assert_eq!(after_failure(9, 5), AfterFailure::GiveUp);
    }

    #[test]
    fn a_message_that_could_not_be_put_back_waits_seconds_not_the_queue_timeout() {
        let secs = |n| visibility_backoff(n).as_secs();
        assert_eq!((secs(1), secs(2), secs(3), secs(4)), (1, 2, 4, 8));
        assert_eq!(visibility_backoff(40), MAX_VISIBILITY_BACKOFF);
        assert_eq!(visibility_backoff(u32::MAX), MAX_VISIBILITY_BACKOFF);
    }

    #[test]
    fn a_bump_never_offers_more_than_the_cap() {
        // The market went to 10 000; the cap is 5 000: the bump goes only as far as the cap.
        let bumped = replacement(tx(), LANE, (10_000, 500), false, 5_000).unwrap();
        assert_eq!(
            (bumped.max_fee_per_gas, bumped.max_priority_fee_per_gas),
            (5_000, 500)
        );
    }

    #[test]
    fn at_the_cap_there_is_no_bump_and_the_transaction_waits() {
        // 2 000 raised by an eighth is 2 251, over a cap of 2 200: nodes would refuse anything less.
        assert_eq!(replacement(tx(), LANE, (0, 0), false, 2_200), None);
        assert_eq!(replacement(tx(), LANE, (0, 0), true, 2_200), None);
        assert!(replacement(tx(), LANE, (0, 0), false, 2_251).is_some());
    }

    #[test]
    fn a_first_signature_offers_the_market_under_the_cap() {
        assert_eq!(capped((3_000, 100), 10_000), (3_000, 100));
        assert_eq!(capped((30_000, 100), 10_000), (10_000, 100));
        assert_eq!(capped((30_000, 20_000), 10_000), (10_000, 10_000));
    }
}
