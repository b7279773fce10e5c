//! ERC-6492 payers whose factory is on the network's allow-list (`eip6492AllowedFactories`): the
//! wallet may not exist yet, so its payment is simulated and settled as one Multicall3
//! `aggregate3` of two calls, the factory's deployment and then the token's
//! `transferWithAuthorization` (the `bytes` overload, with the inner signature the deployed wallet
//! judges through ERC-1271).
//!
//! The factory call may fail: a wallet deployed meanwhile (by us, the payer or anyone) makes most
//! factories revert or do nothing, and the transfer then runs against the wallet that is there.
//! Whether the transfer may fail is what tells the two uses apart: the simulation lets it fail, to
//! read its revert; the settlement does not, so a transfer that fails reverts the whole
//! transaction and deploys nothing for nothing.

use alloy::{
    primitives::{Address, Bytes},
    sol_types::{SolCall, SolError},
};

use super::{abi::IMulticall3, chain::CallOutcome, signature::Wrapped6492};

/// The `aggregate3` calldata: `deployment`'s factory call (its failure allowed), then
/// `transfer` to `asset`, whose failure is allowed only when `transfer_may_fail`.
pub fn deploy_then_transfer(
    deployment: &Wrapped6492,
    asset: Address,
    transfer: Bytes,
    transfer_may_fail: bool,
) -> Bytes {
    IMulticall3::aggregate3Call {
        calls: vec![
            IMulticall3::Call3 {
                target: deployment.factory,
                allowFailure: true,
                callData: deployment.factory_calldata.clone(),
            },
            IMulticall3::Call3 {
                target: asset,
                allowFailure: transfer_may_fail,
                callData: transfer,
            },
        ],
    }
    .abi_encode()
    .into()
}

/// The transfer's own outcome, from what the simulated `aggregate3` (transfer allowed to fail)
/// returned: its revert reason when it failed, so the diagnosis sees what the token said rather
/// than Multicall3's. An answer that does not decode is a revert too: the simulation proved
/// nothing.
pub fn transfer_outcome(returned: &[u8]) -> CallOutcome {
    let results = match IMulticall3::aggregate3Call::abi_decode_returns(returned) {
        Ok(results) => results,
        Err(e) => {
            return CallOutcome::Reverted {
                message: format!("Multicall3 aggregate3 answered something undecodable: {e}"),
            }
        }
    };
    match results.get(1) {
        Some(transfer) if transfer.success => CallOutcome::Returned(transfer.returnData.clone()),
        Some(transfer) => CallOutcome::Reverted {
            message: revert_message(&transfer.returnData),
        },
        None => CallOutcome::Reverted {
            message: "Multicall3 aggregate3 answered fewer than two results".into(),
        },
    }
}

/// A revert's `Error(string)` text, or its bytes in hex.
fn revert_message(data: &Bytes) -> String {
    alloy::sol_types::Revert::abi_decode(data)
        .map(|r| r.reason)
        .unwrap_or_else(|_| format!("execution reverted: {data}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolValue;

    fn deployment() -> Wrapped6492 {
        Wrapped6492 {
            factory: Address::repeat_byte(0xfa),
            factory_calldata: Bytes::from(vec![1, 2, 3]),
            inner: Bytes::from(vec![9; 65]),
        }
    }

    #[test]
    fn the_factory_may_fail_and_the_transfer_may_not_when_settling() {
        let token = Address::repeat_byte(0x70);
        let data = deploy_then_transfer(&deployment(), token, Bytes::from(vec![4, 5]), false);
        let call = IMulticall3::aggregate3Call::abi_decode(&data).unwrap();
        let [factory, transfer] = call.calls.as_slice() else {
            panic!("two calls: {call:?}");
        };
        assert_eq!(
            (factory.target, factory.allowFailure, &factory.callData[..]),
            (Address::repeat_byte(0xfa), true, &[1u8, 2, 3][..])
        );
        assert_eq!(
            (
                transfer.target,
                transfer.allowFailure,
                &transfer.callData[..]
            ),
            (token, false, &[4u8, 5][..])
        );
    }

    fn returned(results: Vec<(bool, Vec<u8>)>) -> Vec<u8> {
        let results: Vec<IMulticall3::Result> = results
            .into_iter()
            .map(|(success, data)| IMulticall3::Result {
                success,
                returnData: data.into(),
            })
            .collect();
        results.abi_encode()
    }

    #[test]
    fn the_transfers_revert_reason_is_what_the_diagnosis_sees() {
        let reason = alloy::sol_types::Revert::from("FiatTokenV2: invalid signature").abi_encode();
        let outcome = transfer_outcome(&returned(vec![(false, vec![]), (false, reason)]));
        assert_eq!(
            outcome,
            CallOutcome::Reverted {
                message: "FiatTokenV2: invalid signature".into()
            }
        );
        // A factory that failed (a wallet already there) does not matter; the transfer does.
        let ok = transfer_outcome(&returned(vec![(false, vec![]), (true, vec![])]));
        assert!(matches!(ok, CallOutcome::Returned(_)), "{ok:?}");
        let short = transfer_outcome(&returned(vec![(true, vec![])]));
        assert!(matches!(short, CallOutcome::Reverted { .. }), "{short:?}");
        let garbage = transfer_outcome(&[1, 2, 3]);
        assert!(
            matches!(garbage, CallOutcome::Reverted { .. }),
            "{garbage:?}"
        );
    }
}
