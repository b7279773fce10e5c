//! Serves the facilitator on one local base URL (default `http://127.0.0.1:4020`) with the same
//! routes as the HTTP API in front of the Lambda functions: `POST /verify`, `GET /supported`,
//! `GET /health`. It calls the very handlers the Lambda functions call; only the transport differs.
//!
//! Configuration comes from the same environment variables as the functions, plus `X402_LISTEN`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use facilitator::{http as routes, telemetry, Config, Facilitator};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const DEFAULT_LISTEN: &str = "127.0.0.1:4020";

struct App {
    facilitator: Facilitator,
    max_body_bytes: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    telemetry::init();
    let config = Config::from_env()?;
    let listen: SocketAddr = std::env::var("X402_LISTEN")
        .unwrap_or_else(|_| DEFAULT_LISTEN.to_owned())
        .parse()
        .map_err(|e| format!("X402_LISTEN must be host:port: {e}"))?;
    let app = Arc::new(App {
        facilitator: Facilitator::new(&config, &facilitator::aws_config().await),
        max_body_bytes: config.max_body_bytes,
    });
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "facilitator listening");
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
    let (parts, body) = request.into_parts();
    let response = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/verify") => {
            // Stop reading at the limit; an oversized body gets the same 413 as in Lambda.
            match Limited::new(body, app.max_body_bytes).collect().await {
                Ok(collected) => {
                    routes::verify(&app.facilitator, &collected.to_bytes(), app.max_body_bytes)
                        .await
                }
                Err(_) => routes::too_large(app.max_body_bytes),
            }
        }
        (&Method::GET, "/supported") => routes::supported(&app.facilitator).await,
        (&Method::GET, "/health") => routes::health(),
        (method, path) => routes::not_found(method, path),
    };
    Ok(response.map(|text| Full::new(Bytes::from(text))))
}
