//! The EIP-712 digest a payer signs for an EIP-3009 authorization.
//!
//! Domain: `{name, version}` from `paymentRequirements.extra`, the chain id from the network, and the
//! token (`paymentRequirements.asset`) as `verifyingContract`.

use std::borrow::Cow;

use alloy::{
    primitives::{B256, U256},
    sol_types::{Eip712Domain, SolStruct},
};

use super::{abi::TransferWithAuthorization, payload::ExactPayment};

/// The token's EIP-712 domain for this payment.
pub fn domain(payment: &ExactPayment) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(payment.domain.name.clone())),
        Some(Cow::Owned(payment.domain.version.clone())),
        Some(U256::from(payment.chain_id)),
        Some(payment.asset),
        None,
    )
}

/// The digest that `ecrecover` must map to the payer.
pub fn signing_digest(payment: &ExactPayment) -> B256 {
    let a = &payment.authorization;
    let message = TransferWithAuthorization {
        from: a.from,
        to: a.to,
        value: a.value,
        validAfter: a.valid_after,
        validBefore: a.valid_before,
        nonce: a.nonce,
    };
    message.eip712_signing_hash(&domain(payment))
}

#[cfg(test)]
mod tests {
    use alloy::sol_types::SolStruct;

    use super::TransferWithAuthorization;

    #[test]
    fn typehash_is_eip3009s() {
        let typehash = TransferWithAuthorization::eip712_type_hash(&TransferWithAuthorization {
            from: Default::default(),
            to: Default::default(),
            value: Default::default(),
            validAfter: Default::default(),
            validBefore: Default::default(),
            nonce: Default::default(),
        });
        assert_eq!(
            typehash,
            alloy::primitives::b256!(
                "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"
            )
        );
    }
}
