//! The verify path without I/O: parsing a request, every local check, the EIP-712 digest and
//! signature recovery. Run with `cargo bench -p facilitator --bench verify`; figures are recorded
//! in docs/benchmarks.md with the machine they ran on.

// Set-up failures should stop the benchmark loudly.
#![allow(clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use alloy::primitives::{address, keccak256, Address, Bytes, B256};
use criterion::{criterion_group, criterion_main, Criterion};
use facilitator::{
    config::RpcSource,
    evm::{checks::Signer, eip712, signature, Chain, ExactEvm, ExactPayment},
    protocol::{parse_request, EvmNetwork},
};
use secp256k1::{Message, Secp256k1, SecretKey};
use serde_json::json;

const TOKEN: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
const PAYEE: Address = address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc");
const NOW: u64 = 1_800_000_000;

/// A realistic, validly signed v2 `/verify` body.
fn signed_body() -> Vec<u8> {
    let key = SecretKey::from_byte_array([0x11; 32]).expect("valid key");
    let public = key.public_key(&Secp256k1::new()).serialize_uncompressed();
    let payer = Address::from_slice(&keccak256(&public[1..])[12..]);
    let requirements = json!({"scheme":"exact","network":"eip155:84532","amount":"1000000","asset":TOKEN,
        "payTo":PAYEE,"maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}});
    let authorization = json!({"from":payer,"to":PAYEE,"value":"1000000","validAfter":(NOW - 600).to_string(),
        "validBefore":(NOW + 60).to_string(),"nonce":B256::repeat_byte(0x42)});
    let body = |signature: &str| {
        serde_json::to_vec(&json!({"x402Version":2,"paymentPayload":{"x402Version":2,
            "resource":{"url":"https://api.example.com/premium","description":"premium data","mimeType":"application/json"},
            "accepted":requirements,"payload":{"signature":signature,"authorization":authorization}},
            "paymentRequirements":requirements}))
        .expect("serialisable")
    };
    let unsigned = parse_request(&body("0x")).expect("parses");
    let typed = ExactPayment::parse(&unsigned, 84532).expect("typed");
    let digest = eip712::signing_digest(&typed);
    let (id, compact) = Secp256k1::new()
        .sign_ecdsa_recoverable(Message::from_digest(digest.0), &key)
        .serialize_compact();
    let mut signature = compact.to_vec();
    signature.push(27 + i32::from(id) as u8);
    body(&Bytes::from(signature).to_string())
}

fn scheme() -> ExactEvm {
    let chain = Chain::new(
        RpcSource::url("http://127.0.0.1:9"),
        None,
        Duration::from_secs(1),
    );
    ExactEvm::new(EvmNetwork::from_chain_id(84532), vec![TOKEN], chain)
}

fn bench(c: &mut Criterion) {
    let body = signed_body();
    let scheme = scheme();
    let payment = parse_request(&body).expect("parses");
    let checked = scheme.check(&payment, NOW).expect("valid");

    c.bench_function("parse_request", |b| {
        b.iter(|| parse_request(black_box(&body)))
    });
    c.bench_function("eip712_digest", |b| {
        b.iter(|| eip712::signing_digest(black_box(&checked.payment)))
    });
    let digest = eip712::signing_digest(&checked.payment);
    let Signer::Eoa(ecdsa) = &checked.signer else {
        panic!("the benchmark's payment is signed by an EOA")
    };
    c.bench_function("ecrecover", |b| {
        b.iter(|| signature::recover(black_box(&digest), black_box(ecdsa)))
    });
    c.bench_function("local_checks", |b| {
        b.iter(|| scheme.check(black_box(&payment), NOW))
    });
    c.bench_function("verify_without_io", |b| {
        b.iter(|| {
            let payment = parse_request(black_box(&body)).expect("parses");
            scheme
                .check(&payment, NOW)
                .expect("valid")
                .transfer_calldata()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
