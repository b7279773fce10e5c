//! Signatures on EIP-3009 authorizations: classified once, then matched on.
//!
//! An EOA signs with 65 bytes `r ‖ s ‖ v`. Anything longer is a smart-wallet signature checked by the
//! wallet itself (ERC-1271), possibly wrapped for a wallet not deployed yet (ERC-6492). Recovery uses
//! libsecp256k1, which is several times faster than a pure-Rust curve for this one operation.

use std::sync::LazyLock;

use alloy::{
    primitives::{keccak256, Address, Bytes, B256},
    sol_types::SolValue,
};
use secp256k1::{
    ecdsa::{RecoverableSignature, RecoveryId},
    Message, Secp256k1, VerifyOnly,
};

use crate::protocol::{Reason, Rejection};

/// The 32-byte suffix that marks an ERC-6492 wrapped signature.
const ERC6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// secp256k1n / 2: signatures with a larger `s` are malleable copies, refused by USDC and by us.
const HALF_ORDER: B256 =
    alloy::primitives::b256!("0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0");

static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// An ECDSA signature split the way `transferWithAuthorization(…, v, r, s)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcdsaSignature {
    pub r: B256,
    pub s: B256,
    /// Always 27 or 28: USDC's `ecrecover` path requires it.
    pub v: u8,
}

/// What kind of signer produced a signature, judged by its shape alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureKind {
    /// 65 bytes: an ECDSA signature (by an EOA, or by a wallet owner for ERC-1271).
    Ecdsa(EcdsaSignature),
    /// Wrapped for a counterfactual wallet (ERC-6492).
    Erc6492(Wrapped6492),
    /// Any other length: only a smart wallet (ERC-1271) can judge it.
    SmartWallet,
}

/// What an ERC-6492 wrapper carries: how to deploy the wallet, and the signature it will judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped6492 {
    /// The contract that deploys the wallet.
    pub factory: Address,
    /// The call to the factory that deploys it.
    pub factory_calldata: Bytes,
    /// The signature the deployed wallet judges (ERC-1271).
    pub inner: Bytes,
}

/// Whether `signature` ends with ERC-6492's magic suffix (a wrapper, decodable or not).
pub fn is_erc6492(signature: &[u8]) -> bool {
    signature.len() >= 32 && signature[signature.len() - 32..] == ERC6492_MAGIC
}

/// Classifies a signature by its shape. A 65-byte signature with an impossible `v` or a high `s` is
/// refused here, because no token would accept it.
pub fn classify(signature: &[u8]) -> Result<SignatureKind, Rejection> {
    if is_erc6492(signature) {
        // abi.encode(address factory, bytes factoryCalldata, bytes innerSignature) ‖ magic
        let wrapped = &signature[..signature.len() - 32];
        return <(Address, Bytes, Bytes)>::abi_decode_params(wrapped)
            .map(|(factory, factory_calldata, inner)| {
                SignatureKind::Erc6492(Wrapped6492 {
                    factory,
                    factory_calldata,
                    inner,
                })
            })
            .map_err(|_| {
                Rejection::new(
                    Reason::InvalidExactEvmSignature,
                    "the ERC-6492 wrapper does not decode",
                )
            });
    }
    if signature.len() != 65 {
        return Ok(SignatureKind::SmartWallet);
    }
    let r = B256::from_slice(&signature[..32]);
    let s = B256::from_slice(&signature[32..64]);
    let v = match signature[64] {
        0 | 27 => 27,
        1 | 28 => 28,
        other => {
            return Err(Rejection::new(
                Reason::InvalidExactEvmSignature,
                format!("signature v must be 27 or 28 (or 0 or 1), not {other}"),
            ))
        }
    };
    if s > HALF_ORDER {
        return Err(Rejection::new(
            Reason::InvalidExactEvmSignature,
            "signature s is in the upper half of the curve order (a malleable signature the token refuses)",
        ));
    }
    Ok(SignatureKind::Ecdsa(EcdsaSignature { r, s, v }))
}

/// Recovers the address that signed `digest`, or `None` if no key produced this signature.
pub fn recover(digest: &B256, sig: &EcdsaSignature) -> Option<Address> {
    let recovery_id = RecoveryId::try_from(i32::from(sig.v - 27)).ok()?;
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(sig.r.as_slice());
    compact[32..].copy_from_slice(sig.s.as_slice());
    let signature = RecoverableSignature::from_compact(&compact, recovery_id).ok()?;
    let key = SECP
        .recover_ecdsa(Message::from_digest(digest.0), &signature)
        .ok()?;
    Some(address_of(&key))
}

/// The Ethereum address of a secp256k1 public key: the last 20 bytes of the keccak256 of its
/// uncompressed point without the 0x04 prefix.
pub fn address_of(key: &secp256k1::PublicKey) -> Address {
    Address::from_slice(&keccak256(&key.serialize_uncompressed()[1..])[12..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::hex;

    const DIGEST: B256 = alloy::primitives::b256!(
        "0x5ce6d8c5f8ff55e2d4a0d2e3dfc8e7fd7b6ca1b7a02c7d2bcd8e6e15cc44c7c6"
    );

    #[test]
    fn classifies_by_shape() {
        let mut sig = [0u8; 65];
        sig[64] = 27;
        assert!(matches!(
            classify(&sig),
            Ok(SignatureKind::Ecdsa(EcdsaSignature { v: 27, .. }))
        ));
        sig[64] = 1;
        assert!(matches!(
            classify(&sig),
            Ok(SignatureKind::Ecdsa(EcdsaSignature { v: 28, .. }))
        ));
        sig[64] = 29;
        assert_eq!(
            classify(&sig).unwrap_err().reason,
            Reason::InvalidExactEvmSignature
        );
        assert_eq!(classify(&[0u8; 64]).unwrap(), SignatureKind::SmartWallet);
        let inner = Bytes::from(vec![9u8; 65]);
        let mut wrapped = (
            Address::repeat_byte(1),
            Bytes::from(vec![1u8, 2]),
            inner.clone(),
        )
            .abi_encode_params();
        wrapped.extend_from_slice(&ERC6492_MAGIC);
        assert_eq!(
            classify(&wrapped).unwrap(),
            SignatureKind::Erc6492(Wrapped6492 {
                factory: Address::repeat_byte(1),
                factory_calldata: Bytes::from(vec![1u8, 2]),
                inner
            })
        );
        let mut garbage = vec![0xffu8; 40];
        garbage.extend_from_slice(&ERC6492_MAGIC);
        assert_eq!(
            classify(&garbage).unwrap_err().reason,
            Reason::InvalidExactEvmSignature
        );
    }

    #[test]
    fn refuses_high_s() {
        let mut sig = [0u8; 65];
        sig[32..64].copy_from_slice(&hex!(
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        ));
        sig[64] = 27;
        assert_eq!(
            classify(&sig).unwrap_err().reason,
            Reason::InvalidExactEvmSignature
        );
    }

    #[test]
    fn recovery_of_garbage_is_none_not_a_panic() {
        let sig = EcdsaSignature {
            r: B256::ZERO,
            s: B256::ZERO,
            v: 27,
        };
        assert_eq!(recover(&DIGEST, &sig), None);
    }
}
