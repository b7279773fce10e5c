//! Who signed a Permit2 settlement, read back from its calldata: the payer's own key, or a
//! contract wallet that Permit2 asks through `isValidSignature` when the transaction runs. The
//! worker needs this from a stored record alone (its gas cap, and whether a revert is the payer's
//! doing), so it is recomputed here from the proxy call rather than stored beside it.

use alloy::{
    primitives::{Address, Bytes, B256},
    sol_types::{SolCall, SolStruct},
};

use super::eip712;
use crate::evm::{
    abi::{
        self, IX402ExactPermit2Proxy as Exact, IX402UptoPermit2Proxy as Upto, EXACT_PERMIT2_PROXY,
        UPTO_PERMIT2_PROXY,
    },
    signature::{self, SignatureKind},
};

/// Whether `calldata`'s signature is one its signer's own key made, which the token (or Permit2)
/// checks with `ecrecover` and no wallet code runs: EIP-3009's `v, r, s` overload
/// ([`abi::signed_by_key`]), or a Permit2 proxy's settlement whose signature recovers to the
/// permit's owner over Permit2's digest on `chain_id`. A Permit2 settlement signed otherwise is a
/// contract wallet's.
pub fn signed_by_key(calldata: &[u8], chain_id: u64) -> bool {
    match permit2_signed_by_owner_key(calldata, chain_id) {
        Some(by_key) => by_key,
        None => abi::signed_by_key(calldata),
    }
}

/// For a Permit2 proxy's `settle` or `settleWithPermit` (exact or upto): whether its signature
/// recovers to its owner; `None` for any other calldata.
fn permit2_signed_by_owner_key(calldata: &[u8], chain_id: u64) -> Option<bool> {
    let domain = eip712::domain(chain_id);
    let exact = |p: Exact::PermitTransferFrom, w: Exact::Witness| {
        eip712::PermitWitnessTransferFrom {
            permitted: eip712::TokenPermissions {
                token: p.permitted.token,
                amount: p.permitted.amount,
            },
            spender: EXACT_PERMIT2_PROXY,
            nonce: p.nonce,
            deadline: p.deadline,
            witness: eip712::Witness {
                to: w.to,
                validAfter: w.validAfter,
            },
        }
        .eip712_signing_hash(&domain)
    };
    let upto = |p: Upto::PermitTransferFrom, w: Upto::Witness| {
        eip712::upto::PermitWitnessTransferFrom {
            permitted: eip712::upto::TokenPermissions {
                token: p.permitted.token,
                amount: p.permitted.amount,
            },
            spender: UPTO_PERMIT2_PROXY,
            nonce: p.nonce,
            deadline: p.deadline,
            witness: eip712::upto::Witness {
                to: w.to,
                facilitator: w.facilitator,
                validAfter: w.validAfter,
            },
        }
        .eip712_signing_hash(&domain)
    };
    let (digest, owner, sig) = if let Ok(c) = Exact::settleCall::abi_decode(calldata) {
        (exact(c.permit, c.witness), c.owner, c.signature)
    } else if let Ok(c) = Exact::settleWithPermitCall::abi_decode(calldata) {
        (exact(c.permit, c.witness), c.owner, c.signature)
    } else if let Ok(c) = Upto::settleCall::abi_decode(calldata) {
        (upto(c.permit, c.witness), c.owner, c.signature)
    } else if let Ok(c) = Upto::settleWithPermitCall::abi_decode(calldata) {
        (upto(c.permit, c.witness), c.owner, c.signature)
    } else {
        return None;
    };
    Some(recovers_to(&sig, &digest, owner))
}

/// Whether `sig` is a 65-byte signature that recovers to `owner` over `digest`.
fn recovers_to(sig: &Bytes, digest: &B256, owner: Address) -> bool {
    match signature::classify(sig) {
        Ok(SignatureKind::Ecdsa(sig)) => signature::recover(digest, &sig) == Some(owner),
        _ => false,
    }
}
