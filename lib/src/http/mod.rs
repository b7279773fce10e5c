//! Turning HTTP requests into facilitator calls and results into HTTP responses.
//!
//! One response builder for every route and every front end (the Lambda functions and the local
//! server share it). Status codes follow the reference (x402-protocol.md §3.5): 200 for every
//! answer about a payment, valid or not; 400 when the envelope is unusable; 413 when the body is
//! over the limit; 500 only for our own failures, never for anything a caller sent.

use http::{header, Response, StatusCode};
use serde::Serialize;

use crate::{
    facilitator::Facilitator,
    protocol::{parse_request, Reason, RequestError, SettleResponse, VerifyResponse},
    settle::Settler,
};

/// `POST /verify`.
pub async fn verify(
    facilitator: &Facilitator,
    body: &[u8],
    max_body_bytes: usize,
) -> Response<String> {
    if body.len() > max_body_bytes {
        return too_large(max_body_bytes);
    }
    match parse_request(body) {
        Ok(payment) => json(StatusCode::OK, &facilitator.verify(&payment).await),
        Err(RequestError::Malformed { reason, message }) => {
            bad_request(StatusCode::BAD_REQUEST, reason, message)
        }
        Err(RequestError::Refused {
            reason,
            message,
            payer,
        }) => json(
            StatusCode::OK,
            &VerifyResponse::invalid(reason, Some(message), payer),
        ),
    }
}

/// `POST /settle`. Same envelope and status codes as `/verify`; the body is a `SettleResponse`.
pub async fn settle(settler: &Settler, body: &[u8], max_body_bytes: usize) -> Response<String> {
    if body.len() > max_body_bytes {
        return too_large(max_body_bytes);
    }
    match parse_request(body) {
        Ok(payment) => json(StatusCode::OK, &settler.settle(&payment).await),
        Err(RequestError::Malformed { reason, message }) => {
            bad_request(StatusCode::BAD_REQUEST, reason, message)
        }
        Err(RequestError::Refused {
            reason,
            message,
            payer,
        }) => json(
            StatusCode::OK,
            &SettleResponse {
                success: false,
                error_reason: Some(reason),
                error_message: Some(message),
                payer,
                transaction: String::new(),
                network: String::new(),
            },
        ),
    }
}

/// 413 for a body over `max_body_bytes`. Front ends that stream the body call this as soon as
/// the limit is passed instead of reading the rest.
pub fn too_large(max_body_bytes: usize) -> Response<String> {
    bad_request(
        StatusCode::PAYLOAD_TOO_LARGE,
        Reason::InvalidPayload,
        format!("the body is larger than the limit of {max_body_bytes} bytes"),
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

/// A 4xx for an unusable body. It carries `error` (the reference's shape) and also
/// `isValid:false` + `invalidReason`, which the TypeScript client turns into a typed error.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BadRequestBody {
    error: String,
    is_valid: bool,
    invalid_reason: Reason,
    invalid_message: String,
}

fn bad_request(status: StatusCode, reason: Reason, message: String) -> Response<String> {
    json(
        status,
        &BadRequestBody {
            error: message.clone(),
            is_valid: false,
            invalid_reason: reason,
            invalid_message: message,
        },
    )
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
