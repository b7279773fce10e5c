//! Strict parsing of the hex strings in EVM payloads: `0x` followed by hex digits of the exact
//! length. alloy's own deserialisers are lenient (no `0x`, even JSON arrays of numbers), which the
//! official clients never send and viem would refuse; we refuse them too, so that what we echo
//! (`payer`) is always a well-formed address.

use alloy::primitives::{Address, Bytes, B256};
use serde::{de, Deserialize, Deserializer};

fn digits(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("0x")?;
    (hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// `0x` + 40 hex digits, any case (checksums are not enforced, as in the reference).
pub fn address(s: &str) -> Option<Address> {
    digits(s)
        .filter(|h| h.len() == 40)
        .and_then(|h| h.parse().ok())
}

/// `0x` + 64 hex digits.
pub fn b256(s: &str) -> Option<B256> {
    digits(s)
        .filter(|h| h.len() == 64)
        .and_then(|h| h.parse().ok())
}

/// `0x` + an even number of hex digits.
pub fn bytes(s: &str) -> Option<Bytes> {
    digits(s)
        .and_then(|h| alloy::primitives::hex::decode(h).ok())
        .map(Bytes::from)
}

fn with<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "{:?} is not {what}",
            s.chars().take(80).collect::<String>()
        ))
    })
}

pub fn de_address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    with(d, address, "a 0x-prefixed 20-byte hex address")
}

pub fn de_b256<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
    with(d, b256, "0x-prefixed 32-byte hex")
}

pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    with(d, bytes, "0x-prefixed hex bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_the_prefix_and_the_exact_length() {
        let a = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        assert!(address(a).is_some());
        assert!(address(&a.to_lowercase()).is_some());
        assert!(address(&a[2..]).is_none());
        assert!(address("0x1234").is_none());
        assert!(b256(&format!("0x{}", "ab".repeat(32))).is_some());
        assert!(b256(&format!("0x{}", "ab".repeat(31))).is_none());
        assert!(b256(&format!("0x{}", "ab".repeat(33))).is_none());
        assert_eq!(bytes("0x").map(|b| b.len()), Some(0));
        assert!(bytes("0xabc").is_none());
        assert!(bytes("abcd").is_none());
        assert!(bytes("0xzz").is_none());
    }
}
