//! API keys for `POST /verify` and `POST /settle` (docs/security.md).
//!
//! A resource server sends `Authorization: Bearer <key>`; the official SDKs' facilitator clients can
//! add that header to every call (`createAuthHeaders` in TypeScript, `create_headers` /
//! `auth_provider` in Python). Keys are random strings shown once when created
//! (`infra/deploy/api-keys.py`); the table holds only their SHA-256, so a copy of the table opens nothing.
//! A key is accepted when its hash is in the table with `enabled = true`.
//!
//! The same check runs in two places: the HTTP API's Lambda authorizer (`functions/authorizer`) and
//! the local server in front of its routes, so the local stack refuses what AWS refuses.

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

/// The table's name when `X402_API_KEYS_TABLE` is not set (the local stack's name).
pub const DEFAULT_TABLE: &str = "x402-api-keys";

/// Keys shorter than this cannot be ours (infra/deploy/api-keys.py makes 48-character keys); refusing them early
/// saves a DynamoDB read on junk.
const MIN_KEY_LEN: usize = 20;
/// Longer than any key we make; bounds the work an attacker can ask for.
const MAX_KEY_LEN: usize = 256;

/// Why a request is refused. The variants say what went wrong for logs; callers answer all of them
/// the same way so that a prober learns nothing about which keys exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <key>`, or a key of impossible length or characters.
    Malformed,
    /// Well-formed, but no such key.
    Unknown,
    /// The key exists but was revoked (`enabled = false`).
    Disabled,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Malformed => "malformed",
            Denial::Unknown => "unknown",
            Denial::Disabled => "disabled",
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The key's holder, as its `name` says (for logs; never the key).
    Allow {
        name: String,
    },
    Deny(Denial),
}

/// The key store could not be read; this is our failure, not the caller's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the API keys table {table}: {problem}")]
pub struct AuthError {
    pub table: String,
    pub problem: String,
}

/// The key in an `Authorization` header value: `Bearer <key>` (scheme case-insensitive, RFC 6750),
/// with a key of plausible length made of token68 characters.
pub fn bearer_key(header: Option<&str>) -> Result<&str, Denial> {
    let header = header.ok_or(Denial::Missing)?.trim();
    let (scheme, key) = header.split_once(' ').ok_or(Denial::Malformed)?;
    let key = key.trim();
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !scheme.eq_ignore_ascii_case("bearer")
        || !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len())
        || !key.chars().all(token68)
    {
        return Err(Denial::Malformed);
    }
    Ok(key)
}

/// What the table stores for a key: lowercase hex SHA-256 of the key's UTF-8 bytes.
pub fn key_hash(key: &str) -> String {
    alloy::hex::encode(Sha256::digest(key.as_bytes()))
}

/// The API keys table, read with one `GetItem` per check.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl ApiKeys {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        ApiKeys { client, table }
    }

    /// Checks an `Authorization` header value. Malformed headers are refused without a read.
    pub async fn check(&self, authorization: Option<&str>) -> Result<Decision, AuthError> {
        let key = match bearer_key(authorization) {
            Ok(key) => key,
            Err(denial) => return Ok(Decision::Deny(denial)),
        };
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_hash", AttributeValue::S(key_hash(key)))
            .projection_expression("#n, enabled")
            .expression_attribute_names("#n", "name")
            .send();
        let item = Box::pin(read)
            .await
            .map_err(|e| AuthError {
                table: self.table.clone(),
                problem: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            })?
            .item;
        Ok(decide(item.as_ref()))
    }

    /// The Lambda authorizer's answer (HTTP API, payload format 2.0, simple responses). The
    /// context's `keyName` reaches the integration's request context and the access log.
    pub async fn authorize(
        &self,
        request: &ApiGatewayV2CustomAuthorizerV2Request,
    ) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, AuthError> {
        let header = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let decision = self.check(header).await?;
        let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
        match decision {
            Decision::Allow { name } => {
                tracing::info!(key = %name, "API key accepted");
                response.is_authorized = true;
                response.context = serde_json::json!({ "keyName": name });
            }
            Decision::Deny(denial) => {
                tracing::info!(denial = denial.as_str(), "API key refused");
                response.context = serde_json::json!({});
            }
        }
        Ok(response)
    }
}

/// Allow only an item that says `enabled = true`; anything else (absent, false, missing flag,
/// wrong type) is a refusal.
fn decide(item: Option<&HashMap<String, AttributeValue>>) -> Decision {
    let Some(item) = item else {
        return Decision::Deny(Denial::Unknown);
    };
    match item.get("enabled") {
        Some(AttributeValue::Bool(true)) => Decision::Allow {
            name: match item.get("name") {
                Some(AttributeValue::S(name)) => name.clone(),
                _ => "unnamed".to_owned(),
            },
        },
        _ => Decision::Deny(Denial::Disabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "x402_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    #[test]
    fn only_a_bearer_key_of_plausible_shape_is_read() {
        assert_eq!(bearer_key(Some(&format!("Bearer {KEY}"))), Ok(KEY));
        assert_eq!(bearer_key(Some(&format!("bearer  {KEY} "))), Ok(KEY));
        assert_eq!(bearer_key(None), Err(Denial::Missing));
        for bad in [
            "",
            "Bearer",
            KEY,
            &format!("Basic {KEY}"),
            "Bearer short",
            &format!("Bearer {KEY}\u{e9}"),
            &format!("Bearer {KEY} extra"),
            &format!("Bearer {}", "a".repeat(MAX_KEY_LEN + 1)),
        ] {
            assert_eq!(bearer_key(Some(bad)), Err(Denial::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_lowercase_hex_sha256() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_an_enabled_item_allows() {
        let item = |enabled: AttributeValue| {
            HashMap::from([
                ("name".to_owned(), AttributeValue::S("shop".into())),
                ("enabled".to_owned(), enabled),
            ])
        };
        assert_eq!(
            decide(Some(&item(AttributeValue::Bool(true)))),
            Decision::Allow {
                name: "shop".into()
            }
        );
        assert_eq!(
            decide(Some(&item(AttributeValue::Bool(false)))),
            Decision::Deny(Denial::Disabled)
        );
        assert_eq!(
            decide(Some(&item(AttributeValue::S("true".into())))),
            Decision::Deny(Denial::Disabled)
        );
        assert_eq!(decide(None), Decision::Deny(Denial::Unknown));
    }
}
