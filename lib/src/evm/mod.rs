//! The `exact` payment scheme on EVM chains: the EIP-3009 method (`transferWithAuthorization`),
//! verified and settled, and the Permit2 method ([`permit2`]), verified only so far.

pub mod abi;
pub mod answers;
pub mod attribution;
pub mod chain;
pub mod checks;
pub mod counterfactual;
pub mod eip712;
mod failover;
pub mod hex;
pub mod payload;
pub mod permit2;
mod rpc;
pub mod signature;
#[cfg(test)]
pub(crate) mod test_keys;
pub mod verify;

pub use attribution::Transfer;
pub use chain::{CallOutcome, Chain, ChainError};
pub use payload::{Authorization, ExactPayment, TokenDomain};
pub use verify::{Checked, ExactEvm};
