//! Permit2 `exact` payments in the stack's EIP-2612 test token: a [`Permit2Builder`] whose every
//! field a test can change before signing (alloy's `sol!` EIP-712, Permit2's domain), the
//! `/verify` and `/settle` body built from it, and [`permit2_payer`], a fresh payer funded in the
//! token that has (or has not) approved Permit2, so no test changes the shared payers' allowances.

use alloy::{
    primitives::{address, Address, Bytes, U256},
    providers::ext::AnvilApi,
    signers::{local::PrivateKeySigner, SignerSync},
    sol_types::{eip712_domain, SolCall, SolStruct},
};
use serde_json::{json, Value};

use super::{
    chain::{anvil, send_from_anvil_account},
    payment::random_nonce,
    stack::{config, now, stack, CHAIN_ID, NETWORK},
};

pub const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");
pub const EXACT_PERMIT2_PROXY: Address = address!("0x402085c248EeA27D92E8b30b2C58ed07f9E20001");
pub const UPTO_PERMIT2_PROXY: Address = address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// The types the payer signs and the calls the tests make, in their own namespace so that their
/// names (`Witness`, `approve`) do not spread through `common`.
pub mod abi {
    #![allow(missing_docs)]
    alloy::sol! {
        struct TokenPermissions { address token; uint256 amount; }
        struct Witness { address to; uint256 validAfter; }
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }

        /// The upto proxy's types, under other names than the exact proxy's (EIP-712 hashes by
        /// the struct names, so the signed ones are in [`upto`](super::upto)).
        interface IUptoProxy {
            struct Permitted { address token; uint256 amount; }
            struct PermitTransferFrom { Permitted permitted; uint256 nonce; uint256 deadline; }
            struct ProxyWitness { address to; address facilitator; uint256 validAfter; }
            function settle(PermitTransferFrom permit, uint256 amount, address owner, ProxyWitness witness, bytes signature) external;
        }

        interface IExactProxy {
            struct Permitted { address token; uint256 amount; }
            struct PermitTransferFrom { Permitted permitted; uint256 nonce; uint256 deadline; }
            struct ProxyWitness { address to; uint256 validAfter; }
            function settle(PermitTransferFrom permit, address owner, ProxyWitness witness, bytes signature) external;
        }

        struct Permit { address owner; address spender; uint256 value; uint256 nonce; uint256 deadline; }

        function approve(address spender, uint256 value) external returns (bool);
        function mint(address to, uint256 value) external;
        function allowance(address owner, address spender) external view returns (uint256);
    }
}

/// What an `upto` payer signs: Permit2's message with the upto proxy's witness.
pub mod upto {
    #![allow(missing_docs)]
    alloy::sol! {
        struct TokenPermissions { address token; uint256 amount; }
        struct Witness { address to; address facilitator; uint256 validAfter; }
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }
    }
}

/// The signer this facilitator advertises for `upto` on the stack's network (`uptoFacilitator`).
pub fn upto_facilitator() -> Address {
    config().networks[0]
        .upto_facilitator
        .expect("the stack's network serves upto (infra/stack/facilitator-env.sh)")
}

/// One token of the test token (18 decimals).
pub fn one_permit_token() -> U256 {
    U256::from(10u64).pow(U256::from(18))
}

/// A Permit2 payment under construction: 1 token from `signer` to the stack's payee.
#[derive(Debug, Clone)]
pub struct Permit2Builder {
    pub signer: PrivateKeySigner,
    pub from: Address,
    pub token: Address,
    pub permitted: U256,
    pub spender: Address,
    pub nonce: U256,
    pub deadline: u64,
    pub to: Address,
    pub valid_after: u64,
    pub asset: Address,
    pub amount: String,
    pub pay_to: Address,
    pub signature: Option<Bytes>,
    /// The `eip2612GasSponsoring` extension's permit, sent when set ([`Permit2Builder::sponsored`]).
    pub sponsor: Option<Sponsor>,
    /// An `upto` payment's witness `facilitator` ([`Permit2Builder::upto`]); `None`: `exact`.
    pub facilitator: Option<Address>,
    /// An `upto` payment's charge, which `/settle`'s requirements carry as their `amount`
    /// ([`Permit2Builder::settle_body`]).
    pub charge: Option<U256>,
}

/// An EIP-2612 permit of the test token for the `eip2612GasSponsoring` extension; every field
/// changeable before [`Sponsor::sign`].
#[derive(Debug, Clone)]
pub struct Sponsor {
    pub from: Address,
    pub asset: Address,
    pub spender: Address,
    pub amount: U256,
    /// The owner's token nonce (0 for a fresh payer).
    pub nonce: U256,
    pub deadline: u64,
    pub signature: Option<Bytes>,
}

impl Sponsor {
    /// Signs the token's `Permit` with `signer` (domain: the test token's name and version).
    pub fn sign(mut self, signer: &PrivateKeySigner) -> Self {
        let domain = eip712_domain! {
            name: "Permit Token",
            version: "1",
            chain_id: CHAIN_ID,
            verifying_contract: stack().permit_token,
        };
        let message = abi::Permit {
            owner: self.from,
            spender: self.spender,
            value: self.amount,
            nonce: self.nonce,
            deadline: U256::from(self.deadline),
        };
        let signature = signer
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .unwrap();
        self.signature = Some(signature.as_bytes().into());
        self
    }

    pub fn extensions(&self) -> Value {
        json!({"eip2612GasSponsoring":{"info":{
            "from":self.from,"asset":self.asset,"spender":self.spender,
            "amount":self.amount.to_string(),"nonce":self.nonce.to_string(),
            "deadline":self.deadline.to_string(),
            "signature":self.signature.clone().expect("call sign() first"),"version":"1"}}})
    }
}

impl Permit2Builder {
    pub fn new(signer: PrivateKeySigner) -> Self {
        let s = stack();
        let now = now();
        Permit2Builder {
            from: signer.address(),
            signer,
            token: s.permit_token,
            permitted: one_permit_token(),
            spender: EXACT_PERMIT2_PROXY,
            // Permit2 nonces are any uint256: a random one, as the SDK's client picks.
            nonce: U256::from_be_bytes(random_nonce().0),
            deadline: now + 300,
            to: s.payee.address,
            valid_after: now - 600,
            asset: s.permit_token,
            amount: one_permit_token().to_string(),
            pay_to: s.payee.address,
            signature: None,
            sponsor: None,
            facilitator: None,
            charge: None,
        }
    }

    /// An `upto` payment of at most 1 token, signed for the upto proxy and this facilitator's
    /// advertised upto signer.
    pub fn upto(signer: PrivateKeySigner) -> Self {
        let mut payment = Self::new(signer);
        payment.spender = UPTO_PERMIT2_PROXY;
        payment.facilitator = Some(upto_facilitator());
        payment
    }

    /// The same payment to be settled for `charge`.
    pub fn charging(mut self, charge: U256) -> Self {
        self.charge = Some(charge);
        self
    }

    fn scheme(&self) -> &'static str {
        match self.facilitator {
            Some(_) => "upto",
            None => "exact",
        }
    }

    /// The payment with a signed `eip2612GasSponsoring` permit, as the SDK's client makes it for
    /// a payer without a Permit2 allowance: owner the payer, spender Permit2, value the permitted
    /// amount, the Permit2 deadline; `edit` changes it before it is signed.
    pub fn sponsored(mut self, edit: impl FnOnce(&mut Sponsor)) -> Self {
        let mut sponsor = Sponsor {
            from: self.from,
            asset: self.token,
            spender: PERMIT2,
            amount: self.permitted,
            nonce: U256::ZERO,
            deadline: self.deadline,
            signature: None,
        };
        edit(&mut sponsor);
        self.sponsor = Some(sponsor.sign(&self.signer));
        self
    }

    /// A payment from test payer `payer` (which has not approved Permit2).
    pub fn from_payer(payer: usize) -> Self {
        let key = stack().payers[payer].private_key.expect("payers have keys");
        Self::new(PrivateKeySigner::from_bytes(&key).unwrap())
    }

    pub fn edit(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// Signs what the builder says now (EIP-712 over Permit2's domain).
    pub fn sign(mut self) -> Self {
        let domain = eip712_domain! {
            name: "Permit2",
            chain_id: CHAIN_ID,
            verifying_contract: PERMIT2,
        };
        if let Some(facilitator) = self.facilitator {
            let message = upto::PermitWitnessTransferFrom {
                permitted: upto::TokenPermissions {
                    token: self.token,
                    amount: self.permitted,
                },
                spender: self.spender,
                nonce: self.nonce,
                deadline: U256::from(self.deadline),
                witness: upto::Witness {
                    to: self.to,
                    facilitator,
                    validAfter: U256::from(self.valid_after),
                },
            };
            let hash = message.eip712_signing_hash(&domain);
            self.signature = Some(self.signer.sign_hash_sync(&hash).unwrap().as_bytes().into());
            return self;
        }
        let message = abi::PermitWitnessTransferFrom {
            permitted: abi::TokenPermissions {
                token: self.token,
                amount: self.permitted,
            },
            spender: self.spender,
            nonce: self.nonce,
            deadline: U256::from(self.deadline),
            witness: abi::Witness {
                to: self.to,
                validAfter: U256::from(self.valid_after),
            },
        };
        let signature = self
            .signer
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .unwrap();
        self.signature = Some(signature.as_bytes().into());
        self
    }

    pub fn requirements(&self) -> Value {
        json!({"scheme":self.scheme(),"network":NETWORK,"amount":self.amount,"asset":self.asset,
               "payTo":self.pay_to,"maxTimeoutSeconds":300,
               "extra":{"assetTransferMethod":"permit2","name":"Permit Token","version":"1"}})
    }

    pub fn authorization(&self) -> Value {
        let mut witness = json!({"to":self.to,"validAfter":self.valid_after.to_string()});
        if let Some(facilitator) = self.facilitator {
            witness["facilitator"] = json!(facilitator);
        }
        json!({"from":self.from,"permitted":{"token":self.token,"amount":self.permitted.to_string()},
               "spender":self.spender,"nonce":self.nonce.to_string(),"deadline":self.deadline.to_string(),
               "witness":witness})
    }

    /// The `/verify` (and `/settle`) body, as the official v2 client and a resource server send it.
    pub fn body(&self) -> Value {
        let signature = self.signature.clone().expect("call sign() first");
        let mut body = json!({"x402Version":2,
               "paymentPayload":{"x402Version":2,"resource":{"url":"https://api.example.com/premium"},
                  "accepted":self.requirements(),
                  "payload":{"signature":signature,"permit2Authorization":self.authorization()}},
               "paymentRequirements":self.requirements()});
        if let Some(sponsor) = &self.sponsor {
            body["paymentPayload"]["extensions"] = sponsor.extensions();
        }
        if let Some(charge) = self.charge {
            // The resource server overwrites the amount with the actual charge at /settle.
            body["paymentRequirements"]["amount"] = json!(charge.to_string());
        }
        body
    }

    /// The id of this payment's record (`…#permit2`).
    pub fn payment_id(&self) -> facilitator::store::PaymentId {
        facilitator::store::PaymentId::permit2(NETWORK, self.asset, self.from, self.nonce)
    }

    pub fn record_id(&self) -> String {
        self.payment_id().to_string()
    }

    /// Calldata of the upto proxy's `settle` charging `amount`, for tests that send it themselves.
    pub fn upto_settle_calldata(&self, amount: U256) -> Bytes {
        use abi::IUptoProxy as P;
        P::settleCall {
            permit: P::PermitTransferFrom {
                permitted: P::Permitted {
                    token: self.token,
                    amount: self.permitted,
                },
                nonce: self.nonce,
                deadline: U256::from(self.deadline),
            },
            amount,
            owner: self.from,
            witness: P::ProxyWitness {
                to: self.to,
                facilitator: self.facilitator.unwrap_or_default(),
                validAfter: U256::from(self.valid_after),
            },
            signature: self.signature.clone().expect("signed"),
        }
        .abi_encode()
        .into()
    }

    /// Calldata of the exact proxy's `settle` for this payment, for tests that use it up on chain.
    pub fn settle_calldata(&self) -> Bytes {
        abi::IExactProxy::settleCall {
            permit: abi::IExactProxy::PermitTransferFrom {
                permitted: abi::IExactProxy::Permitted {
                    token: self.token,
                    amount: self.permitted,
                },
                nonce: self.nonce,
                deadline: U256::from(self.deadline),
            },
            owner: self.from,
            witness: abi::IExactProxy::ProxyWitness {
                to: self.to,
                validAfter: U256::from(self.valid_after),
            },
            signature: self.signature.clone().expect("signed"),
        }
        .abi_encode()
        .into()
    }
}

/// A fresh payer holding 1,000 test tokens (minted by the token's owner) and some ETH, that has
/// approved Permit2 for `allowance` (none when zero) through a transaction of its own, sent with
/// anvil's impersonation.
pub async fn permit2_payer(allowance: U256) -> PrivateKeySigner {
    let s = stack();
    let payer = PrivateKeySigner::random();
    let address = payer.address();
    let mint = abi::mintCall {
        to: address,
        value: one_permit_token() * U256::from(1000),
    };
    send_from_anvil_account(s.deployer.address, s.permit_token, mint.abi_encode().into()).await;
    if allowance > U256::ZERO {
        approve_permit2_as(address, allowance).await;
    }
    payer
}

/// `owner` approves Permit2 for `allowance` of the test token through a transaction of its own,
/// sent with anvil's impersonation (given some ETH first). A contract wallet's owner would send
/// the same call through the wallet; the token sees the same `msg.sender`.
pub async fn approve_permit2_as(owner: Address, allowance: U256) {
    let anvil = anvil();
    anvil
        .anvil_set_balance(owner, U256::from(10u64).pow(U256::from(18)))
        .await
        .unwrap();
    anvil.anvil_impersonate_account(owner).await.unwrap();
    let approve = abi::approveCall {
        spender: PERMIT2,
        value: allowance,
    };
    send_from_anvil_account(owner, stack().permit_token, approve.abi_encode().into()).await;
    anvil.anvil_stop_impersonating_account(owner).await.unwrap();
}

/// The token's `allowance(owner, Permit2)` at the latest block.
pub async fn permit2_allowance(owner: Address) -> U256 {
    use alloy::{eips::BlockId, providers::Provider, rpc::types::TransactionRequest};
    let call = TransactionRequest::default()
        .to(stack().permit_token)
        .input(
            Bytes::from(
                abi::allowanceCall {
                    owner,
                    spender: PERMIT2,
                }
                .abi_encode(),
            )
            .into(),
        );
    let out = anvil().call(call).block(BlockId::latest()).await.unwrap();
    abi::allowanceCall::abi_decode_returns(&out).unwrap()
}

/// Uses up `payment`'s Permit2 nonce on chain with another payment of its payer's: an `exact` one
/// under the same nonce, settled through the exact proxy by the deployer (anyone may call it).
/// Permit2 has one nonce space per owner, whichever proxy spends it.
pub async fn use_up_nonce_with_exact(payment: &Permit2Builder) {
    let exact = Permit2Builder::new(payment.signer.clone())
        .edit(|p| p.nonce = payment.nonce)
        .sign();
    send_from_anvil_account(
        stack().deployer.address,
        EXACT_PERMIT2_PROXY,
        exact.settle_calldata(),
    )
    .await;
}

/// A fresh payer that approved Permit2 for everything, as the SDK's docs tell payers to.
pub async fn approved_payer() -> PrivateKeySigner {
    permit2_payer(U256::MAX).await
}

/// The payer's and the payee's balances of the payment's token.
pub async fn permit_balances(payment: &Permit2Builder) -> (U256, U256) {
    (
        super::chain::token_balance(payment.token, payment.from).await,
        super::chain::token_balance(payment.token, payment.pay_to).await,
    )
}

/// Settles, and when the answer is `settlement_pending` asks again, as the resource servers do.
pub async fn settle_to_the_end(body: &Value) -> Value {
    for _ in 0..5 {
        let answer = super::http::settle(body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        if answer.json["errorReason"] != "settlement_pending" {
            return answer.json;
        }
    }
    panic!("still pending after five tries: {body}");
}

/// A settle answer's success, reason and transaction, for one comparison.
pub fn outcome(answer: &Value) -> (Value, Value, Value) {
    (
        answer["success"].clone(),
        answer.get("errorReason").cloned().unwrap_or(Value::Null),
        answer["transaction"].clone(),
    )
}

/// Whether a JSON string is `b`, whatever the case of its hex digits.
pub fn same_address(a: &Value, b: Address) -> bool {
    a.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(&b.to_string()))
}

/// A change to a sponsoring permit before it is signed, for tables of refusals.
pub type SponsorEdit = Box<dyn FnOnce(&mut Sponsor)>;
