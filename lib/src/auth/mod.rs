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

mod limit;

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

pub use limit::{gcra, Admission, Caller, KeyLimit, RateLimiter};

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
    /// The key's holder: its `name` (for logs; never the key), its hash and its own rate limit.
    Allow(Caller),
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
        let hash = key_hash(key);
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_hash", AttributeValue::S(hash.clone()))
            .projection_expression("#n, enabled, rate_per_second, burst")
            .expression_attribute_names("#n", "name")
            .send();
        let item = Box::pin(read)
            .await
            .map_err(|e| AuthError {
                table: self.table.clone(),
                problem: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            })?
            .item;
        Ok(decide(&hash, item.as_ref()))
    }

    /// The Lambda authorizer's answer (HTTP API, payload format 2.0, simple responses). The
    /// context reaches the functions' request context ([`caller_from_context`]): `keyName` (also
    /// in the access log), `keyId` and the key's own limit, if it has one.
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
            Decision::Allow(caller) => {
                tracing::info!(key = %caller.name, "API key accepted");
                response.is_authorized = true;
                response.context = context_of(&caller);
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
/// wrong type) is a refusal. `hash` is the key's, which names its rate budget.
fn decide(hash: &str, item: Option<&HashMap<String, AttributeValue>>) -> Decision {
    let Some(item) = item else {
        return Decision::Deny(Denial::Unknown);
    };
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
    };
    match item.get("enabled") {
        Some(AttributeValue::Bool(true)) => Decision::Allow(Caller {
            name: match item.get("name") {
                Some(AttributeValue::S(name)) => name.clone(),
                _ => "unnamed".to_owned(),
            },
            key_id: hash.to_owned(),
            limit: KeyLimit::own(number("rate_per_second"), number("burst")),
        }),
        _ => Decision::Deny(Denial::Disabled),
    }
}

/// The caller the HTTP API's authorizer established for a function (its `lambda` context).
pub fn caller_from_authorizer(
    authorizer: &aws_lambda_events::apigw::ApiGatewayRequestAuthorizer,
) -> Option<Caller> {
    caller_from_context(&authorizer.fields)
}

/// What the authorizer hands the functions about the caller (strings: API Gateway passes context
/// values through as they are).
fn context_of(caller: &Caller) -> serde_json::Value {
    let mut context = serde_json::json!({ "keyName": caller.name, "keyId": caller.key_id });
    if let Some(limit) = caller.limit {
        context["rate"] = limit.per_second.to_string().into();
        context["burst"] = limit.burst.to_string().into();
    }
    context
}

/// The caller the authorizer established, from a function's request context (the HTTP API's
/// `requestContext.authorizer.lambda`); `None` when no authorizer ran (a direct invocation).
pub fn caller_from_context(context: &HashMap<String, serde_json::Value>) -> Option<Caller> {
    let text = |name: &str| match context.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let number = |name: &str| text(name)?.parse::<u32>().ok().filter(|n| *n > 0);
    Some(Caller {
        name: text("keyName").unwrap_or_else(|| "unnamed".to_owned()),
        key_id: text("keyId")?,
        limit: KeyLimit::own(number("rate"), number("burst")),
    })
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
            decide("ab", Some(&item(AttributeValue::Bool(true)))),
            Decision::Allow(Caller {
                name: "shop".into(),
                key_id: "ab".into(),
                limit: None
            })
        );
        assert_eq!(
            decide("ab", Some(&item(AttributeValue::Bool(false)))),
            Decision::Deny(Denial::Disabled)
        );
        assert_eq!(
            decide("ab", Some(&item(AttributeValue::S("true".into())))),
            Decision::Deny(Denial::Disabled)
        );
        assert_eq!(decide("ab", None), Decision::Deny(Denial::Unknown));
    }

    #[test]
    fn a_keys_own_limit_travels_from_its_item_through_the_authorizer_to_the_function() {
        let item = HashMap::from([
            ("name".to_owned(), AttributeValue::S("shop".into())),
            ("enabled".to_owned(), AttributeValue::Bool(true)),
            ("rate_per_second".to_owned(), AttributeValue::N("5".into())),
            ("burst".to_owned(), AttributeValue::N("10".into())),
        ]);
        let Decision::Allow(caller) = decide("ab", Some(&item)) else {
            panic!("allowed")
        };
        let limit = KeyLimit {
            per_second: 5,
            burst: 10,
        };
        assert_eq!(caller.limit, Some(limit));
        let context: HashMap<String, serde_json::Value> =
            serde_json::from_value(context_of(&caller)).unwrap();
        assert_eq!(caller_from_context(&context), Some(caller));
        assert_eq!(
            caller_from_context(&HashMap::new()),
            None,
            "no authorizer, no caller"
        );
    }
}
