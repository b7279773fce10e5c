//! What the integration tests share, one file per concern, all re-exported here so a test says
//! `mod common; use common::*;`:
//!
//! - [`stack`]: the local stack's description and the facilitator's configuration;
//! - [`payment`]: payments signed by the stack's test payers, and the token ABI;
//! - [`permit2`]: Permit2 payments in the EIP-2612 test token, and payers that approved Permit2;
//! - [`permit2_answers`]: what the `exact` Permit2 and `upto` tests check alike in the answers;
//! - [`http`]: the facilitator's HTTP API as a client sees it;
//! - [`chain`]: anvil through alloy, and the guard that stops its mining;
//! - [`proxy`]: the counting RPC proxy's counts and faults;
//! - [`records`]: DynamoDB's tables read as the library's types;
//! - [`process`]: processes and threads a test starts and stops however it ends;
//! - [`wait`]: the one wait-and-ask-again loop;
//! - [`wallet`]: the ERC-1271 test wallet, its hostile switch, and a settlement it reverts;
//! - [`own_queue`] (not re-exported): a settlement queue of a test's own, delivered to a worker in
//!   the test's process;
//! - [`replay`] (not re-exported): what the replay and fault tests share.
//!
//! The stack is started by `infra/test.sh` (or `infra/stack.sh up` plus a running facilitator);
//! these tests fail with a clear message when it is not there, rather than pass without checking.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod chain;
pub mod http;
pub mod own_queue;
pub mod payment;
pub mod permit2;
pub mod permit2_answers;
pub mod process;
pub mod proxy;
pub mod records;
pub mod replay;
pub mod stack;
pub mod wait;
pub mod wallet;

pub use chain::*;
pub use http::*;
pub use payment::*;
pub use permit2::*;
pub use permit2_answers::*;
pub use process::*;
pub use proxy::*;
pub use records::*;
pub use stack::*;
pub use wait::*;
pub use wallet::*;
