//! The EIP-712 digest a payer signs for an `exact` Permit2 payment.
//!
//! Domain: Permit2's own, `{name: "Permit2", chainId, verifyingContract: Permit2}` (no version).
//! Message: `PermitWitnessTransferFrom` whose witness is the exact proxy's `Witness(address to,
//! uint256 validAfter)`; the referenced types follow the primary one in alphabetical order, as
//! EIP-712 requires and as the proxy's `WITNESS_TYPE_STRING` spells them. An `upto` payment's
//! witness is the upto proxy's `Witness(address to,address facilitator,uint256 validAfter)`
//! ([`upto`]): same type names, so the two live in separate modules.

#![allow(missing_docs)]

use std::borrow::Cow;

use alloy::{
    primitives::{B256, U256},
    sol,
    sol_types::{Eip712Domain, SolStruct},
};

use super::payload::Permit2Payment;
use crate::evm::abi::PERMIT2;

sol! {
    #[derive(Debug)]
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    #[derive(Debug)]
    struct Witness {
        address to;
        uint256 validAfter;
    }

    #[derive(Debug)]
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }
}

/// Permit2's EIP-712 domain on this chain.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Borrowed("Permit2")),
        None,
        Some(U256::from(chain_id)),
        Some(PERMIT2),
        None,
    )
}

/// The message, as the payer signed it (an `exact` payment's).
pub fn message(payment: &Permit2Payment) -> PermitWitnessTransferFrom {
    let a = &payment.authorization;
    PermitWitnessTransferFrom {
        permitted: TokenPermissions {
            token: a.token,
            amount: a.amount,
        },
        spender: a.spender,
        nonce: a.nonce,
        deadline: a.deadline,
        witness: Witness {
            to: a.to,
            validAfter: a.valid_after,
        },
    }
}

/// The upto proxy's types: Permit2's `PermitWitnessTransferFrom` with a witness that also names
/// the facilitator.
pub mod upto {
    #![allow(missing_docs)]

    use alloy::sol;

    use crate::evm::permit2::payload::Permit2Payment;

    sol! {
        #[derive(Debug)]
        struct TokenPermissions {
            address token;
            uint256 amount;
        }

        #[derive(Debug)]
        struct Witness {
            address to;
            address facilitator;
            uint256 validAfter;
        }

        #[derive(Debug)]
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }
    }

    /// The message an `upto` payer signed (the witness's facilitator is zero if the payment has
    /// none, which no `upto` payment reaches here without).
    pub fn message(payment: &Permit2Payment) -> PermitWitnessTransferFrom {
        let a = &payment.authorization;
        PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: a.token,
                amount: a.amount,
            },
            spender: a.spender,
            nonce: a.nonce,
            deadline: a.deadline,
            witness: Witness {
                to: a.to,
                facilitator: a.facilitator.unwrap_or_default(),
                validAfter: a.valid_after,
            },
        }
    }
}

/// The digest that `ecrecover` must map to the payer: over the exact proxy's witness, or the upto
/// proxy's when the payment is an `upto` one.
pub fn signing_digest(payment: &Permit2Payment) -> B256 {
    let domain = domain(payment.chain_id);
    match payment.is_upto() {
        false => message(payment).eip712_signing_hash(&domain),
        true => upto::message(payment).eip712_signing_hash(&domain),
    }
}

#[cfg(test)]
mod tests {
    use alloy::{
        primitives::{b256, keccak256},
        sol_types::SolStruct,
    };

    use super::*;

    #[test]
    fn the_type_is_permit2s_with_the_exact_proxys_witness() {
        let message = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: Default::default(),
                amount: Default::default(),
            },
            spender: Default::default(),
            nonce: Default::default(),
            deadline: Default::default(),
            witness: Witness {
                to: Default::default(),
                validAfter: Default::default(),
            },
        };
        // Permit2's prefix followed by the proxy's WITNESS_TYPE_STRING.
        let full = "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
        assert_eq!(message.eip712_type_hash(), keccak256(full));
        assert_eq!(
            message.eip712_type_hash(),
            b256!("0xebc156cd23678a74c94df13d772ef5478420637f0c94bd10d509e1dc98f521c7")
        );
    }

    #[test]
    fn the_upto_type_is_permit2s_with_the_upto_proxys_witness() {
        let message = upto::PermitWitnessTransferFrom {
            permitted: upto::TokenPermissions {
                token: Default::default(),
                amount: Default::default(),
            },
            spender: Default::default(),
            nonce: Default::default(),
            deadline: Default::default(),
            witness: upto::Witness {
                to: Default::default(),
                facilitator: Default::default(),
                validAfter: Default::default(),
            },
        };
        // Permit2's prefix followed by the upto proxy's WITNESS_TYPE_STRING.
        let full = "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
        assert_eq!(message.eip712_type_hash(), keccak256(full));
    }
}
