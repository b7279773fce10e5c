//! Payments signed by the stack's test payers: a [`PaymentBuilder`] whose every field a test can
//! change before (or after) signing, the `/verify` and `/settle` bodies built from it (v2 and v1),
//! and the token ABI (`sol!`) the tests call and decode.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::{
    primitives::{Address, Bytes, B256, U256},
    signers::{local::PrivateKeySigner, SignerSync},
    sol,
    sol_types::{eip712_domain, SolCall, SolStruct},
};
use serde_json::{json, Value};

use super::stack::{now, stack, CHAIN_ID, NETWORK};

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter,
        uint256 validBefore, bytes32 nonce, bytes signature) external;
    function balanceOf(address account) external view returns (uint256);

    event Transfer(address indexed from, address indexed to, uint256 value);
}

/// A payment under construction: every field can be changed before (or after) signing.
#[derive(Debug, Clone)]
pub struct PaymentBuilder {
    pub signer: PrivateKeySigner,
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    pub asset: Address,
    pub amount: String,
    pub pay_to: Address,
    pub network: String,
    pub scheme: String,
    pub domain_name: String,
    pub domain_version: String,
    pub domain_chain_id: u64,
    pub signature: Option<Bytes>,
}

/// A 32-byte nonce no other test (in this or an earlier run on the same stack) has used.
pub fn random_nonce() -> B256 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!(
        "{}:{}:{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    alloy::primitives::keccak256(seed.as_bytes())
}

impl PaymentBuilder {
    /// 1 USDC (1_000_000 atomic units) from test payer `payer` to the stack's payee, valid now.
    pub fn new(payer: usize) -> Self {
        let key = stack().payers[payer].private_key.expect("payers have keys");
        Self::with_signer(PrivateKeySigner::from_bytes(&key).unwrap())
    }

    pub fn with_signer(signer: PrivateKeySigner) -> Self {
        let s = stack();
        let now = now();
        PaymentBuilder {
            from: signer.address(),
            signer,
            to: s.payee.address,
            value: U256::from(1_000_000u64),
            valid_after: now - 600,
            valid_before: now + 300,
            nonce: random_nonce(),
            asset: s.token,
            amount: "1000000".into(),
            pay_to: s.payee.address,
            network: NETWORK.into(),
            scheme: "exact".into(),
            domain_name: "USDC".into(),
            domain_version: "2".into(),
            domain_chain_id: CHAIN_ID,
            signature: None,
        }
    }

    pub fn edit(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// Signs what the builder says now (EIP-712 over the token's domain).
    pub fn sign(mut self) -> Self {
        let domain = eip712_domain! {
            name: self.domain_name.clone(),
            version: self.domain_version.clone(),
            chain_id: self.domain_chain_id,
            verifying_contract: self.asset,
        };
        let message = TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        let signature = self
            .signer
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .unwrap();
        self.signature = Some(signature.as_bytes().into());
        self
    }

    pub fn requirements(&self) -> Value {
        json!({"scheme":self.scheme,"network":self.network,"amount":self.amount,"asset":self.asset,
               "payTo":self.pay_to,"maxTimeoutSeconds":300,
               "extra":{"name":self.domain_name,"version":self.domain_version}})
    }

    pub fn authorization(&self) -> Value {
        json!({"from":self.from,"to":self.to,"value":self.value.to_string(),
               "validAfter":self.valid_after.to_string(),"validBefore":self.valid_before.to_string(),
               "nonce":self.nonce})
    }

    /// The `/verify` body, as an official v2 client and resource server would send it.
    pub fn body(&self) -> Value {
        let signature = self.signature.clone().expect("call sign() first");
        json!({"x402Version":2,
               "paymentPayload":{"x402Version":2,"resource":{"url":"https://api.example.com/premium"},
                  "accepted":self.requirements(),
                  "payload":{"signature":signature,"authorization":self.authorization()}},
               "paymentRequirements":self.requirements()})
    }

    /// The same payment as an x402 v1 client and resource server send it (`base-sepolia`).
    pub fn body_v1(&self) -> Value {
        let v2 = self.body();
        json!({"x402Version":1,
               "paymentPayload":{"x402Version":1,"scheme":self.scheme,"network":"base-sepolia",
                  "payload":v2["paymentPayload"]["payload"].clone()},
               "paymentRequirements":{"scheme":self.scheme,"network":"base-sepolia",
                  "maxAmountRequired":self.amount,"resource":"https://api.example.com/premium",
                  "description":"premium","mimeType":"application/json","payTo":self.pay_to,
                  "maxTimeoutSeconds":300,"asset":self.asset,
                  "extra":{"name":self.domain_name,"version":self.domain_version}}})
    }

    /// [`PaymentBuilder::body`] with `extensions` in the payment payload (v2).
    pub fn body_with_extensions(&self, extensions: Value) -> Value {
        let mut body = self.body();
        body["paymentPayload"]["extensions"] = extensions;
        body
    }

    /// The id of this payment's record in DynamoDB, as the facilitator builds it.
    pub fn record_id(&self) -> String {
        self.payment_id().to_string()
    }

    /// The id of this payment's record, typed.
    pub fn payment_id(&self) -> facilitator::store::PaymentId {
        facilitator::store::PaymentId::new(NETWORK, self.asset, self.from, self.nonce)
    }

    /// Calldata that makes the authorization happen, for tests that use it up on chain first.
    pub fn transfer_calldata(&self) -> Bytes {
        transferWithAuthorizationCall {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
            signature: self.signature.clone().expect("signed"),
        }
        .abi_encode()
        .into()
    }
}
