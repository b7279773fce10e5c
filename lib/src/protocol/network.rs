//! Network identifiers: CAIP-2 ids (`eip155:84532`) for x402 v2 and the legacy names
//! (`base-sepolia`) that v1 used, with the mapping between them for EVM chains.

use serde::{Deserialize, Serialize};

/// An EVM network as this facilitator knows it: its chain id and the two ways to write it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EvmNetwork {
    chain_id: u64,
    caip2: String,
    v1_name: Option<&'static str>,
}

/// Why a string is not an EVM network id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0:?} is not a CAIP-2 id of the form eip155:<chain id>")]
    NotEip155(String),
}

impl EvmNetwork {
    /// Parses `eip155:<decimal chain id>`.
    pub fn from_caip2(id: &str) -> Result<Self, NetworkError> {
        let chain_id = id
            .strip_prefix("eip155:")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .filter(|chain_id| *chain_id > 0)
            .ok_or_else(|| NetworkError::NotEip155(id.chars().take(100).collect()))?;
        Ok(Self::from_chain_id(chain_id))
    }

    /// The network for a chain id, with its v1 name when x402 v1 had one.
    pub fn from_chain_id(chain_id: u64) -> Self {
        EvmNetwork {
            chain_id,
            caip2: format!("eip155:{chain_id}"),
            v1_name: V1_NAMES
                .iter()
                .find(|(_, id)| *id == chain_id)
                .map(|(name, _)| *name),
        }
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The CAIP-2 id, as x402 v2 writes it.
    pub fn caip2(&self) -> &str {
        &self.caip2
    }

    /// The x402 v1 name, if v1 knew this chain.
    pub fn v1_name(&self) -> Option<&'static str> {
        self.v1_name
    }

    /// Whether `network`, as written in a payment of the given x402 version, names this chain.
    pub fn is_named(&self, version: X402Version, network: &str) -> bool {
        match version {
            X402Version::V1 => self.v1_name == Some(network),
            X402Version::V2 => self.caip2 == network,
        }
    }
}

/// The x402 protocol versions this facilitator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum X402Version {
    V1,
    V2,
}

impl From<X402Version> for u8 {
    fn from(v: X402Version) -> u8 {
        match v {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }
}

impl TryFrom<u8> for X402Version {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(X402Version::V1),
            2 => Ok(X402Version::V2),
            other => Err(format!("x402Version {other} is not supported (1 or 2)")),
        }
    }
}

/// v1 network names and their chain ids (x402-protocol.md §10.2).
const V1_NAMES: &[(&str, u64)] = &[
    ("ethereum", 1),
    ("sepolia", 11_155_111),
    ("abstract", 2741),
    ("abstract-testnet", 11_124),
    ("base-sepolia", 84_532),
    ("base", 8453),
    ("avalanche-fuji", 43_113),
    ("avalanche", 43_114),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("polygon", 137),
    ("polygon-amoy", 80_002),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41_923),
    ("skale-base-sepolia", 324_705_682),
    ("megaeth", 4326),
    ("monad", 143),
    ("stable", 988),
    ("stable-testnet", 2201),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caip2_and_knows_v1_names() {
        let n = EvmNetwork::from_caip2("eip155:84532").unwrap();
        assert_eq!(n.chain_id(), 84532);
        assert_eq!(n.v1_name(), Some("base-sepolia"));
        assert!(n.is_named(X402Version::V2, "eip155:84532"));
        assert!(n.is_named(X402Version::V1, "base-sepolia"));
        assert!(!n.is_named(X402Version::V1, "eip155:84532"));
        assert_eq!(
            EvmNetwork::from_caip2("eip155:31337").unwrap().v1_name(),
            None
        );
    }

    #[test]
    fn refuses_other_namespaces_and_junk() {
        for bad in [
            "eip155:",
            "eip155:0",
            "eip155:-1",
            "eip155:1a",
            "solana:abc",
            "base",
            "eip155:99999999999999999999",
        ] {
            assert!(EvmNetwork::from_caip2(bad).is_err(), "{bad}");
        }
    }
}
