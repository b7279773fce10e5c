//! The signer lanes' operator tool (docs/runbook.md, "Signer lanes"): lists each configured lane
//! with its address, state, next nonce, open payments and gas on every network, and moves a lane
//! through `funding → active → draining → retired`. It reads the same variables as the functions
//! (`X402_NETWORKS`, `X402_LANE_KEYS`, `X402_PAYMENTS_TABLE`, `X402_LANES_TABLE`) and the usual
//! AWS ones; it calls KMS only for public keys, never `Sign`.
//!
//!   cargo run --release -p lanes -- list
//!   cargo run --release -p lanes -- activate|drain|retire <lane>
//!   cargo run --release -p lanes -- sweep <lane> <address>
//!
//! `sweep` asks the worker (the only signer) to send a retired lane's gas, on every network, to an
//! address among `X402_SWEEP_ADDRESSES`; it needs `X402_SETTLE_QUEUE_URL`.
//!
//! `<lane>` is a lane's KMS key id, its address, or its position in `X402_LANE_KEYS` (0, 1, …).

use std::collections::HashMap;

use facilitator::{
    config::Config,
    evm::Chain,
    signer::LaneSigner,
    store::{LaneState, OpenEntry, OpenFilter, Store},
};

/// A state change an operator may ask for: from which states, to which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    from: &'static [LaneState],
    to: LaneState,
}

/// The moves by command (pure). Activating a draining lane undoes a drain; retiring needs the
/// lane drained first, so that no payment is still on its way through it.
fn move_for(command: &str) -> Option<Move> {
    use LaneState::*;
    Some(match command {
        "activate" => Move {
            from: &[Funding, Draining],
            to: Active,
        },
        "drain" => Move {
            from: &[Funding, Active],
            to: Draining,
        },
        "retire" => Move {
            from: &[Draining],
            to: Retired,
        },
        _ => return None,
    })
}

/// The configured lane `which` names (pure).
fn find_lane<'a>(which: &str, keys: &'a [String], addresses: &[String]) -> Option<&'a String> {
    if let Ok(index) = which.parse::<usize>() {
        return keys.get(index);
    }
    keys.iter()
        .zip(addresses)
        .find(|(key, address)| *key == which || address.eq_ignore_ascii_case(which))
        .map(|(key, _)| key)
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("lanes: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let config = Config::from_env()?;
    let aws = facilitator::aws_config().await;
    let store = Store::from_config(&config, &aws);
    let kms = aws_sdk_kms::Client::new(&aws);
    let mut addresses = Vec::new();
    for key in &config.lane_keys {
        let signer = LaneSigner::connect(kms.clone(), key.clone()).await?;
        addresses.push(format!("{:#x}", signer.address()));
    }
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] => list(&config, &aws, &store, &addresses).await,
        [command, which] if move_for(command).is_some() => {
            let lane = find_lane(which, &config.lane_keys, &addresses)
                .ok_or_else(|| format!("no configured lane {which:?} (X402_LANE_KEYS)"))?;
            change(&store, lane, command).await
        }
        ["sweep", which, to] => {
            let lane = find_lane(which, &config.lane_keys, &addresses)
                .ok_or_else(|| format!("no configured lane {which:?} (X402_LANE_KEYS)"))?;
            sweep(&config, &aws, &store, lane, to).await
        }
        _ => Err(
            "usage: lanes list | lanes activate|drain|retire <lane> | lanes sweep <lane> <address>"
                .into(),
        ),
    }
}

/// Open payments by lane, from the index replay reads.
async fn open_by_lane(store: &Store) -> Result<HashMap<String, usize>, Failure> {
    let mut counts = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .open_records(u64::MAX, &OpenFilter::Any, 100, after.as_ref())
            .await?;
        for entry in &page.entries {
            if let OpenEntry::Record(record) = entry {
                *counts.entry(record.lane.clone()).or_insert(0) += 1;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(counts),
        }
    }
}

async fn list(
    config: &Config,
    aws: &aws_config::SdkConfig,
    store: &Store,
    addresses: &[String],
) -> Result<(), Failure> {
    let states = store.lane_states(&config.lane_keys).await?;
    let open = open_by_lane(store).await?;
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let chains: Vec<(String, Chain)> = config
        .networks
        .iter()
        .map(|n| {
            let chain = Chain::new(n.rpc.clone(), Some(secrets.clone()), config.rpc_timeout);
            (n.network.caip2().to_owned(), chain)
        })
        .collect();
    println!(
        "{:<3} {:<38} {:<42} {:<9} {:>5} {:>5}  gas",
        "#", "key", "address", "state", "nonce", "open"
    );
    for (index, (key, address)) in config.lane_keys.iter().zip(addresses).enumerate() {
        let state = states.get(key).copied().unwrap_or(LaneState::Funding);
        let mut nonces = Vec::new();
        let mut gas = Vec::new();
        for (network, chain) in &chains {
            nonces.push(store.lane_next_nonce(key, network).await?.to_string());
            let balance = match address.parse() {
                Ok(address) => match chain.balance(address).await {
                    // Display only: f64 keeps far more digits than an operator reads here.
                    Ok(wei) => format!(
                        "{:.6}",
                        u128::try_from(wei).unwrap_or(u128::MAX) as f64 / 1e18
                    ),
                    Err(e) => format!("unreadable ({e})"),
                },
                Err(_) => "?".to_owned(),
            };
            gas.push(format!("{network}: {balance}"));
        }
        let open = open.get(key).copied().unwrap_or(0);
        println!(
            "{index:<3} {key:<38} {address:<42} {:<9} {:>5} {open:>5}  {}",
            state.as_str(),
            nonces.join("/"),
            gas.join(", ")
        );
    }
    Ok(())
}

/// Queues a sweep of a retired lane to `to`, after the checks the worker will make again.
async fn sweep(
    config: &Config,
    aws: &aws_config::SdkConfig,
    store: &Store,
    lane: &str,
    to: &str,
) -> Result<(), Failure> {
    let to =
        facilitator::evm::hex::address(to).ok_or_else(|| format!("{to:?} is not an address"))?;
    if !config.sweep_addresses.contains(&to) {
        return Err(
            format!("{to:#x} is not in X402_SWEEP_ADDRESSES; the worker would refuse it").into(),
        );
    }
    let state = store.lane_states(&[lane.to_owned()]).await?;
    if state.get(lane) != Some(&LaneState::Retired) {
        return Err(format!(
            "lane {lane} is not retired: drain it, wait for its payments, retire it"
        )
        .into());
    }
    let queue = facilitator::queue::Queue::new(
        aws_sdk_sqs::Client::new(aws),
        config.require_settle_queue()?.to_owned(),
    );
    queue.request_sweep(lane, to).await?;
    println!("lanes: asked the worker to sweep {lane} to {to:#x}; lanes list shows the balance once mined");
    Ok(())
}

async fn change(store: &Store, lane: &str, command: &str) -> Result<(), Failure> {
    let Some(wanted) = move_for(command) else {
        return Err(format!("unknown command {command}").into());
    };
    if wanted.to == LaneState::Retired {
        let open = open_by_lane(store).await?.get(lane).copied().unwrap_or(0);
        if open > 0 {
            return Err(format!(
                "lane {lane} still has {open} open payments; wait until replay has finished them (lanes list)"
            )
            .into());
        }
    }
    if store.set_lane_state(lane, wanted.from, wanted.to).await? {
        println!("lanes: {lane} is {}", wanted.to.as_str());
        return Ok(());
    }
    let now = store
        .lane_states(&[lane.to_owned()])
        .await?
        .get(lane)
        .copied()
        .unwrap_or(LaneState::Funding);
    let from: Vec<&str> = wanted.from.iter().map(|s| s.as_str()).collect();
    Err(format!(
        "lane {lane} is {}; {command} moves a lane from {} only",
        now.as_str(),
        from.join(" or ")
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_needs_a_drained_lane_and_activating_undoes_a_drain() {
        use LaneState::*;
        assert_eq!(move_for("retire").unwrap().from, &[Draining]);
        assert_eq!(move_for("activate").unwrap().from, &[Funding, Draining]);
        assert_eq!(move_for("drain").unwrap().to, Draining);
        assert_eq!(move_for("delete"), None);
    }

    #[test]
    fn a_lane_is_named_by_key_address_or_position() {
        let keys = vec!["key-a".to_owned(), "key-b".to_owned()];
        let addresses = vec!["0xAa".to_owned(), "0xbb".to_owned()];
        assert_eq!(find_lane("1", &keys, &addresses), Some(&keys[1]));
        assert_eq!(find_lane("key-a", &keys, &addresses), Some(&keys[0]));
        assert_eq!(find_lane("0xBB", &keys, &addresses), Some(&keys[1]));
        assert_eq!(find_lane("7", &keys, &addresses), None);
        assert_eq!(find_lane("key-c", &keys, &addresses), None);
    }
}
