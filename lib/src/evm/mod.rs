//! Payments on EVM chains: `exact` by EIP-3009 (`transferWithAuthorization`, from a key, a deployed
//! ERC-1271 wallet, or an ERC-6492 wallet deployed at settle through an allowed factory:
//! [`counterfactual`]), and `exact` and `upto` by Permit2 ([`permit2`]), each verified and settled.

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
pub use chain::{CallOutcome, Chain, ChainError, SyncSent};
pub use payload::{Authorization, ExactPayment, TokenDomain};
pub use verify::{Checked, ExactEvm};
