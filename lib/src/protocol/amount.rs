//! Token amounts and other uint256 quantities, which x402 carries as decimal strings.
//!
//! The TypeScript reference parses them with `BigInt`, which also takes `0x` hex, so we accept both
//! forms; we always write decimal. Anything else (signs, spaces, fractions, values over 2^256-1,
//! JSON numbers) is refused at the edge so the core only ever sees a `U256`.

use alloy::primitives::U256;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A uint256 written on the wire as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DecimalU256(pub U256);

/// Why a string is not a uint256.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("empty amount")]
    Empty,
    #[error("amount {0:?} is not a decimal integer")]
    NotDecimal(String),
    #[error("amount {0:?} does not fit in uint256")]
    Overflow(String),
}

impl DecimalU256 {
    /// Parses a decimal string (or `0x` hex, as the TypeScript reference tolerates).
    pub fn parse(s: &str) -> Result<Self, AmountError> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (s, 10),
        };
        let valid = !digits.is_empty()
            && digits.len() <= 80
            && digits.bytes().all(|b| (b as char).is_digit(radix));
        if !valid {
            return Err(AmountError::NotDecimal(truncate(s)));
        }
        U256::from_str_radix(digits, radix as u64)
            .map(DecimalU256)
            .map_err(|_| AmountError::Overflow(truncate(s)))
    }
}

/// Keeps error messages short when someone sends a megabyte of digits.
fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

impl From<U256> for DecimalU256 {
    fn from(value: U256) -> Self {
        DecimalU256(value)
    }
}

impl std::fmt::Display for DecimalU256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for DecimalU256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecimalU256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DecimalU256;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a uint256 as a decimal string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                DecimalU256::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex() {
        assert_eq!(
            DecimalU256::parse("250000").unwrap().0,
            U256::from(250_000u64)
        );
        assert_eq!(DecimalU256::parse("0x10").unwrap().0, U256::from(16u64));
        assert_eq!(DecimalU256::parse("0").unwrap().0, U256::ZERO);
    }

    #[test]
    fn refuses_non_decimal() {
        for bad in ["", "-1", "1.5", " 1", "1e6", "abc", "0x", "0xZZ", "+1"] {
            assert!(
                DecimalU256::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn refuses_overflow() {
        let max = U256::MAX.to_string();
        assert_eq!(DecimalU256::parse(&max).unwrap().0, U256::MAX);
        let over = format!("{max}0");
        assert!(matches!(
            DecimalU256::parse(&over),
            Err(AmountError::Overflow(_))
        ));
        let long = "9".repeat(500);
        assert!(DecimalU256::parse(&long).is_err());
    }

    #[test]
    fn json_numbers_are_refused() {
        assert!(serde_json::from_str::<DecimalU256>("250000").is_err());
        assert_eq!(
            serde_json::from_str::<DecimalU256>("\"7\"").unwrap().0,
            U256::from(7u64)
        );
        assert_eq!(
            serde_json::to_string(&DecimalU256(U256::from(7u64))).unwrap(),
            "\"7\""
        );
    }
}
