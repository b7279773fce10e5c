//! What the EVM unit tests share: test keys, their addresses, signing a digest the way a wallet
//! does, and a scheme whose chain is never reached (the local checks need none).

use std::time::Duration;

use alloy::primitives::{keccak256, Address, Bytes, B256};
use secp256k1::{Message, Secp256k1, SecretKey};

use crate::{
    config::RpcSource,
    evm::{Chain, ExactEvm},
    protocol::EvmNetwork,
};

/// The key whose 32 bytes are all `byte`.
pub fn key(byte: u8) -> SecretKey {
    SecretKey::from_byte_array([byte; 32]).unwrap()
}

pub fn address_of(key: &SecretKey) -> Address {
    let public = key.public_key(&Secp256k1::new()).serialize_uncompressed();
    Address::from_slice(&keccak256(&public[1..])[12..])
}

/// Signs `digest` and returns `r ‖ s ‖ v` with v = 27/28, as wallets send it.
pub fn sign_digest(digest: B256, key: &SecretKey) -> Bytes {
    let signature = Secp256k1::new().sign_ecdsa_recoverable(Message::from_digest(digest.0), key);
    let (id, compact) = signature.serialize_compact();
    let mut bytes = compact.to_vec();
    bytes.push(27 + i32::from(id) as u8);
    bytes.into()
}

/// The `exact` scheme on `chain_id` accepting `assets`, with an RPC nobody answers.
pub fn offline_scheme(chain_id: u64, assets: Vec<Address>) -> ExactEvm {
    let chain = Chain::new(
        RpcSource::url("http://127.0.0.1:9"),
        None,
        Duration::from_secs(1),
    );
    ExactEvm::new(EvmNetwork::from_chain_id(chain_id), assets, chain)
}
