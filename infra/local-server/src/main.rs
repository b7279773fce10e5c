//! Serves the facilitator on one local base URL (default `http://127.0.0.1:4020`) with the same
//! routes as the HTTP API in front of the Lambda functions: `POST /verify`, `POST /settle`,
//! `GET /supported`, `GET /health`. It calls the very handlers the Lambda functions call; only the
//! transport differs. Settlement itself is signed by the settle-worker Lambda (run under the Lambda
//! emulator and fed by the local SQS poller), exactly as in AWS.
//!
//! Configuration comes from the same environment variables as the functions, plus `X402_LISTEN`.
//! Without `X402_SETTLE_QUEUE_URL` it serves verification only and answers `/settle` with a 503.
//! With `X402_API_KEYS_TABLE` it checks API keys in front of `/verify` and `/settle` with the same
//! code as the HTTP API's Lambda authorizer, answering 401/403 as API Gateway does; without it
//! (the default, and what the test suite's main server uses) it checks nothing.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use facilitator::{
    auth::{ApiKeys, Caller, Decision, RateLimiter},
    config,
    http::{self as routes, PaymentRoute},
    settle::Settler,
    telemetry, Config, Facilitator,
};
use http::{header::AUTHORIZATION, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

const DEFAULT_LISTEN: &str = "127.0.0.1:4020";

struct App {
    /// Present when settlement is configured; it carries the facilitator too.
    settler: Option<Settler>,
    facilitator: Option<Facilitator>,
    /// Present when `X402_API_KEYS_TABLE` is set: the payment routes then need a key, and each
    /// key has its rate limit.
    api_keys: Option<ApiKeys>,
    limiter: Option<RateLimiter>,
    max_body_bytes: usize,
    /// Numbers requests for the logs, as Lambda's request id does in AWS.
    requests: AtomicU64,
}

impl App {
    fn facilitator(&self) -> Option<&Facilitator> {
        self.settler
            .as_ref()
            .map(Settler::facilitator)
            .or(self.facilitator.as_ref())
    }
}

// One thread, as a verify Lambda instance runs (functions/verify): every request here waits on I/O
// far longer than it computes, and the multi-threaded scheduler's hand-offs between threads (a
// futex wake and a context switch each) cost more CPU per /verify than they saved (issue 16).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    telemetry::init();
    let config = Config::from_env()?;
    let listen: SocketAddr = std::env::var("X402_LISTEN")
        .unwrap_or_else(|_| DEFAULT_LISTEN.to_owned())
        .parse()
        .map_err(|e| format!("X402_LISTEN must be host:port: {e}"))?;
    let aws = facilitator::aws_config().await;
    let (settler, facilitator) = match config.settle_queue_url {
        Some(_) => (Some(Settler::from_config(&config, &aws)?), None),
        None => (None, Some(Facilitator::new(&config, &aws))),
    };
    let api_keys = config::api_keys_table(|var| std::env::var(var).ok())
        .map(|table| ApiKeys::new(aws_sdk_dynamodb::Client::new(&aws), table));
    let limiter = routes::key_limiter(&config, &aws, |var| std::env::var(var).ok());
    let app = Arc::new(App {
        settler,
        facilitator,
        api_keys,
        limiter,
        max_body_bytes: config.max_body_bytes,
        requests: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, api_keys = app.api_keys.is_some(), "facilitator listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = Arc::clone(&app);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&app), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = app.requests.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", requestId = %format_args!("local-{id}"), path = %request.uri().path());
    let response = route(&app, request).instrument(span).await;
    Ok(response.map(|text| Full::new(Bytes::from(text))))
}

async fn route(app: &App, request: Request<Incoming>) -> Response<String> {
    let (parts, body) = request.into_parts();
    let limit = app.max_body_bytes;
    let payment_route =
        parts.method == Method::POST && matches!(parts.uri.path(), "/verify" | "/settle");
    if let (true, Some(keys)) = (payment_route, &app.api_keys) {
        let caller = match check_key(keys, &parts.headers).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal,
        };
        let route = match parts.uri.path() {
            "/verify" => PaymentRoute::Verify,
            _ => PaymentRoute::Settle,
        };
        if let Some(refusal) = routes::over_limit(app.limiter.as_ref(), Some(&caller), route).await
        {
            return refusal;
        }
    }
    match (&parts.method, parts.uri.path(), app.facilitator()) {
        (&Method::POST, "/verify", Some(facilitator)) => match read(body, limit).await {
            Some(bytes) => routes::verify(facilitator, &bytes, limit).await,
            None => routes::too_large(PaymentRoute::Verify, limit),
        },
        (&Method::POST, "/settle", _) => match (&app.settler, read(body, limit).await) {
            (Some(settler), Some(bytes)) => routes::settle(settler, &bytes, limit).await,
            (Some(_), None) => routes::too_large(PaymentRoute::Settle, limit),
            (None, _) => {
                routes::unavailable("settlement is not configured here (set X402_SETTLE_QUEUE_URL)")
            }
        },
        (&Method::GET, "/supported", Some(facilitator)) => routes::supported(facilitator).await,
        (&Method::GET, "/health", _) => routes::health(),
        (method, path, _) => routes::not_found(method, path),
    }
}

/// The key check the HTTP API's authorizer makes: the caller, or the answer API Gateway would give.
async fn check_key(keys: &ApiKeys, headers: &http::HeaderMap) -> Result<Caller, Response<String>> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match keys.check(header).await {
        Ok(Decision::Allow(caller)) => {
            tracing::info!(key = %caller.name, "API key accepted");
            Ok(caller)
        }
        Ok(Decision::Deny(denial)) => {
            tracing::info!(denial = denial.as_str(), "API key refused");
            Err(routes::refused(denial))
        }
        Err(e) => {
            // API Gateway answers 500 when the authorizer fails; say what failed instead.
            tracing::error!(error = %e, "cannot check the API key");
            Err(routes::unavailable("cannot check the API key now"))
        }
    }
}

/// The body, read only up to the limit (an oversized body gets the same 413 as in Lambda).
async fn read(body: Incoming, limit: usize) -> Option<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}
