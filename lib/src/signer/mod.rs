//! Signer lanes: one AWS KMS key (ECC_SECG_P256K1) per lane. Private keys never leave KMS.
//!
//! This part only learns the lanes' addresses (KMS `GetPublicKey`), for `/supported`. It is done
//! once per Lambda instance, on the first request that needs it, so that a cold start makes no KMS
//! call and a KMS hiccup fails one request, not the instance.

use alloy::primitives::Address;
use futures_util::future::join_all;
use tokio::sync::OnceCell;
use tracing::instrument;

/// The addresses of a lane could not be learnt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not read the public key of KMS key {key}: {problem}")]
pub struct LaneError {
    pub key: String,
    pub problem: String,
}

/// The configured lanes and, once learnt, their addresses (in configuration order), each learnt
/// on its own: a key KMS cannot read (disabled, deleted, a policy mistake) costs its own lane, not
/// every lane's address.
#[derive(Debug)]
pub struct Lanes {
    keys: Vec<String>,
    kms: aws_sdk_kms::Client,
    addresses: Vec<OnceCell<Address>>,
}

impl Lanes {
    pub fn new(keys: Vec<String>, kms: aws_sdk_kms::Client) -> Self {
        Lanes {
            addresses: keys.iter().map(|_| OnceCell::new()).collect(),
            keys,
            kms,
        }
    }

    /// The address of the lane whose key is `key`, if it is one of these lanes.
    pub async fn address_of(&self, key: &str) -> Result<Option<Address>, LaneError> {
        match self.keys.iter().position(|k| k == key) {
            Some(index) => self.address_at(index).await.map(Some),
            None => Ok(None),
        }
    }

    /// Every lane's address, in configuration order, asking KMS for those not learnt yet at once.
    #[instrument(skip_all, fields(lanes = self.keys.len()))]
    pub async fn addresses(&self) -> Vec<Result<Address, LaneError>> {
        join_all((0..self.keys.len()).map(|index| self.address_at(index))).await
    }

    async fn address_at(&self, index: usize) -> Result<Address, LaneError> {
        let (Some(cell), Some(key)) = (self.addresses.get(index), self.keys.get(index)) else {
            return Err(LaneError {
                key: format!("lane #{index}"),
                problem: "no such lane".into(),
            });
        };
        cell.get_or_try_init(|| async {
            let lane = LaneSigner::connect(self.kms.clone(), key.clone()).await?;
            Ok(lane.address())
        })
        .await
        .copied()
    }
}

/// One lane's sender: signs transactions with its KMS key. Only the worker's code builds these, in
/// the settlement worker and in `/settle` when it signs itself (I7: verify, supported and replay
/// hold no signer and may not call `kms:Sign`).
#[derive(Debug, Clone)]
pub struct LaneSigner {
    key: String,
    kms: aws_sdk_kms::Client,
    address: Address,
}

/// A transaction signed and encoded for `eth_sendRawTransaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub raw: alloy::primitives::Bytes,
    pub hash: alloy::primitives::B256,
}

impl LaneSigner {
    /// Reads the key's public key (one KMS `GetPublicKey`). A lane is not tied to a chain: the
    /// chain id is part of each transaction it signs.
    pub async fn connect(kms: aws_sdk_kms::Client, key: String) -> Result<Self, LaneError> {
        let problem = |problem: String| LaneError {
            key: key.clone(),
            problem,
        };
        // Boxed, like every SDK future here: their types are deep enough to hit rustc's query limit.
        let answer = Box::pin(kms.get_public_key().key_id(&key).send())
            .await
            .map_err(|e| {
                problem(format!(
                    "KMS GetPublicKey failed: {}",
                    aws_sdk_kms::error::DisplayErrorContext(&e)
                ))
            })?;
        let public_key = answer
            .public_key
            .ok_or_else(|| problem("KMS GetPublicKey answered without a public key".into()))?;
        let address = address_of_public_key(public_key.as_ref()).ok_or_else(|| {
            problem("the key is not a secp256k1 key: a lane needs KeySpec ECC_SECG_P256K1".into())
        })?;
        Ok(LaneSigner { address, key, kms })
    }

    /// The KMS key id: the lane's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs an EIP-1559 transaction: one KMS `Sign` of its digest.
    #[instrument(skip_all, fields(lane = %self.key, nonce = tx.nonce), err(level = "warn"))]
    pub async fn sign(&self, tx: alloy::consensus::TxEip1559) -> Result<SignedTx, LaneError> {
        use alloy::{
            consensus::{SignableTransaction, TxEnvelope},
            eips::eip2718::Encodable2718,
        };
        use aws_sdk_kms::{
            error::DisplayErrorContext,
            primitives::Blob,
            types::{MessageType, SigningAlgorithmSpec},
        };
        let digest = tx.signature_hash();
        let started = std::time::Instant::now();
        let signed = Box::pin(
            self.kms
                .sign()
                .key_id(&self.key)
                .message(Blob::new(digest.as_slice()))
                .message_type(MessageType::Digest)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send(),
        )
        .await;
        crate::metrics::kms_sign(started.elapsed(), signed.is_ok());
        let problem = |problem: String| LaneError {
            key: self.key.clone(),
            problem,
        };
        let der = signed
            .map_err(|e| problem(format!("KMS Sign failed: {}", DisplayErrorContext(&e))))?
            .signature
            .ok_or_else(|| problem("KMS Sign answered without a signature".into()))?;
        let not_ours = || {
            let address = self.address;
            problem(format!(
                "KMS answered a signature that is not the lane's ({address})"
            ))
        };
        let signature =
            ethereum_signature(&digest, der.as_ref(), self.address).ok_or_else(not_ours)?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(SignedTx {
            raw: envelope.encoded_2718().into(),
            hash: *envelope.tx_hash(),
        })
    }
}

/// The DER header of a secp256k1 public key as KMS `GetPublicKey` answers it (X.509
/// SubjectPublicKeyInfo: id-ecPublicKey, the curve secp256k1 (1.3.132.0.10), then a 66-byte bit
/// string); the uncompressed point (0x04, X, Y) follows.
const SECP256K1_SPKI_HEADER: [u8; 23] = [
    0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
];

/// The Ethereum address of a KMS key from its public key (SubjectPublicKeyInfo, DER); `None` if it
/// is not a valid point on secp256k1.
fn address_of_public_key(spki: &[u8]) -> Option<Address> {
    let point = spki.strip_prefix(SECP256K1_SPKI_HEADER.as_slice())?;
    let key = secp256k1::PublicKey::from_slice(point).ok()?;
    Some(crate::evm::signature::address_of(&key))
}

/// KMS's signature of `digest` (ASN.1 DER, any `s`) as Ethereum takes it: `s` in the lower half of
/// the order (EIP-2), and the parity under which it recovers to `signer`. `None` if it is not a
/// signature of `signer`'s. The parity is found by recovering with libsecp256k1 (about 40 µs each,
/// at most two): alloy-signer-aws did it with the pure-Rust curve, which verified each candidate
/// too, 0.3 ms per signature, a tenth of `/settle`'s CPU per payment (docs/benchmarks.md).
pub fn ethereum_signature(
    digest: &alloy::primitives::B256,
    der: &[u8],
    signer: Address,
) -> Option<alloy::primitives::Signature> {
    use crate::evm::signature::{recover, EcdsaSignature};
    use alloy::primitives::{B256, U256};
    let mut signature = secp256k1::ecdsa::Signature::from_der(der).ok()?;
    signature.normalize_s();
    let compact = signature.serialize_compact();
    let (r, s) = (
        B256::from_slice(&compact[..32]),
        B256::from_slice(&compact[32..]),
    );
    [27u8, 28].into_iter().find_map(|v| {
        (recover(digest, &EcdsaSignature { r, s, v }) == Some(signer)).then(|| {
            alloy::primitives::Signature::new(
                U256::from_be_bytes(r.0),
                U256::from_be_bytes(s.0),
                v == 28,
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{keccak256, B256, U256};
    use secp256k1::{ecdsa::Signature, Message, PublicKey, Secp256k1, SecretKey};

    /// secp256k1's group order n.
    const ORDER: U256 = alloy::primitives::uint!(
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256
    );

    fn key(byte: u8) -> (SecretKey, Address) {
        let secret = SecretKey::from_byte_array([byte; 32]).unwrap();
        let public = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
        let address = crate::evm::signature::address_of(&public);
        (secret, address)
    }

    /// What KMS answers: DER, with `s` in either half of the order (KMS does not normalise it).
    fn kms_der(digest: &B256, secret: &SecretKey, high_s: bool) -> Vec<u8> {
        let low = Secp256k1::signing_only().sign_ecdsa(Message::from_digest(digest.0), secret);
        if !high_s {
            return low.serialize_der().to_vec();
        }
        let compact = low.serialize_compact();
        let s = ORDER - U256::from_be_slice(&compact[32..]);
        let mut flipped = compact;
        flipped[32..].copy_from_slice(&s.to_be_bytes::<32>());
        Signature::from_compact(&flipped)
            .unwrap()
            .serialize_der()
            .to_vec()
    }

    #[test]
    fn a_kms_signature_becomes_a_low_s_ethereum_signature_recovering_to_the_lane() {
        let (secret, address) = key(0x11);
        for (i, high_s) in [(1u8, false), (2, true), (3, false), (4, true)] {
            let digest = keccak256([i]);
            let signature =
                ethereum_signature(&digest, &kms_der(&digest, &secret, high_s), address)
                    .unwrap_or_else(|| panic!("digest {i}, high s {high_s}"));
            assert!(
                signature.s() <= ORDER / U256::from(2),
                "EIP-2: s in the lower half"
            );
            assert_eq!(
                signature.recover_address_from_prehash(&digest).unwrap(),
                address,
                "digest {i}, high s {high_s}"
            );
        }
    }

    #[test]
    fn a_lane_address_comes_from_a_secp256k1_public_key_and_nothing_else() {
        let (secret, address) = key(0x11);
        let public = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
        let spki = [
            SECP256K1_SPKI_HEADER.as_slice(),
            &public.serialize_uncompressed(),
        ]
        .concat();
        assert_eq!(address_of_public_key(&spki), Some(address));
        assert_eq!(
            address_of_public_key(&spki[..spki.len() - 1]),
            None,
            "truncated"
        );
        let mut other_curve = spki.clone();
        other_curve[19] = 0x22; // secp384r1, 1.3.132.0.34
        assert_eq!(address_of_public_key(&other_curve), None);
        let mut off_curve = spki;
        off_curve[30] ^= 0x01;
        assert_eq!(address_of_public_key(&off_curve), None, "not a point");
    }

    #[test]
    fn a_signature_by_another_key_or_not_der_is_refused() {
        let (secret, _) = key(0x11);
        let (_, other) = key(0x22);
        let digest = keccak256(b"payment");
        assert_eq!(
            ethereum_signature(&digest, &kms_der(&digest, &secret, false), other),
            None
        );
        assert_eq!(
            ethereum_signature(&digest, &[0x30, 0x02, 0x01], other),
            None
        );
        assert_eq!(ethereum_signature(&digest, &[], other), None);
    }
}
