//! Turning HTTP requests into facilitator calls and results into HTTP responses.
//!
//! One response builder for every route and every front end (the Lambda functions and the local
//! server share it). Status codes follow the reference (x402-protocol.md §3.5): 200 for every
//! answer about a payment, valid or not; 400 when the envelope is unusable; 413 when the body is
//! over the limit; 500 only for our own failures, never for anything a caller sent.

use std::time::Instant;

use http::{header, Response, StatusCode};
use serde::Serialize;

use crate::{
    auth::{Admission, Caller, Denial, KeyLimit, RateLimiter},
    facilitator::Facilitator,
    metrics::{self, SettleOutcome, VerifyOutcome},
    protocol::{
        network_hint, parse_request, Payment, Reason, RequestError, SettleResponse, VerifyResponse,
    },
    settle::Settler,
};

/// The two payment routes: the same envelope, each answering in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentRoute {
    Verify,
    Settle,
}

impl PaymentRoute {
    /// The route's refusal body: `{isValid:false, …}` or `{success:false, …, transaction:""}`;
    /// settle's `network` is the one the request names, if any.
    fn refusal(
        self,
        reason: Reason,
        message: String,
        payer: Option<String>,
        network: Option<String>,
    ) -> serde_json::Value {
        let body = match self {
            PaymentRoute::Verify => {
                serde_json::to_value(VerifyResponse::invalid(reason, Some(message), payer))
            }
            PaymentRoute::Settle => serde_json::to_value(SettleResponse {
                success: false,
                error_reason: Some(reason),
                error_message: Some(message),
                payer,
                transaction: String::new(),
                network: network.unwrap_or_default(),
                amount: None,
            }),
        };
        body.unwrap_or_default()
    }
}

/// `POST /verify`. Every answer is counted (`VerifyCount`, `VerifyLatency`).
pub async fn verify(
    facilitator: &Facilitator,
    body: &[u8],
    max_body_bytes: usize,
) -> Response<String> {
    let started = Instant::now();
    match accept(PaymentRoute::Verify, body, max_body_bytes) {
        Ok(payment) => {
            let answer = facilitator.verify(&payment).await;
            let outcome = match answer.is_valid {
                true => VerifyOutcome::Valid,
                false => VerifyOutcome::Invalid,
            };
            let reason = answer.invalid_reason.map(Reason::as_str);
            let network = served_network(facilitator, &payment);
            metrics::verify(network, outcome, reason, started.elapsed());
            json(StatusCode::OK, &answer)
        }
        Err(refusal) => {
            let outcome = match refusal.status() {
                StatusCode::OK => VerifyOutcome::Invalid,
                _ => VerifyOutcome::Malformed,
            };
            metrics::verify(metrics::OTHER_NETWORK, outcome, None, started.elapsed());
            *refusal
        }
    }
}

/// `POST /settle`. Every answer is counted (`SettleCount`, `SettleLatency`): the settle failure
/// rate alarm reads these.
pub async fn settle(settler: &Settler, body: &[u8], max_body_bytes: usize) -> Response<String> {
    let started = Instant::now();
    match accept(PaymentRoute::Settle, body, max_body_bytes) {
        Ok(payment) => {
            let crate::settle::SettleAnswer {
                status,
                response: answer,
            } = settler.settle(&payment).await;
            let outcome = match (answer.success, answer.error_reason) {
                (true, _) => SettleOutcome::Success,
                (false, Some(Reason::SettlementPending)) => SettleOutcome::Pending,
                (false, _) => SettleOutcome::Failure,
            };
            let reason = answer.error_reason.map(Reason::as_str);
            let network = served_network(settler.facilitator(), &payment);
            metrics::settle(network, outcome, reason, started.elapsed());
            json(status, &answer)
        }
        Err(refusal) => {
            let outcome = match refusal.status() {
                StatusCode::OK => SettleOutcome::Failure,
                _ => SettleOutcome::Malformed,
            };
            metrics::settle(metrics::OTHER_NETWORK, outcome, None, started.elapsed());
            *refusal
        }
    }
}

/// The payment's network as a metric dimension: the CAIP-2 id when this deployment serves it,
/// `other` otherwise, so that made-up network names never become metrics.
fn served_network<'a>(facilitator: &'a Facilitator, payment: &Payment) -> &'a str {
    facilitator
        .route(payment)
        .map(|scheme| scheme.network().caip2())
        .unwrap_or(metrics::OTHER_NETWORK)
}

/// What API Gateway answers when the Lambda authorizer refuses, mirrored by the local server: 401
/// without a key (API Gateway answers that itself when the identity header is absent), 403 for a
/// key it does not accept. The body does not say why, so a prober learns nothing about keys.
pub fn refused(denial: Denial) -> Response<String> {
    let (status, message) = match denial {
        Denial::Missing => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        Denial::Malformed | Denial::Unknown | Denial::Disabled => {
            (StatusCode::FORBIDDEN, "Forbidden")
        }
    };
    let mut response = json(status, &serde_json::json!({ "message": message }));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The per-key limiter of a function that serves a payment route, when the deployment has API keys
/// (`X402_API_KEYS_TABLE`).
pub fn key_limiter(
    config: &crate::config::Config,
    aws: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<RateLimiter> {
    let table = crate::config::api_keys_table(lookup)?;
    Some(RateLimiter::new(
        aws_sdk_dynamodb::Client::new(aws),
        table,
        config.key_limit,
    ))
}

/// The per-key limit (docs/security.md, "Limits per key"), before anything else of a payment route:
/// the 429 to answer instead when the caller is over its budget. No limiter or no caller (no API
/// keys here) limits nothing, and neither does a limiter that cannot be asked: the limit protects
/// capacity, and no payment depends on it.
pub async fn over_limit(
    limiter: Option<&RateLimiter>,
    caller: Option<&Caller>,
    route: PaymentRoute,
) -> Option<Response<String>> {
    let (limiter, caller) = (limiter?, caller?);
    match limiter.admit(caller, crate::clock::now_ms()).await {
        Ok(Admission::Admitted) => None,
        Ok(Admission::Limited {
            retry_after_secs,
            limit,
        }) => {
            tracing::info!(key = %caller.name, retry_after_secs, "API key over its rate limit");
            metrics::key_limited(route_name(route));
            Some(too_many(route, &caller.name, limit, retry_after_secs))
        }
        Err(e) => {
            tracing::error!(key = %caller.name, error = %e, "the per-key limit could not be checked; the request goes through");
            None
        }
    }
}

fn route_name(route: PaymentRoute) -> &'static str {
    match route {
        PaymentRoute::Verify => "verify",
        PaymentRoute::Settle => "settle",
    }
}

/// 429 with `Retry-After`, in the route's own refusal shape, so that the official clients read it
/// as a typed error (and newer ones wait as told).
fn too_many(
    route: PaymentRoute,
    key: &str,
    limit: KeyLimit,
    retry_after_secs: u64,
) -> Response<String> {
    let reason = match route {
        PaymentRoute::Verify => Reason::UnexpectedVerifyError,
        PaymentRoute::Settle => Reason::UnexpectedSettleError,
    };
    let message = format!(
        "API key {key:?} is over its limit of {} requests a second (bursts of {}): retry after {retry_after_secs} s",
        limit.per_second, limit.burst
    );
    let mut response = json(
        StatusCode::TOO_MANY_REQUESTS,
        &route.refusal(reason, message, None, None),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_secs),
    );
    response
}

/// What both payment routes do before the facilitator sees anything: the size limit and parsing.
/// Returns the payment, or the answer that refuses the body.
fn accept(
    route: PaymentRoute,
    body: &[u8],
    max_body_bytes: usize,
) -> Result<Payment, Box<Response<String>>> {
    if body.len() > max_body_bytes {
        return Err(Box::new(too_large(route, max_body_bytes)));
    }
    parse_request(body).map_err(|e| {
        Box::new(match e {
            RequestError::Malformed { reason, message } => bad_request(
                route,
                StatusCode::BAD_REQUEST,
                reason,
                message,
                network_hint(body),
            ),
            RequestError::Refused {
                reason,
                message,
                payer,
            } => json(
                StatusCode::OK,
                &route.refusal(reason, message, payer, network_hint(body)),
            ),
        })
    })
}

/// 413 for a body over `max_body_bytes`. Front ends that stream the body call this as soon as
/// the limit is passed instead of reading the rest.
pub fn too_large(route: PaymentRoute, max_body_bytes: usize) -> Response<String> {
    bad_request(
        route,
        StatusCode::PAYLOAD_TOO_LARGE,
        Reason::InvalidPayload,
        format!("the body is larger than the limit of {max_body_bytes} bytes"),
        None,
    )
}

/// `GET /supported`.
pub async fn supported(facilitator: &Facilitator) -> Response<String> {
    match facilitator.supported().await {
        Ok(supported) => json(StatusCode::OK, &supported),
        Err(e) => {
            tracing::error!(error = %e, "cannot list the signer lanes");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &ErrorBody {
                    error: e.to_string(),
                },
            )
        }
    }
}

/// `GET /health`: the process is up. Says nothing about the chain or AWS on purpose, so that a
/// load balancer does not take every instance out when an RPC provider has a bad minute.
pub fn health() -> Response<String> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// 503: a route this deployment does not serve right now, and why.
pub fn unavailable(why: &str) -> Response<String> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &ErrorBody {
            error: why.to_owned(),
        },
    )
}

/// Any path or method we do not serve.
pub fn not_found(method: &http::Method, path: &str) -> Response<String> {
    let path: String = path.chars().take(200).collect();
    json(
        StatusCode::NOT_FOUND,
        &ErrorBody {
            error: format!("no route for {method} {path}"),
        },
    )
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A 4xx for an unusable body: the route's own refusal shape, which the TypeScript client turns
/// into a typed error, plus `error`, the reference's shape for a 400.
fn bad_request(
    route: PaymentRoute,
    status: StatusCode,
    reason: Reason,
    message: String,
    network: Option<String>,
) -> Response<String> {
    let mut body = route.refusal(reason, message.clone(), None, network);
    body["error"] = serde_json::Value::String(message);
    json(status, &body)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<String> {
    // Serialising our own plain structs cannot fail; fall back to a fixed body rather than panic.
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"response serialisation failed"}"#.to_owned(),
        ),
    };
    let mut response = Response::new(text);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(route: PaymentRoute, body: &str) -> (StatusCode, serde_json::Value) {
        let response = *accept(route, body.as_bytes(), 1 << 16).expect_err("a refusal");
        let json = serde_json::from_str(response.body()).expect("a JSON body");
        (response.status(), json)
    }

    #[test]
    fn settle_refusals_echo_the_network_the_request_names() {
        let unknown_version = r#"{"x402Version":3,"paymentPayload":{"x402Version":3,"accepted":{"network":"eip155:84532"}},"paymentRequirements":{"network":"eip155:84532"}}"#;
        let (status, body) = refused(PaymentRoute::Settle, unknown_version);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["errorReason"], "invalid_x402_version");
        assert_eq!(body["network"], "eip155:84532");

        let requirements_not_an_object = r#"{"paymentPayload":{"x402Version":1,"network":"base-sepolia"},"paymentRequirements":[]}"#;
        let (status, body) = refused(PaymentRoute::Settle, requirements_not_an_object);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["network"], "base-sepolia");

        let (_, body) = refused(PaymentRoute::Settle, "not json");
        assert_eq!(body["network"], "");
        let (_, body) = refused(PaymentRoute::Verify, unknown_version);
        assert_eq!(body.get("network"), None, "verify answers have no network");
    }
}
