//! Signer lanes: one AWS KMS key (ECC_SECG_P256K1) per lane. Private keys never leave KMS.
//!
//! This part only learns the lanes' addresses (KMS `GetPublicKey`), for `/supported`. It is done
//! once per Lambda instance, on the first request that needs it, so that a cold start makes no KMS
//! call and a KMS hiccup fails one request, not the instance.

use alloy::signers::aws::AwsSigner;
use alloy::{primitives::Address, signers::Signer};
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
    signer: AwsSigner,
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
        // Boxed, like every SDK future here: their types are deep enough to hit rustc's query limit.
        let signer = Box::pin(AwsSigner::new(kms, key.clone(), None))
            .await
            .map_err(|e| LaneError {
                key: key.clone(),
                problem: e.to_string(),
            })?;
        Ok(LaneSigner { key, signer })
    }

    /// The KMS key id: the lane's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Signs an EIP-1559 transaction: one KMS `Sign` of its digest.
    #[instrument(skip_all, fields(lane = %self.key, nonce = tx.nonce), err(level = "warn"))]
    pub async fn sign(&self, tx: alloy::consensus::TxEip1559) -> Result<SignedTx, LaneError> {
        use alloy::{
            consensus::{SignableTransaction, TxEnvelope},
            eips::eip2718::Encodable2718,
        };
        let started = std::time::Instant::now();
        let signature = Box::pin(self.signer.sign_hash(&tx.signature_hash())).await;
        crate::metrics::kms_sign(started.elapsed(), signature.is_ok());
        let signature = signature.map_err(|e| LaneError {
            key: self.key.clone(),
            problem: e.to_string(),
        })?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(SignedTx {
            raw: envelope.encoded_2718().into(),
            hash: *envelope.tx_hash(),
        })
    }
}
