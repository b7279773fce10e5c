//! How a [`PaymentRecord`](super::PaymentRecord)'s typed fields are written in its DynamoDB item:
//! the format every record has had, kept so that records written before the types still read.
//! Addresses, hashes and bytes are `0x`-prefixed lowercase hex strings; amounts decimal strings;
//! reasons their x402 wire strings; the id its `#`-joined text. Only `store/` uses these.

use serde::{de, Deserialize, Deserializer, Serializer};

use super::PaymentId;
use crate::protocol::Reason;

/// A value written as lowercase `0x` hex and read back with its `FromStr` (addresses, hashes,
/// bytes).
pub mod hex {
    use super::*;

    pub fn serialize<T: std::fmt::LowerHex, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:#x}"))
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// [`hex`], optional (the attribute is left out when `None`).
pub mod opt_hex {
    use super::*;

    pub fn serialize<T: std::fmt::LowerHex, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => hex::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|text| {
                text.parse()
                    .map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
            })
            .transpose()
    }
}

/// A list of [`hex`] values.
pub mod hex_list {
    use super::*;
    use alloy::primitives::B256;

    pub fn serialize<S: Serializer>(v: &[B256], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|h| format!("{h:#x}")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<B256>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
            })
            .collect()
    }
}

/// An amount, as a decimal string (a DynamoDB number would lose digits above 38).
pub mod decimal {
    use super::*;
    use alloy::primitives::U256;

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let text = String::deserialize(d)?;
        U256::from_str_radix(&text, 10).map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// A reason, as its wire string.
pub mod reason {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Reason>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(reason) => s.serialize_str(reason.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Reason>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                Reason::from_wire(&text)
                    .ok_or_else(|| de::Error::custom(format!("{text:?} is not an x402 reason")))
            })
            .transpose()
    }
}

/// A payment id, as its text.
pub mod id {
    use super::*;

    pub fn serialize<S: Serializer>(v: &PaymentId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PaymentId, D::Error> {
        let text = String::deserialize(d)?;
        PaymentId::parse(&text)
            .ok_or_else(|| de::Error::custom(format!("{text:?} is not a payment id")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use alloy::primitives::{address, Bytes, B256, U256};
    use aws_sdk_dynamodb::types::AttributeValue;

    use crate::{
        protocol::Reason,
        store::{NewPayment, PaymentId, PaymentRecord, State},
    };

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: u64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    /// A finished record as the code before the typed record wrote it, attribute by attribute.
    fn item_as_written_before() -> HashMap<String, AttributeValue> {
        let id = format!(
            "eip155:84532#0x036cbd53842c5426634e7929541ec2318f3dcf7e#0x70997970c51812dc3a010c7d01b50e0d17dc79c8#0x{}",
            "ab".repeat(32)
        );
        HashMap::from([
            ("id".to_owned(), s(&id)),
            ("state".to_owned(), s("failed")),
            ("network".to_owned(), s("eip155:84532")),
            ("asset".to_owned(), s("0x036cbd53842c5426634e7929541ec2318f3dcf7e")),
            ("payer".to_owned(), s("0x70997970c51812dc3a010c7d01b50e0d17dc79c8")),
            ("pay_to".to_owned(), s("0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc")),
            ("value".to_owned(), s("115792089237316195423570985008687907853269984665640564039457584007913129639935")),
            ("valid_before".to_owned(), n(1_900_000_000)),
            ("calldata".to_owned(), s("0xe3ee160e00")),
            ("lane".to_owned(), s("lane-key-0")),
            ("lane_nonce".to_owned(), n(7)),
            ("raw_tx".to_owned(), s("0x02f8")),
            ("tx_hash".to_owned(), s(&format!("0x{}", "cd".repeat(32)))),
            ("sender".to_owned(), s("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")),
            ("replaced".to_owned(), AttributeValue::L(vec![s(&format!("0x{}", "ef".repeat(32)))])),
            ("block_number".to_owned(), n(12)),
            ("reason".to_owned(), s("invalid_transaction_state")),
            ("message".to_owned(), s("the settlement transaction reverted")),
            ("created_at".to_owned(), n(1_000)),
            ("updated_at".to_owned(), n(2_000)),
            ("expires_at".to_owned(), n(1_900_604_800)),
            ("digest".to_owned(), s(&format!("0x{}", "12".repeat(32)))),
            ("claimed_by".to_owned(), s("req:00")),
            ("settled_by_other".to_owned(), AttributeValue::Bool(true)),
        ])
    }

    #[test]
    fn a_record_written_before_the_types_reads_and_writes_back_the_same_item() {
        let item = item_as_written_before();
        let record: PaymentRecord = serde_dynamo::from_item(item.clone()).unwrap();
        assert_eq!(record.state, State::Failed);
        assert_eq!(record.value, U256::MAX);
        assert_eq!(record.reason, Some(Reason::InvalidTransactionState));
        assert_eq!(record.tx_hash, Some(B256::repeat_byte(0xcd)));
        assert_eq!(record.replaced, vec![B256::repeat_byte(0xef)]);
        assert_eq!(record.id.nonce(), B256::repeat_byte(0xab));
        let written: HashMap<String, AttributeValue> = serde_dynamo::to_item(&record).unwrap();
        assert_eq!(written, item);
    }

    #[test]
    fn a_new_record_leaves_out_what_it_does_not_have_yet() {
        let id = PaymentId::new(
            "eip155:84532",
            address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
            address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            B256::repeat_byte(1),
        );
        let calldata = Bytes::from(vec![0xe3, 0xee]);
        let record = PaymentRecord::queued(
            &NewPayment {
                id: &id,
                network: "eip155:84532",
                asset: address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
                payer: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
                pay_to: address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
                value: U256::from(10_000),
                valid_before: 100,
                calldata: &calldata,
                target: None,
                digest: B256::repeat_byte(2),
                lane: "lane-key-0",
            },
            5,
        );
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&record).unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "asset",
                "calldata",
                "created_at",
                "digest",
                "expires_at",
                "id",
                "lane",
                "network",
                "open_shard",
                "pay_to",
                "payer",
                "state",
                "updated_at",
                "valid_before",
                "value"
            ]
        );
        assert_eq!(item["value"], s("10000"));
        assert_eq!(
            item["pay_to"],
            s("0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc")
        );
        assert_eq!(item["calldata"], s("0xe3ee"));
    }
}
