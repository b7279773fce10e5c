//! The local stack under test, as `infra/stack.sh up` and `infra/test.sh` describe it: its
//! addresses and accounts (`stack.json`), the facilitator's front ends, and the facilitator's own
//! configuration read from the same environment. Everything else in `common` starts here.

use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy::primitives::{Address, B256};
use facilitator::Config;
use serde::Deserialize;

/// The local stack as `infra/stack.sh up` describes it in `$X402_STACK_DIR/stack.json`.
#[derive(Debug, Deserialize)]
pub struct Stack {
    #[serde(rename = "ANVIL_URL")]
    pub anvil_url: String,
    #[serde(rename = "RPC_PROXY_URL")]
    pub rpc_proxy_url: String,
    #[serde(rename = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: String,
    #[serde(rename = "X402_TOKEN")]
    pub token: Address,
    #[serde(rename = "X402_OTHER_TOKEN")]
    pub other_token: Address,
    /// The EIP-2612 test token (no EIP-3009), paid through Permit2.
    #[serde(rename = "X402_PERMIT_TOKEN")]
    pub permit_token: Address,
    #[serde(rename = "X402_LANE_ADDRESSES")]
    pub lane_addresses: String,
    #[serde(rename = "X402_PAYMENTS_TABLE")]
    pub payments_table: String,
    #[serde(rename = "X402_LANES_TABLE")]
    pub lanes_table: String,
    #[serde(rename = "X402_SETTLE_DLQ_URL")]
    pub settle_dlq_url: String,
    pub payers: Vec<Account>,
    pub payee: Account,
    pub deployer: Account,
    pub lanes: Vec<Lane>,
}

/// A signer lane: its KMS key and the address that key signs for.
#[derive(Debug, Deserialize)]
pub struct Lane {
    #[serde(rename = "keyId")]
    pub key_id: String,
    pub address: Address,
}

#[derive(Debug, Deserialize)]
pub struct Account {
    pub address: Address,
    #[serde(rename = "privateKey", default)]
    pub private_key: Option<B256>,
}

fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the integration tests through infra/test.sh, which starts the local stack")
    })
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let path = format!("{}/stack.json", required_env("X402_STACK_DIR"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} is not the expected stack description: {e}"))
    })
}

/// The facilitator's base URL (the local server), e.g. `http://127.0.0.1:14020`.
pub fn base_url() -> String {
    required_env("X402_BASE_URL")
}

/// The facilitator's front ends under test: the local server, and the Lambda functions behind
/// the local stand-in for the HTTP API (infra/lambda-route.mjs), when infra/test.sh started it.
pub fn front_ends() -> Vec<(&'static str, String)> {
    let mut ends = vec![("local server", base_url())];
    if let Ok(url) = std::env::var("X402_LAMBDA_ROUTE_URL") {
        ends.push(("Lambda functions", url));
    }
    ends
}

pub const CHAIN_ID: u64 = 84532;
pub const NETWORK: &str = "eip155:84532";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn lambda_port() -> String {
    std::env::var("X402_LAMBDA_PORT")
        .expect("X402_LAMBDA_PORT is not set: run the tests through infra/test.sh, which starts cargo lambda watch")
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The facilitator's configuration, from the environment infra/test.sh exports.
pub fn config() -> Config {
    Config::from_env()
        .expect("the facilitator's configuration is in the environment (infra/test.sh)")
}

/// The AWS configuration the facilitator itself loads (moto's endpoint, from the environment).
pub async fn aws() -> aws_config::SdkConfig {
    facilitator::aws_config().await
}
