//! The facilitator's configuration, read once at cold start from environment variables.
//!
//! The same variables drive the local stack, the Lambda functions and the SAM template
//! (see docs/configuration.md). Every error names the variable and says what was expected.

use std::time::Duration;

use alloy::primitives::Address;
use serde::Deserialize;

use crate::protocol::EvmNetwork;

mod rpc;

pub use rpc::{check_rpc_urls, parse_rpc_urls, redact_url, RpcSource};

/// Networks served: JSON list of `{network, rpcUrl | rpcUrls | rpcSecret, assets}`.
pub const NETWORKS_VAR: &str = "X402_NETWORKS";
/// Signer lanes: comma-separated KMS key ids, ARNs or aliases.
pub const LANE_KEYS_VAR: &str = "X402_LANE_KEYS";
/// Upper bound on one chain RPC request, in milliseconds.
pub const RPC_TIMEOUT_VAR: &str = "X402_RPC_TIMEOUT_MS";
/// Largest request body accepted, in bytes.
pub const MAX_BODY_VAR: &str = "X402_MAX_BODY_BYTES";
/// DynamoDB table of payments.
pub const PAYMENTS_TABLE_VAR: &str = "X402_PAYMENTS_TABLE";
/// DynamoDB table of signer lanes.
pub const LANES_TABLE_VAR: &str = "X402_LANES_TABLE";
/// SQS FIFO queue of settlements (settle function only).
pub const SETTLE_QUEUE_VAR: &str = "X402_SETTLE_QUEUE_URL";
/// When `/settle` answers at the latest, in milliseconds (under API Gateway's 29 s).
pub const SETTLE_DEADLINE_VAR: &str = "X402_SETTLE_DEADLINE_MS";
/// How often a settle follower re-reads its payment, in milliseconds.
pub const SETTLE_POLL_VAR: &str = "X402_SETTLE_POLL_MS";
/// How old /settle's simulation may be for the worker to sign with its gas instead of simulating
/// again, in milliseconds (0 = the worker always simulates again).
pub const SIMULATION_REUSE_VAR: &str = "X402_SIMULATION_REUSE_MS";
/// How long the worker reuses a fee estimate, in milliseconds (about a block; 0 = never).
pub const FEE_CACHE_VAR: &str = "X402_FEE_CACHE_MS";
/// Replay leaves records changed more recently than this to the live path, in milliseconds (0 allowed).
pub const REPLAY_MIN_AGE_VAR: &str = "X402_REPLAY_MIN_AGE_MS";
/// At most this many records per replay run.
pub const REPLAY_MAX_RECORDS_VAR: &str = "X402_REPLAY_MAX_RECORDS";
/// Replay replaces a transaction still unmined this long after it was sent, in milliseconds.
pub const REPLAY_BUMP_AFTER_VAR: &str = "X402_REPLAY_BUMP_AFTER_MS";
/// How many blocks back the search for an authorization's use looks (0: the whole chain).
pub const LOGS_LOOKBACK_VAR: &str = "X402_LOGS_LOOKBACK_BLOCKS";
/// `on` (the default) or `off`: whether payers that are contract wallets (ERC-1271) are accepted.
pub const CONTRACT_WALLETS_VAR: &str = "X402_CONTRACT_WALLETS";
/// `on` or `off` (the default): whether the worker signs a lane's new payments of one batch as a run
/// (docs/settlement.md, "A lane's run").
pub const LANE_RUNS_VAR: &str = "X402_LANE_RUNS";
/// `on` or `off` (the default): whether `/settle` signs a new payment itself when its lane is free,
/// instead of queueing it for the worker (docs/settlement.md, "Signing in /settle").
pub const SETTLE_SIGNS_VAR: &str = "X402_SETTLE_SIGNS";
/// `on` (the default) or `off`: whether `/settle`, sending a payment it signed, asks the node to
/// wait for the receipt in the same request (`eth_sendRawTransactionSync`, EIP-7966), falling back
/// to a send and receipt lookups where the node cannot (docs/settlement.md, "Signing in /settle").
pub const SEND_SYNC_VAR: &str = "X402_SEND_SYNC";
/// How long a lane's lease lasts, in milliseconds: what a signer that died holding it costs the
/// lane at most (docs/settlement.md, "The lane's lease").
pub const LANE_LEASE_VAR: &str = "X402_LANE_LEASE_MS";
/// The attempts the worker makes at a payment before it gives up on it (docs/settlement.md).
pub const WORKER_MAX_ATTEMPTS_VAR: &str = "X402_WORKER_MAX_ATTEMPTS";
/// How many of a contract-wallet payer's settlements may revert on chain before its contract-wallet
/// payments are refused (docs/security.md).
pub const PAYER_REVERT_LIMIT_VAR: &str = "X402_PAYER_REVERT_LIMIT";
/// How long such a payer is refused, in milliseconds.
pub const PAYER_REFUSAL_VAR: &str = "X402_PAYER_REFUSAL_MS";
/// The gas (whole native tokens, e.g. `0.005` ETH) a new lane needs on every network before replay
/// makes it active.
pub const LANE_ACTIVATION_VAR: &str = "X402_LANE_ACTIVATION_BALANCE";
/// Where a retired lane's gas may be swept: comma-separated addresses (worker).
pub const SWEEP_ADDRESSES_VAR: &str = "X402_SWEEP_ADDRESSES";
/// How long `/settle` reuses what it read of the lanes' states, in milliseconds (0: never).
pub const LANE_STATE_TTL_VAR: &str = "X402_LANE_STATE_TTL_MS";
/// Each API key's default rate limit, requests a second (`0`: keys without their own are not limited).
pub const KEY_RATE_LIMIT_VAR: &str = "X402_KEY_RATE_LIMIT";
/// Each API key's default burst.
pub const KEY_BURST_VAR: &str = "X402_KEY_BURST";
/// DynamoDB table of API keys (hashes). The authorizer reads it; the local server checks keys
/// only when it is set.
pub const API_KEYS_TABLE_VAR: &str = "X402_API_KEYS_TABLE";

const DEFAULT_SETTLE_DEADLINE: Duration = Duration::from_secs(25);
/// API Gateway's HTTP API integration timeout is 29 s (DESIGN I5); leave room to answer.
const MAX_SETTLE_DEADLINE: Duration = Duration::from_secs(28);
const DEFAULT_SETTLE_POLL: Duration = Duration::from_millis(250);
/// About a block on Base: the state /settle simulated against is at most a block old.
const DEFAULT_SIMULATION_REUSE: Duration = Duration::from_secs(2);
/// Long enough for a `Sign` and a write-ahead on a slow day; short enough that a signer that died
/// holding the lease stalls the lane for about a second (I10).
pub const DEFAULT_LANE_LEASE: Duration = Duration::from_secs(1);
/// Longer than `/settle`'s deadline, so replay never races a live follower or a busy worker.
const DEFAULT_REPLAY_MIN_AGE: Duration = Duration::from_secs(60);
const DEFAULT_REPLAY_MAX_RECORDS: usize = 500;
/// Minutes of blocks on a 2-second chain: a transaction still in the pool after this is stuck.
const DEFAULT_REPLAY_BUMP_AFTER: Duration = Duration::from_secs(120);

/// About five and a half hours of 2-second blocks: far beyond any payment's window, and within the
/// `eth_getLogs` range that RPC providers commonly allow (10,000 blocks).
const DEFAULT_LOGS_LOOKBACK: u64 = 10_000;
/// Five attempts of about five seconds each: a transient fault passes well within them, and a
/// payment that fails them all is not going to settle by retrying.
const DEFAULT_WORKER_MAX_ATTEMPTS: usize = 5;
/// Three reverts: one can be bad luck (the wallet's owner moved its funds in the same block), three
/// in a row are a wallet that passes simulation and fails on chain.
const DEFAULT_PAYER_REVERT_LIMIT: usize = 3;
const DEFAULT_PAYER_REFUSAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Ten seconds: a drain takes effect quickly enough for an operator, and a busy `/settle` instance
/// reads the lanes table a few times a minute.
pub const DEFAULT_LANE_STATE_TTL: Duration = Duration::from_secs(10);

const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// x402 bodies are 1–3 KiB; 64 KiB leaves room for extensions and refuses floods early.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything a function needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct Config {
    pub networks: Vec<NetworkConfig>,
    pub lane_keys: Vec<String>,
    pub rpc_timeout: Duration,
    pub max_body_bytes: usize,
    pub payments_table: String,
    pub lanes_table: String,
    /// Needed by the settle function only.
    pub settle_queue_url: Option<String>,
    pub settle_deadline: Duration,
    pub settle_poll: Duration,
    /// The worker signs with /settle's gas estimate when it is at most this old (else simulates).
    pub simulation_reuse: Duration,
    /// Replay: records younger than this (since their last change) are left to the live path.
    pub replay_min_age: Duration,
    /// Replay: the most records one run looks at.
    pub replay_max_records: usize,
    /// Replay: a transaction still unmined this long after it was sent is replaced with higher fees.
    pub replay_bump_after: Duration,
    /// How long the worker reuses a fee estimate (about a block; zero: never).
    pub fee_cache: Duration,
    /// How many blocks back the search for an authorization's use looks (0: the whole chain).
    pub logs_lookback: u64,
    /// The worker's attempts at one payment before it gives up on it.
    pub worker_max_attempts: u32,
    /// Whether contract-wallet payers (ERC-1271 signatures) are accepted.
    pub contract_wallets: bool,
    /// Whether the worker signs a lane's new payments of one batch as a run.
    pub lane_runs: bool,
    /// Whether `/settle` signs a new payment itself when its lane's lease is free.
    pub settle_signs: bool,
    /// Whether a send that waits for its receipt asks `eth_sendRawTransactionSync` first.
    pub send_sync: bool,
    /// How long a signer holds a lane's lease (`X402_LANE_LEASE_MS`).
    pub lane_lease: Duration,
    /// When a contract-wallet payer whose settlements revert on chain is refused.
    pub payer_reverts: RevertPolicy,
    /// The rate limit of an API key that has none of its own (`None`: not limited).
    pub key_limit: Option<crate::auth::KeyLimit>,
    /// How long `/settle` trusts what it read of the lanes' states.
    pub lane_state_ttl: Duration,
    /// Replay makes a `funding` lane active once it has this much gas (wei) on every network.
    pub lane_activation_wei: alloy::primitives::U256,
    /// Where the worker may sweep a retired lane's gas.
    pub sweep_addresses: Vec<Address>,
}

/// A contract wallet decides, when the settlement is mined, whether its signature is good, so it
/// can pass every simulation and still make the transaction revert, at the lane's expense. After
/// `limit` such reverts, each within `refuse_for` of the one before, the payer's contract-wallet
/// payments are refused until `refuse_for` has passed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevertPolicy {
    pub limit: u32,
    pub refuse_for: Duration,
}

impl Default for RevertPolicy {
    fn default() -> Self {
        RevertPolicy {
            limit: DEFAULT_PAYER_REVERT_LIMIT as u32,
            refuse_for: DEFAULT_PAYER_REFUSAL,
        }
    }
}

/// One EVM network this deployment serves.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub network: EvmNetwork,
    pub rpc: RpcSource,
    /// Tokens accepted on this network (EIP-3009 contracts).
    pub assets: Vec<Address>,
    /// The most the worker ever offers per unit of gas (`maxFeePerGas`, wei), first signature and
    /// fee bumps alike: a fee spike or a halted sequencer cannot make bumps compound past it.
    pub max_fee_per_gas: u128,
    /// The most gas one settlement may use: for a payer's own key, and for a contract wallet,
    /// whose code runs inside the transfer (`maxGas`, `maxGasContractWallet`).
    pub gas_caps: GasCaps,
    /// `uptoFacilitator`: the lane address advertised for `upto` payments on this network, which
    /// payers bind into their witness and whose lane alone settles them; `None`: no `upto` here.
    pub upto_facilitator: Option<Address>,
    /// `eip6492AllowedFactories`: the factories through which a payer's ERC-6492 wallet may be
    /// deployed when its payment settles; empty (the default): none, as in the reference.
    pub erc6492_factories: Vec<Address>,
}

/// The most gas one settlement may use, by kind of payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasCaps {
    /// A signature by the payer's own key: `transferWithAuthorization` is 60–90 thousand gas on
    /// USDC-like tokens, so 150 000 leaves room and still bounds a token that burns gas.
    pub eoa: u64,
    /// A contract wallet's signature, which the token checks by calling the wallet (ERC-1271).
    pub contract_wallet: u64,
    /// An ERC-6492 wallet's first payment: the factory deploys the wallet, then the token asks
    /// it, in one transaction through Multicall3.
    pub wallet_deployment: u64,
}

impl Default for GasCaps {
    fn default() -> Self {
        GasCaps {
            eoa: 150_000,
            contract_wallet: 300_000,
            wallet_deployment: 500_000,
        }
    }
}

/// 100 gwei: thousands of times what Base and other L2s charge, so it binds only when something
/// is wrong; set it per network (`maxFeePerGas` in `X402_NETWORKS`) to what a settlement may cost.
pub const DEFAULT_MAX_FEE_PER_GAS: u128 = 100_000_000_000;

/// A configuration value that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration variable {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NetworkEntry {
    network: String,
    #[serde(default)]
    rpc_url: Option<String>,
    #[serde(default)]
    rpc_urls: Option<Vec<String>>,
    #[serde(default)]
    rpc_secret: Option<String>,
    assets: Vec<String>,
    #[serde(default)]
    max_fee_per_gas: Option<String>,
    #[serde(default)]
    max_gas: Option<u64>,
    #[serde(default)]
    max_gas_contract_wallet: Option<u64>,
    #[serde(default)]
    max_gas_wallet_deployment: Option<u64>,
    #[serde(default)]
    upto_facilitator: Option<String>,
    #[serde(default)]
    eip6492_allowed_factories: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    /// It is longer than 60 lines because it is one struct literal, a line per setting, read in the
    /// order errors are reported.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        // Read in this order so that, of several bad variables, the same one is reported first.
        let networks = parse_networks(vars.get(NETWORKS_VAR).as_deref())?;
        let rpc_timeout = vars.millis(RPC_TIMEOUT_VAR, DEFAULT_RPC_TIMEOUT)?;
        let max_body_bytes = vars.count(MAX_BODY_VAR, DEFAULT_MAX_BODY_BYTES)?;
        let settle_deadline = vars.millis(SETTLE_DEADLINE_VAR, DEFAULT_SETTLE_DEADLINE)?;
        let replay_min_age = Duration::from_millis(vars.number(
            REPLAY_MIN_AGE_VAR,
            DEFAULT_REPLAY_MIN_AGE.as_millis() as u64,
            "milliseconds (0 or more)",
        )?);
        check_timing(settle_deadline, replay_min_age)?;
        Ok(Config {
            networks,
            lane_keys: vars.list(LANE_KEYS_VAR),
            rpc_timeout,
            max_body_bytes,
            payments_table: vars
                .get(PAYMENTS_TABLE_VAR)
                .unwrap_or_else(|| "x402-payments".to_owned()),
            lanes_table: vars
                .get(LANES_TABLE_VAR)
                .unwrap_or_else(|| "x402-lanes".to_owned()),
            settle_queue_url: vars.get(SETTLE_QUEUE_VAR).filter(|u| !u.is_empty()),
            settle_deadline,
            settle_poll: vars.millis(SETTLE_POLL_VAR, DEFAULT_SETTLE_POLL)?,
            simulation_reuse: match vars.get(SIMULATION_REUSE_VAR).as_deref().map(str::trim) {
                Some("0") => Duration::ZERO,
                _ => vars.millis(SIMULATION_REUSE_VAR, DEFAULT_SIMULATION_REUSE)?,
            },
            // 0 turns the cache off; otherwise positive milliseconds, like the other durations.
            fee_cache: match vars.get(FEE_CACHE_VAR).as_deref().map(str::trim) {
                Some("0") => Duration::ZERO,
                _ => vars.millis(FEE_CACHE_VAR, Duration::from_secs(1))?,
            },
            replay_min_age,
            replay_max_records: vars.count(REPLAY_MAX_RECORDS_VAR, DEFAULT_REPLAY_MAX_RECORDS)?,
            replay_bump_after: vars.millis(REPLAY_BUMP_AFTER_VAR, DEFAULT_REPLAY_BUMP_AFTER)?,
            logs_lookback: vars.number(
                LOGS_LOOKBACK_VAR,
                DEFAULT_LOGS_LOOKBACK,
                "a number of blocks (0 for the whole chain)",
            )?,
            contract_wallets: vars.switch(CONTRACT_WALLETS_VAR, true)?,
            lane_runs: vars.switch(LANE_RUNS_VAR, false)?,
            settle_signs: vars.switch(SETTLE_SIGNS_VAR, false)?,
            send_sync: vars.switch(SEND_SYNC_VAR, true)?,
            lane_lease: vars.millis(LANE_LEASE_VAR, DEFAULT_LANE_LEASE)?,
            payer_reverts: revert_policy(&vars)?,
            key_limit: key_limit(&vars)?,
            lane_activation_wei: native_amount(
                LANE_ACTIVATION_VAR,
                vars.get(LANE_ACTIVATION_VAR).as_deref().unwrap_or("0.005"),
            )?,
            lane_state_ttl: vars.millis_or_zero(LANE_STATE_TTL_VAR, DEFAULT_LANE_STATE_TTL)?,
            sweep_addresses: addresses(SWEEP_ADDRESSES_VAR, vars.list(SWEEP_ADDRESSES_VAR))?,
            worker_max_attempts: u32::try_from(
                vars.count(WORKER_MAX_ATTEMPTS_VAR, DEFAULT_WORKER_MAX_ATTEMPTS)?,
            )
            .unwrap_or(u32::MAX),
        })
    }

    /// The settle queue's URL, or the error that says it must be set.
    pub fn require_settle_queue(&self) -> Result<&str, ConfigError> {
        self.settle_queue_url.as_deref().ok_or_else(|| ConfigError {
            var: SETTLE_QUEUE_VAR,
            problem: "missing; the settle function needs the SQS FIFO queue's URL".into(),
        })
    }
}

/// The API keys table, when `X402_API_KEYS_TABLE` names one. Read on its own, not in [`Config`]:
/// the authorizer needs nothing else, not even the networks.
pub fn api_keys_table(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    lookup(API_KEYS_TABLE_VAR)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn positive(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError {
            var,
            problem: format!("expected a positive integer, got {value:?}"),
        })
}

/// The environment, one variable at a time, each read into its type with an error that names it.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
    }

    /// Positive milliseconds; `default` when unset.
    fn millis(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(ms) => positive(var, &ms).map(Duration::from_millis),
        }
    }

    /// Milliseconds where 0 means "never reuse"; `default` when unset.
    fn millis_or_zero(
        &self,
        var: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let ms = self.number(var, default.as_millis() as u64, "milliseconds (0 or more)")?;
        Ok(Duration::from_millis(ms))
    }

    /// A positive count; `default` when unset.
    fn count(&self, var: &'static str, default: usize) -> Result<usize, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(n) => positive(var, &n).map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    /// A number where 0 means something (`expected` says what); `default` when unset.
    fn number(&self, var: &'static str, default: u64, expected: &str) -> Result<u64, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(n) => n.trim().parse().map_err(|_| ConfigError {
                var,
                problem: format!("expected {expected}, got {n:?}"),
            }),
        }
    }

    /// `on` or `off`; `default` when unset.
    fn switch(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).as_deref().map(str::trim) {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(ConfigError {
                var,
                problem: format!("expected on or off, got {other:?}"),
            }),
        }
    }

    /// A comma-separated list, blanks dropped; empty when unset.
    fn list(&self, var: &str) -> Vec<String> {
        self.get(var)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A decimal amount of whole native tokens (`0.005`, `1`) in wei: up to 18 decimals, no exponent.
fn native_amount(var: &'static str, text: &str) -> Result<alloy::primitives::U256, ConfigError> {
    alloy::primitives::utils::parse_ether(text.trim()).map_err(|_| ConfigError {
        var,
        problem: format!("expected an amount of native tokens like 0.005, got {text:?}"),
    })
}

/// A list of addresses, each checked.
fn addresses(var: &'static str, list: Vec<String>) -> Result<Vec<Address>, ConfigError> {
    list.iter()
        .map(|a| {
            crate::evm::hex::address(a).ok_or_else(|| ConfigError {
                var,
                problem: format!("{a:?} is not an address (0x and 40 hex digits)"),
            })
        })
        .collect()
}

/// When a contract-wallet payer whose settlements revert is refused.
fn revert_policy(
    vars: &Vars<impl Fn(&str) -> Option<String>>,
) -> Result<RevertPolicy, ConfigError> {
    Ok(RevertPolicy {
        limit: u32::try_from(vars.count(PAYER_REVERT_LIMIT_VAR, DEFAULT_PAYER_REVERT_LIMIT)?)
            .unwrap_or(u32::MAX),
        refuse_for: vars.millis(PAYER_REFUSAL_VAR, DEFAULT_PAYER_REFUSAL)?,
    })
}

/// The default per-key limit: `X402_KEY_RATE_LIMIT` a second (20; `0` turns it off) with bursts of
/// `X402_KEY_BURST` (twice the rate).
fn key_limit(
    vars: &Vars<impl Fn(&str) -> Option<String>>,
) -> Result<Option<crate::auth::KeyLimit>, ConfigError> {
    let rate = vars.number(KEY_RATE_LIMIT_VAR, 20, "requests a second (0 for no limit)")?;
    if rate == 0 {
        return Ok(None);
    }
    let per_second = u32::try_from(rate).unwrap_or(u32::MAX);
    let burst = vars.count(KEY_BURST_VAR, per_second.saturating_mul(2) as usize)?;
    Ok(Some(crate::auth::KeyLimit {
        per_second,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
    }))
}

/// The settle deadline fits API Gateway, and replay leaves a live /settle alone.
fn check_timing(settle_deadline: Duration, replay_min_age: Duration) -> Result<(), ConfigError> {
    if settle_deadline > MAX_SETTLE_DEADLINE {
        return Err(ConfigError {
            var: SETTLE_DEADLINE_VAR,
            problem: format!(
                "{settle_deadline:?} is over {MAX_SETTLE_DEADLINE:?}: API Gateway gives up at 29 s"
            ),
        });
    }
    // Replay must not take a record from under a /settle that is still following it: a
    // replacement it asked for would then go unseen by that follower until its deadline. 0 turns
    // the grace off altogether, for tests that replay at once.
    if !replay_min_age.is_zero() && replay_min_age <= settle_deadline {
        return Err(ConfigError {
            var: REPLAY_MIN_AGE_VAR,
            problem: format!(
                "{replay_min_age:?} is not above {SETTLE_DEADLINE_VAR} ({settle_deadline:?}): replay could race a live /settle; raise it, or set 0 only in tests"
            ),
        });
    }
    Ok(())
}

fn parse_networks(raw: Option<&str>) -> Result<Vec<NetworkConfig>, ConfigError> {
    let err = |problem: String| ConfigError {
        var: NETWORKS_VAR,
        problem,
    };
    let raw = raw.ok_or_else(|| {
        err(r#"missing; set it to a JSON list such as [{"network":"eip155:84532","rpcUrl":"https://…","assets":["0x036C…"]}]"#.into())
    })?;
    let entries: Vec<NetworkEntry> =
        serde_json::from_str(raw).map_err(|e| err(format!("not valid JSON: {e}")))?;
    if entries.is_empty() {
        return Err(err(
            "the list is empty: configure at least one network".into()
        ));
    }
    let mut networks: Vec<NetworkConfig> = Vec::with_capacity(entries.len());
    for entry in entries {
        let network = network_entry(entry)?;
        if networks.iter().any(|n| n.network == network.network) {
            return Err(err(format!(
                "{} is configured twice",
                network.network.caip2()
            )));
        }
        networks.push(network);
    }
    Ok(networks)
}

/// One entry of the networks list: a known network, exactly one RPC source, at least one asset.
fn network_entry(entry: NetworkEntry) -> Result<NetworkConfig, ConfigError> {
    let err = |problem: String| ConfigError {
        var: NETWORKS_VAR,
        problem,
    };
    let name = &entry.network;
    let network = EvmNetwork::from_caip2(name).map_err(|e| err(e.to_string()))?;
    let (max_fee_per_gas, gas_caps) = spending_limits(&entry)?;
    let rpc = rpc_source(name, entry.rpc_url, entry.rpc_urls, entry.rpc_secret).map_err(err)?;
    if entry.assets.is_empty() {
        return Err(err(format!(
            "{name}: assets is empty; list the token addresses to accept"
        )));
    }
    let assets = entry
        .assets
        .iter()
        .map(|a| {
            a.parse::<Address>()
                .map_err(|_| err(format!("{name}: asset {a:?} is not an address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let upto_facilitator = match &entry.upto_facilitator {
        None => None,
        Some(a) => Some(a.parse::<Address>().map_err(|_| {
            err(format!(
                "{name}: uptoFacilitator {a:?} is not an address (one of the lanes')"
            ))
        })?),
    };
    let erc6492_factories =
        erc6492_factories(name, &entry.eip6492_allowed_factories).map_err(err)?;
    Ok(NetworkConfig {
        network,
        rpc,
        assets,
        max_fee_per_gas,
        gas_caps,
        upto_facilitator,
        erc6492_factories,
    })
}

/// `eip6492AllowedFactories`: distinct addresses, none of them zero (an ERC-6492 wrapper naming
/// the zero address carries no deployment).
fn erc6492_factories(name: &str, raw: &[String]) -> Result<Vec<Address>, String> {
    let mut factories: Vec<Address> = Vec::with_capacity(raw.len());
    for a in raw {
        let factory = a
            .parse::<Address>()
            .ok()
            .filter(|f| !f.is_zero())
            .ok_or_else(|| {
                format!("{name}: eip6492AllowedFactories entry {a:?} is not a non-zero address")
            })?;
        if factories.contains(&factory) {
            return Err(format!(
                "{name}: eip6492AllowedFactories lists {factory} twice"
            ));
        }
        factories.push(factory);
    }
    Ok(factories)
}

/// The entry's RPC source: exactly one of `rpcUrl` (one URL), `rpcUrls` (several, tried in order)
/// and `rpcSecret`.
fn rpc_source(
    name: &str,
    url: Option<String>,
    urls: Option<Vec<String>>,
    secret: Option<String>,
) -> Result<RpcSource, String> {
    let urls = match (url, urls, secret) {
        (Some(url), None, None) => vec![url],
        (None, Some(urls), None) => urls,
        (None, None, Some(secret)) if !secret.trim().is_empty() => {
            return Ok(RpcSource::Secret(secret))
        }
        _ => {
            return Err(format!(
                "{name}: give exactly one of rpcUrl, rpcUrls and rpcSecret"
            ))
        }
    };
    check_rpc_urls(urls)
        .map(RpcSource::Urls)
        .map_err(|problem| format!("{name}: {problem}"))
}

/// What one settlement on the entry's network may spend: per unit of gas, and in gas.
fn spending_limits(entry: &NetworkEntry) -> Result<(u128, GasCaps), ConfigError> {
    let err = |problem: String| ConfigError {
        var: NETWORKS_VAR,
        problem,
    };
    let name = &entry.network;
    let max_fee_per_gas = match &entry.max_fee_per_gas {
        None => DEFAULT_MAX_FEE_PER_GAS,
        Some(wei) => wei.parse().ok().filter(|w| *w > 0).ok_or_else(|| {
            err(format!(
                "{name}: maxFeePerGas {wei:?} is not a positive amount of wei (a decimal string)"
            ))
        })?,
    };
    let defaults = GasCaps::default();
    let gas_caps = GasCaps {
        eoa: entry.max_gas.unwrap_or(defaults.eoa),
        contract_wallet: entry
            .max_gas_contract_wallet
            .unwrap_or(defaults.contract_wallet),
        wallet_deployment: entry
            .max_gas_wallet_deployment
            .unwrap_or(defaults.wallet_deployment),
    };
    if [
        gas_caps.eoa,
        gas_caps.contract_wallet,
        gas_caps.wallet_deployment,
    ]
    .iter()
    .any(|cap| *cap < 21_000)
    {
        return Err(err(format!(
            "{name}: maxGas, maxGasContractWallet and maxGasWalletDeployment must be at least 21000 (a transaction's own cost)"
        )));
    }
    Ok((max_fee_per_gas, gas_caps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const NETS: &str = r#"[{"network":"eip155:84532","rpcUrl":"http://127.0.0.1:8545","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}]"#;

    #[test]
    fn reads_a_minimal_configuration() {
        let c = Config::from_lookup(lookup(&[
            (NETWORKS_VAR, NETS),
            (LANE_KEYS_VAR, "alias/a, alias/b"),
        ]))
        .unwrap();
        assert_eq!(c.networks.len(), 1);
        assert_eq!(c.networks[0].network.chain_id(), 84532);
        assert_eq!(c.lane_keys, vec!["alias/a", "alias/b"]);
        assert_eq!(c.rpc_timeout, DEFAULT_RPC_TIMEOUT);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(e.var, NETWORKS_VAR);
        let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS), (RPC_TIMEOUT_VAR, "soon")]))
            .unwrap_err();
        assert_eq!(e.var, RPC_TIMEOUT_VAR);
        for bad in [
            "[]",
            "{",
            r#"[{"network":"base","rpcUrl":"http://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}]"#,
            r#"[{"network":"eip155:1","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}]"#,
            r#"[{"network":"eip155:1","rpcUrl":"ftp://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}]"#,
            r#"[{"network":"eip155:1","rpcUrl":"http://x","assets":[]}]"#,
            r#"[{"network":"eip155:1","rpcUrl":"http://x","assets":["0x12"]}]"#,
            r#"[{"network":"eip155:1","rpcUrl":"http://x","rpcSecret":"s","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}]"#,
        ] {
            let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, bad)])).unwrap_err();
            assert_eq!(e.var, NETWORKS_VAR, "{bad}");
        }
    }

    #[test]
    fn payers_whose_settlements_revert_are_refused_after_three_for_a_day_by_default() {
        let with = |vars: &[(&'static str, &'static str)]| {
            let mut all = vec![(NETWORKS_VAR, NETS)];
            all.extend_from_slice(vars);
            Config::from_lookup(lookup(&all))
        };
        let default = with(&[]).unwrap().payer_reverts;
        assert_eq!(default.limit, 3);
        assert_eq!(default.refuse_for, Duration::from_secs(86_400));
        let set = with(&[(PAYER_REVERT_LIMIT_VAR, "5"), (PAYER_REFUSAL_VAR, "60000")])
            .unwrap()
            .payer_reverts;
        assert_eq!((set.limit, set.refuse_for), (5, Duration::from_secs(60)));
        for (var, bad) in [(PAYER_REVERT_LIMIT_VAR, "0"), (PAYER_REFUSAL_VAR, "soon")] {
            assert_eq!(with(&[(var, bad)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn contract_wallets_are_on_unless_turned_off() {
        let with = |value: &'static str| {
            Config::from_lookup(lookup(&[
                (NETWORKS_VAR, NETS),
                (CONTRACT_WALLETS_VAR, value),
            ]))
        };
        let default = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert!(default.contract_wallets);
        assert!(with("on").unwrap().contract_wallets);
        assert!(!with(" off ").unwrap().contract_wallets);
        assert_eq!(with("no").unwrap_err().var, CONTRACT_WALLETS_VAR);
    }

    #[test]
    fn max_fee_per_gas_is_positive_wei_with_a_default() {
        let default = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert_eq!(default.networks[0].max_fee_per_gas, DEFAULT_MAX_FEE_PER_GAS);
        let capped = r#"[{"network":"eip155:1","rpcUrl":"http://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"],"maxFeePerGas":"2000000000"}]"#;
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, capped)])).unwrap();
        assert_eq!(c.networks[0].max_fee_per_gas, 2_000_000_000);
        for bad in ["0", "-1", "2 gwei", ""] {
            let raw = capped.replace("2000000000", bad);
            let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, raw.as_str())])).unwrap_err();
            assert!(e.problem.contains("maxFeePerGas"), "{bad}: {}", e.problem);
        }
    }

    #[test]
    fn upto_is_served_only_where_a_network_names_its_signer() {
        let default = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert_eq!(default.networks[0].upto_facilitator, None);
        let upto = r#"[{"network":"eip155:1","rpcUrl":"http://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"],"uptoFacilitator":"0x8E872a02C297bF522313d36e9d00fC6b2FF4Ff13"}]"#;
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, upto)])).unwrap();
        assert_eq!(
            c.networks[0].upto_facilitator,
            Some(alloy::primitives::address!(
                "0x8E872a02C297bF522313d36e9d00fC6b2FF4Ff13"
            ))
        );
        let bad = upto.replace("0x8E872a02C297bF522313d36e9d00fC6b2FF4Ff13", "lane-1");
        let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, bad.as_str())])).unwrap_err();
        assert!(e.problem.contains("uptoFacilitator"), "{}", e.problem);
    }

    #[test]
    fn erc6492_factories_are_none_unless_listed() {
        let default = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert!(default.networks[0].erc6492_factories.is_empty());
        let f = "0x0000000000000000000000000000000000006492";
        let listed = format!(
            r#"[{{"network":"eip155:1","rpcUrl":"http://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"],"eip6492AllowedFactories":["{f}"],"maxGasWalletDeployment":400000}}]"#
        );
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, listed.as_str())])).unwrap();
        assert_eq!(
            c.networks[0].erc6492_factories,
            vec![f.parse::<Address>().unwrap()]
        );
        assert_eq!(c.networks[0].gas_caps.wallet_deployment, 400_000);
        for (bad, says) in [
            (format!(r#""{f}","{f}""#), "twice"),
            (
                r#""0x0000000000000000000000000000000000000000""#.into(),
                "non-zero",
            ),
            (r#""factory""#.into(), "non-zero"),
        ] {
            let raw = listed.replace(&format!(r#""{f}""#), &bad);
            let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, raw.as_str())])).unwrap_err();
            assert!(e.problem.contains(says), "{bad}: {}", e.problem);
        }
    }

    #[test]
    fn gas_caps_have_defaults_and_a_floor() {
        let default = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert_eq!(default.networks[0].gas_caps, GasCaps::default());
        let capped = r#"[{"network":"eip155:1","rpcUrl":"http://x","assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"],"maxGas":100000,"maxGasContractWallet":200000}]"#;
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, capped)])).unwrap();
        assert_eq!(
            c.networks[0].gas_caps,
            GasCaps {
                eoa: 100_000,
                contract_wallet: 200_000,
                wallet_deployment: 500_000
            }
        );
        let too_low = capped.replace("100000", "20000");
        let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, too_low.as_str())])).unwrap_err();
        assert!(e.problem.contains("21000"), "{}", e.problem);
    }

    #[test]
    fn replay_tunables() {
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert_eq!(
            (c.replay_min_age, c.replay_max_records, c.replay_bump_after),
            (Duration::from_secs(60), 500, Duration::from_secs(120))
        );
        let c = Config::from_lookup(lookup(&[
            (NETWORKS_VAR, NETS),
            (REPLAY_MIN_AGE_VAR, "0"),
            (REPLAY_MAX_RECORDS_VAR, "20"),
            (REPLAY_BUMP_AFTER_VAR, "30000"),
        ]))
        .unwrap();
        assert_eq!(
            (c.replay_min_age, c.replay_max_records, c.replay_bump_after),
            (Duration::ZERO, 20, Duration::from_secs(30))
        );
        // The grace must outlast the settle deadline (or be 0).
        let e = Config::from_lookup(lookup(&[
            (NETWORKS_VAR, NETS),
            (SETTLE_DEADLINE_VAR, "20000"),
            (REPLAY_MIN_AGE_VAR, "20000"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, REPLAY_MIN_AGE_VAR);
        assert!(e.problem.contains(SETTLE_DEADLINE_VAR), "{}", e.problem);
        let c = Config::from_lookup(lookup(&[
            (NETWORKS_VAR, NETS),
            (SETTLE_DEADLINE_VAR, "20000"),
            (REPLAY_MIN_AGE_VAR, "20001"),
        ]))
        .unwrap();
        assert_eq!(c.replay_min_age, Duration::from_millis(20_001));
        for (var, bad) in [
            (REPLAY_MIN_AGE_VAR, "soon"),
            (REPLAY_MAX_RECORDS_VAR, "0"),
            (REPLAY_BUMP_AFTER_VAR, "-1"),
        ] {
            let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS), (var, bad)])).unwrap_err();
            assert_eq!(e.var, var);
        }
    }

    #[test]
    fn the_fee_cache_defaults_to_a_block_and_zero_turns_it_off() {
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS)])).unwrap();
        assert_eq!(c.fee_cache, Duration::from_secs(1));
        let c = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS), (FEE_CACHE_VAR, "0")])).unwrap();
        assert_eq!(c.fee_cache, Duration::ZERO);
        let c =
            Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS), (FEE_CACHE_VAR, "2000")])).unwrap();
        assert_eq!(c.fee_cache, Duration::from_secs(2));
        let e = Config::from_lookup(lookup(&[(NETWORKS_VAR, NETS), (FEE_CACHE_VAR, "a block")]))
            .unwrap_err();
        assert_eq!(e.var, FEE_CACHE_VAR);
    }

    #[test]
    fn a_network_takes_one_rpc_url_a_list_or_a_secret() {
        let with = |rpc: &str| {
            let raw = format!(
                r#"[{{"network":"eip155:1",{rpc},"assets":["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]}}]"#
            );
            Config::from_lookup(|k| (k == NETWORKS_VAR).then(|| raw.clone()))
                .map(|c| format!("{:?}", c.networks[0].rpc))
        };
        assert_eq!(
            with(r#""rpcUrl":"http://a:1""#).unwrap(),
            "Urls(http://a:1)"
        );
        assert_eq!(
            with(r#""rpcUrls":["http://a:1","https://b/KEY"]"#).unwrap(),
            "Urls(http://a:1, https://b/…)"
        );
        assert_eq!(
            with(r#""rpcSecret":"x402/rpc/a""#).unwrap(),
            "Secret(x402/rpc/a)"
        );
        for bad in [
            r#""rpcUrls":[]"#,
            r#""rpcUrls":["http://a:1","http://a:1"]"#,
            r#""rpcUrls":["http://a:1","ws://b/KEY"]"#,
            r#""rpcUrl":"http://a:1","rpcUrls":["http://b:1"]"#,
            r#""rpcUrls":["http://b:1"],"rpcSecret":"s""#,
            r#""rpcSecret":" ""#,
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.var, NETWORKS_VAR, "{bad}");
            assert!(!e.problem.contains("KEY"), "{bad}: {}", e.problem);
        }
    }
}
