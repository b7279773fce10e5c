//! Turning the DER signature KMS answers into an Ethereum signature: `s` normalised and the
//! recovery parity found against the lane's known address. Ours (libsecp256k1, one or two
//! recoveries) beside what alloy-signer-aws did (the pure-Rust k256: recover each candidate, which
//! also verifies it). Run with `cargo bench -p facilitator --bench kms_signature`; the figures are
//! in docs/benchmarks.md.

// Set-up failures should stop the benchmark loudly.
#![allow(clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use alloy::{
    primitives::{keccak256, Address, B256},
    signers::k256::ecdsa::{RecoveryId, Signature as K256Signature, VerifyingKey},
};
use criterion::{criterion_group, criterion_main, Criterion};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};

/// A lane's address and two digests with KMS's answer for each (DER), one for each recovery parity:
/// the parity found first costs one recovery, the other two.
fn fixture() -> (Address, Vec<(B256, Vec<u8>)>) {
    let secret = SecretKey::from_byte_array([0x11; 32]).expect("valid key");
    let secp = Secp256k1::signing_only();
    let public = PublicKey::from_secret_key(&secp, &secret);
    let address = Address::from_slice(&keccak256(&public.serialize_uncompressed()[1..])[12..]);
    let mut by_parity: [Option<(B256, Vec<u8>)>; 2] = [None, None];
    for i in 0u32.. {
        let digest = keccak256(i.to_be_bytes());
        let message = Message::from_digest(digest.0);
        let parity = i32::from(
            secp.sign_ecdsa_recoverable(message, &secret)
                .serialize_compact()
                .0,
        );
        let der = secp.sign_ecdsa(message, &secret).serialize_der().to_vec();
        by_parity[usize::try_from(parity).expect("0 or 1")].get_or_insert((digest, der));
        if let [Some(even), Some(odd)] = &by_parity {
            return (address, vec![even.clone(), odd.clone()]);
        }
    }
    unreachable!("a digest of either parity turns up within a few tries")
}

/// alloy-signer-aws's way: k256 parses and normalises, then recovers each parity in turn.
fn k256_each_candidate(digest: &B256, der: &[u8], address: Address) -> Option<bool> {
    let signature = K256Signature::from_der(der).ok()?;
    let signature = signature.normalize_s().unwrap_or(signature);
    [false, true].into_iter().find(|parity| {
        VerifyingKey::recover_from_prehash(
            digest.as_slice(),
            &signature,
            RecoveryId::new(*parity, false),
        )
        .is_ok_and(|key| alloy::signers::utils::public_key_to_address(&key) == address)
    })
}

/// Each benchmark converts both signatures (one of each parity) per iteration: half its time is
/// the mean cost of one signature.
fn benches(c: &mut Criterion) {
    let (address, signed) = fixture();
    for (digest, der) in &signed {
        assert!(facilitator::signer::ethereum_signature(digest, der, address).is_some());
        assert!(k256_each_candidate(digest, der, address).is_some());
    }
    c.bench_function("two signatures, ethereum_signature (libsecp256k1)", |b| {
        b.iter(|| {
            for (digest, der) in &signed {
                black_box(facilitator::signer::ethereum_signature(
                    black_box(digest),
                    der,
                    address,
                ));
            }
        })
    });
    c.bench_function(
        "two signatures, k256 recover each candidate (alloy-signer-aws)",
        |b| {
            b.iter(|| {
                for (digest, der) in &signed {
                    black_box(k256_each_candidate(black_box(digest), der, address));
                }
            })
        },
    );
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
