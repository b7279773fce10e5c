//! Per-key rate limits for `POST /verify` and `POST /settle` (docs/security.md, "Limits per key").
//!
//! The HTTP API's route throttle is one budget for everyone; this gives each API key its own, so one
//! key holder cannot use the whole `/settle` budget. A key's limit is stored with the key
//! (`rate_per_second`, `burst`; `infra/deploy/api-keys.py create --rate --burst`), or else the
//! deployment's default (`X402_KEY_RATE_LIMIT`, `X402_KEY_BURST`).
//!
//! Why in the functions and not the authorizer: API Gateway caches the authorizer's answer per key
//! (`AuthorizerCacheSeconds`), so it does not see every request, and a Lambda authorizer can only
//! allow or deny (403), never answer 429 with `Retry-After`.
//!
//! The state is one item per key in the API keys table, `rate#<key hash>`, holding the generic cell
//! rate algorithm's "theoretical arrival time" (`tat`, unix ms): each request moves it one interval
//! (1 / rate) later, and a request is refused when it is more than `burst − 1` intervals ahead of
//! now. Every change is a conditional write, so concurrent requests on many instances share one
//! budget. A limiter that cannot reach DynamoDB lets the request through: the limit protects
//! capacity, and no payment depends on it.

use aws_sdk_dynamodb::{
    error::SdkError, operation::update_item::UpdateItemError, types::AttributeValue,
};

use super::AuthError;

/// A key's limit: `per_second` requests a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl KeyLimit {
    /// A key's own limit from its stored or passed-on parts: none without a rate; the burst is the
    /// rate when not given.
    pub fn own(per_second: Option<u32>, burst: Option<u32>) -> Option<Self> {
        per_second.map(|per_second| KeyLimit {
            per_second,
            burst: burst.unwrap_or(per_second),
        })
    }

    /// Milliseconds between two requests at the steady rate (at least 1).
    fn interval_ms(self) -> u64 {
        (1000 / u64::from(self.per_second.max(1))).max(1)
    }

    /// How far ahead of now the arrival time may run: `burst − 1` intervals.
    fn tolerance_ms(self) -> u64 {
        self.interval_ms() * u64::from(self.burst.max(1) - 1)
    }
}

/// Who is calling, as the authorizer (or the local server's key check) established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, for logs.
    pub name: String,
    /// The key's hash, which identifies it (never the key).
    pub key_id: String,
    /// The key's own limit, if it has one; otherwise the deployment's default applies.
    pub limit: Option<KeyLimit>,
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Over the limit: the next request fits after this many seconds.
    Limited {
        retry_after_secs: u64,
        limit: KeyLimit,
    },
}

/// The generic cell rate algorithm (pure): the new arrival time when a request at `now_ms` fits,
/// or how many milliseconds until one would.
pub fn gcra(tat: Option<u64>, now_ms: u64, limit: KeyLimit) -> Result<u64, u64> {
    let start = tat.unwrap_or(0).max(now_ms);
    let ahead = start - now_ms;
    match ahead > limit.tolerance_ms() {
        true => Err(ahead - limit.tolerance_ms()),
        false => Ok(start + limit.interval_ms()),
    }
}

/// The per-key limiter, on the API keys table.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// For keys without a limit of their own; `None`: such keys are not limited.
    default: Option<KeyLimit>,
}

impl RateLimiter {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, default: Option<KeyLimit>) -> Self {
        RateLimiter {
            client,
            table,
            default,
        }
    }

    /// Takes one request from the caller's budget, if it has one.
    pub async fn admit(&self, caller: &Caller, now_ms: u64) -> Result<Admission, AuthError> {
        let Some(limit) = caller.limit.or(self.default) else {
            return Ok(Admission::Admitted);
        };
        let key = AttributeValue::S(format!("rate#{}", caller.key_id));
        // Three rounds outlast any race: a round is lost only to a request that moved `tat` between
        // our read and our write.
        for _ in 0..3 {
            // The usual case first: the budget is full (no arrival time ahead of now).
            let fresh = now_ms + limit.interval_ms();
            if self
                .write(
                    &key,
                    "SET tat = :fresh",
                    "attribute_not_exists(tat) OR tat < :now",
                    &[(":fresh", fresh), (":now", now_ms)],
                )
                .await?
            {
                return Ok(Admission::Admitted);
            }
            // Within the burst: one interval more.
            let within = "tat BETWEEN :now AND :latest";
            let latest = now_ms + limit.tolerance_ms();
            if self
                .write(
                    &key,
                    "SET tat = tat + :interval",
                    within,
                    &[
                        (":interval", limit.interval_ms()),
                        (":now", now_ms),
                        (":latest", latest),
                    ],
                )
                .await?
            {
                return Ok(Admission::Admitted);
            }
            if let Err(wait_ms) = gcra(self.arrival_time(&key).await?, now_ms, limit) {
                return Ok(Admission::Limited {
                    retry_after_secs: wait_ms.div_ceil(1000).max(1),
                    limit,
                });
            }
        }
        Ok(Admission::Limited {
            retry_after_secs: 1,
            limit,
        })
    }

    /// One conditional UpdateItem; whether its condition held.
    async fn write(
        &self,
        key: &AttributeValue,
        update: &str,
        condition: &str,
        values: &[(&str, u64)],
    ) -> Result<bool, AuthError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_hash", key.clone())
            .update_expression(update)
            .condition_expression(condition);
        for (name, value) in values {
            request =
                request.expression_attribute_values(*name, AttributeValue::N(value.to_string()));
        }
        match Box::pin(request.send()).await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn arrival_time(&self, key: &AttributeValue) -> Result<Option<u64>, AuthError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_hash", key.clone())
            .consistent_read(true)
            .send();
        let item = Box::pin(read).await.map_err(|e| self.error(e))?.item;
        Ok(item
            .as_ref()
            .and_then(|i| i.get("tat"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()))
    }

    fn error<E: std::error::Error + Send + Sync + 'static>(&self, e: E) -> AuthError {
        AuthError {
            table: self.table.clone(),
            problem: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_A_SECOND_BURST_THREE: KeyLimit = KeyLimit {
        per_second: 2,
        burst: 3,
    };

    #[test]
    fn a_full_budget_admits_a_burst_then_refuses_until_an_interval_passes() {
        let limit = TWO_A_SECOND_BURST_THREE;
        let now = 10_000;
        let first = gcra(None, now, limit).unwrap();
        assert_eq!(first, now + 500);
        let second = gcra(Some(first), now, limit).unwrap();
        let third = gcra(Some(second), now, limit).unwrap();
        assert_eq!(third, now + 1_500, "three at once: the burst");
        assert_eq!(
            gcra(Some(third), now, limit),
            Err(500),
            "the fourth waits an interval"
        );
        assert!(gcra(Some(third), now + 500, limit).is_ok());
    }

    #[test]
    fn an_idle_key_starts_from_now_not_from_its_old_arrival_time() {
        assert_eq!(
            gcra(Some(1_000), 50_000, TWO_A_SECOND_BURST_THREE),
            Ok(50_500)
        );
    }

    #[test]
    fn a_burst_of_one_admits_one_per_interval() {
        let limit = KeyLimit {
            per_second: 1,
            burst: 1,
        };
        let next = gcra(None, 0, limit).unwrap();
        assert_eq!(gcra(Some(next), 0, limit), Err(1_000));
        assert_eq!(gcra(Some(next), 999, limit), Err(1));
        assert!(gcra(Some(next), 1_000, limit).is_ok());
    }
}
