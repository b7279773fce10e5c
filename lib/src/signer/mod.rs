//! Signer lanes: one AWS KMS key (ECC_SECG_P256K1) per lane. Private keys never leave KMS.
//!
//! This part only learns the lanes' addresses (KMS `GetPublicKey`), for `/supported`. It is done
//! once per Lambda instance, on the first request that needs it, so that a cold start makes no KMS
//! call and a KMS hiccup fails one request, not the instance.

use alloy::signers::aws::AwsSigner;
use alloy::{primitives::Address, signers::Signer};
use tokio::{sync::OnceCell, task::JoinSet};
use tracing::instrument;

/// The addresses of a lane could not be learnt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not read the public key of KMS key {key}: {problem}")]
pub struct LaneError {
    pub key: String,
    pub problem: String,
}

/// The configured lanes and, once learnt, their addresses (in configuration order).
#[derive(Debug)]
pub struct Lanes {
    keys: Vec<String>,
    kms: aws_sdk_kms::Client,
    addresses: OnceCell<Vec<Address>>,
}

impl Lanes {
    pub fn new(keys: Vec<String>, kms: aws_sdk_kms::Client) -> Self {
        Lanes {
            keys,
            kms,
            addresses: OnceCell::new(),
        }
    }

    /// The address of the lane whose key is `key`, if it is one of these lanes.
    pub async fn address_of(&self, key: &str) -> Result<Option<Address>, LaneError> {
        let addresses = self.addresses().await?;
        Ok(self
            .keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| addresses.get(i).copied()))
    }

    /// The lanes' addresses, asking KMS for all public keys at once the first time.
    #[instrument(skip_all, fields(lanes = self.keys.len()), err(level = "warn"))]
    pub async fn addresses(&self) -> Result<&[Address], LaneError> {
        let addresses = self
            .addresses
            .get_or_try_init(|| async {
                let mut tasks = JoinSet::new();
                for (index, key) in self.keys.iter().enumerate() {
                    let (kms, key) = (self.kms.clone(), key.clone());
                    tasks.spawn(async move {
                        let lane = LaneSigner::connect(kms, key).await?;
                        Ok::<_, LaneError>((index, lane.address()))
                    });
                }
                let mut found = vec![Address::ZERO; self.keys.len()];
                while let Some(joined) = tasks.join_next().await {
                    let (index, address) = joined.map_err(|e| LaneError {
                        key: "?".into(),
                        problem: e.to_string(),
                    })??;
                    found[index] = address;
                }
                Ok(found)
            })
            .await?;
        Ok(addresses)
    }
}

/// One lane's sender: signs transactions with its KMS key. Only the settlement worker builds these
/// (I7: the other functions hold no signer and may not call `kms:Sign`).
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
