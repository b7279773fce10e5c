//! One chain's RPC endpoints: the URLs from the configuration or from a Secrets Manager secret,
//! and the failover that sends each request to a healthy one ([`super::failover`] has the rules).
//!
//! The URLs are resolved on first use, not at cold start, so a function that never touches this
//! chain never reads its secret. A secret is read again after [`SECRET_TTL`], and at once when a
//! node answers 401/403 (a rotated key), so a new key or list reaches running instances in
//! minutes. Every URL that appears in an error or a log line is redacted: it may hold a key.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use alloy::{providers::RootProvider, transports::TransportResult};

use super::{
    answers::{node_answer, ChainError, NodeAnswer, NodeError},
    failover::{attempt_limit, Health, Miss, SET_ASIDE},
};
use crate::config::{parse_rpc_urls, redact_url, RpcSource};

/// A boxed, sendable future: what one request to one node is. Boxed because alloy's futures are
/// very deep types, and every async fn that awaits them would inherit that depth.
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// How long a secret's URLs are used before the secret is read again: a rotated key or an added
/// URL reaches every instance within minutes, at one `GetSecretValue` per instance and network
/// per five minutes (a few cents a month).
pub const SECRET_TTL: Duration = Duration::from_secs(300);
/// The least time between two reads forced by a 401/403: while a revoked key is still in the
/// secret, every call would otherwise read the secret again.
const FORCED_READ_INTERVAL: Duration = Duration::from_secs(10);
/// When a secret cannot be read again, its old URLs are kept (a Secrets Manager outage should not
/// stop settlements) and the read is tried again this much later.
const SECRET_RETRY: Duration = Duration::from_secs(30);

/// What one request to one node came to ([`Rpc::call_once`]).
#[derive(Debug)]
pub(crate) enum Once<T> {
    Value(T),
    /// The node's error answer: its JSON-RPC code and message.
    Error(i64, String),
    /// No answer within the call's timeout.
    Timeout,
    /// No answer: the URLs could not be had, or the transport failed.
    Failed,
}

/// One URL and its client. The URL is kept only to scrub it from errors and to compare lists.
struct Endpoint {
    url: String,
    provider: RootProvider,
}

/// The URLs read at one time, with their health.
struct Urls {
    endpoints: Vec<Endpoint>,
    health: Mutex<Health>,
    /// When the secret is to be read again (`None`: URLs from the configuration, never).
    read_again_at: Mutex<Option<Instant>>,
}

impl Urls {
    fn new(urls: Vec<String>, read_again_at: Option<Instant>) -> Result<Self, ChainError> {
        let endpoints = urls
            .into_iter()
            .map(|url| {
                let parsed = url.parse().map_err(|_| {
                    let shown = redact_url(&url);
                    ChainError::Transport(format!("RPC URL {shown} is not a valid URL"))
                })?;
                Ok(Endpoint {
                    provider: RootProvider::new_http(parsed),
                    url,
                })
            })
            .collect::<Result<Vec<_>, ChainError>>()?;
        Ok(Urls {
            health: Mutex::new(Health::new(endpoints.len())),
            endpoints,
            read_again_at: Mutex::new(read_again_at),
        })
    }

    fn due(&self, now: Instant) -> bool {
        lock(&self.read_again_at).is_some_and(|at| at <= now)
    }

    fn same_list(&self, urls: &[String]) -> bool {
        self.endpoints.iter().map(|e| &e.url).eq(urls.iter())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A chain's RPC endpoints and their failover.
pub(crate) struct Rpc {
    source: RpcSource,
    /// The network's CAIP-2 id, for the metric of a URL set aside.
    network: String,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    timeout: Duration,
    current: Mutex<Option<Arc<Urls>>>,
    /// Held while the secret is read, so that concurrent calls wait for one read.
    reading: tokio::sync::Mutex<()>,
    last_forced_read: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Rpc {
    // The resolved URLs may carry an API key: only the (redacting) source is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("source", &self.source)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    pub(crate) fn new(
        source: RpcSource,
        secrets: Option<aws_sdk_secretsmanager::Client>,
        timeout: Duration,
    ) -> Self {
        Rpc {
            source,
            network: crate::metrics::OTHER_NETWORK.to_owned(),
            secrets,
            timeout,
            current: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            last_forced_read: Mutex::new(None),
        }
    }

    /// Names the network in metrics.
    pub(crate) fn set_network(&mut self, caip2: &str) {
        self.network = caip2.to_owned();
    }

    /// Runs one request on the first healthy URL, and on the next when one gets no usable answer
    /// ([`Miss`]), within the timeout for the whole call. The node's own verdicts (a revert, a
    /// pool refusal) come back as `Ok(Err(NodeError))` and are not asked of another node; when
    /// no node answered, the last URL's failure is the error. `request` may run once per URL, so
    /// it must be safe to repeat on another node: every read is, and so is sending the same
    /// signed bytes (docs/settlement.md, "RPC failover").
    pub(crate) async fn call<T>(
        &self,
        request: impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
    ) -> Result<Result<T, NodeError>, ChainError> {
        // The secret's first read has a timeout of its own, as before lists; the call's starts after.
        let mut urls = self.urls(false).await?;
        let deadline = Instant::now() + self.timeout;
        let mut reread = false;
        loop {
            let order = lock(&urls.health).order(Instant::now());
            match self.try_in_order(&urls, &order, deadline, &request).await {
                Ok(answer) => return Ok(answer),
                Err((Some(Miss::Unauthorized), _)) if !reread && self.may_force_read() => {
                    // A rotated key: read the secret now and try its URLs with the time left.
                    urls = self.urls(true).await?;
                    reread = true;
                }
                Err((_, error)) => return Err(error),
            }
        }
    }

    /// One request to the first healthy URL only, within `limit`, and what came of it, the node's
    /// error answer unclassified. For a request whose failure the caller handles by another
    /// request (an optional method a node may not have): nothing is failed over, and no URL is set
    /// aside for it.
    pub(crate) async fn call_once<T>(
        &self,
        limit: Duration,
        request: impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
    ) -> Once<T> {
        let Ok(urls) = self.urls(false).await else {
            return Once::Failed;
        };
        let Some(&first) = lock(&urls.health).order(Instant::now()).first() else {
            return Once::Failed;
        };
        let endpoint = &urls.endpoints[first];
        match tokio::time::timeout(limit, request(endpoint.provider.clone())).await {
            Ok(Ok(value)) => Once::Value(value),
            Ok(Err(error)) => match error.as_error_resp() {
                Some(payload) => Once::Error(payload.code, payload.message.to_string()),
                None => Once::Failed,
            },
            Err(_) => Once::Timeout,
        }
    }

    /// The bound on one call, across all the URLs (`X402_RPC_TIMEOUT_MS`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Tries `order`'s URLs one after another until one answers. On failure: whether a URL
    /// refused our key, and the last error.
    async fn try_in_order<T>(
        &self,
        urls: &Urls,
        order: &[usize],
        deadline: Instant,
        request: &impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
    ) -> Result<Result<T, NodeError>, (Option<Miss>, ChainError)> {
        let mut unauthorized = None;
        let mut last = ChainError::Timeout(self.timeout);
        for (k, &i) in order.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let endpoint = &urls.endpoints[i];
            let limit = attempt_limit(left, k + 1 < order.len());
            match attempt(endpoint, limit, request).await {
                Ok(answer) => {
                    lock(&urls.health).answered(i);
                    return Ok(answer);
                }
                Err((miss, error)) => {
                    lock(&urls.health).set_aside(i, Instant::now());
                    let url = redact_url(&endpoint.url);
                    let why = format!("{miss:?}");
                    tracing::warn!(network = %self.network, %url, %why, %error, aside_s = SET_ASIDE.as_secs(), "an RPC URL got no usable answer; set aside, calls go to the network's next URL if it has one");
                    crate::metrics::rpc_url_set_aside(&self.network, &url, &why);
                    if miss == Miss::Unauthorized {
                        unauthorized = Some(miss);
                    }
                    last = error;
                }
            }
        }
        Err((unauthorized, last))
    }

    /// Whether a 401/403 may make the secret be read again now (at most once per
    /// [`FORCED_READ_INTERVAL`]); URLs from the configuration have nothing to read.
    fn may_force_read(&self) -> bool {
        if !matches!(self.source, RpcSource::Secret(_)) {
            return false;
        }
        let mut last = lock(&self.last_forced_read);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < FORCED_READ_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The URLs to use: the ones held, unless there are none yet, the secret's are due to be read
    /// again, or `force`. A failed re-read keeps the URLs held.
    async fn urls(&self, force: bool) -> Result<Arc<Urls>, ChainError> {
        let held = lock(&self.current).clone();
        if let Some(urls) = held.as_ref().filter(|u| !force && !u.due(Instant::now())) {
            return Ok(urls.clone());
        }
        let _reading = self.reading.lock().await;
        let now_held = lock(&self.current).clone();
        if let Some(urls) = now_held.as_ref() {
            let replaced = !held.as_ref().is_some_and(|h| Arc::ptr_eq(h, urls));
            if replaced || (!force && !urls.due(Instant::now())) {
                return Ok(urls.clone()); // another call read it meanwhile
            }
        }
        let next_read =
            matches!(self.source, RpcSource::Secret(_)).then(|| Instant::now() + SECRET_TTL);
        let urls = match (self.read_source().await, now_held) {
            (Ok(list), Some(old)) if old.same_list(&list) => {
                *lock(&old.read_again_at) = next_read;
                old
            }
            (Ok(list), old) => match Urls::new(list, next_read) {
                Ok(urls) => Arc::new(urls),
                Err(e) => keep_after_failed_read(old, e)?,
            },
            (Err(e), old) => keep_after_failed_read(old, e)?,
        };
        *lock(&self.current) = Some(urls.clone());
        Ok(urls)
    }

    /// The URLs as the configuration or the secret has them now.
    async fn read_source(&self) -> Result<Vec<String>, ChainError> {
        let id = match &self.source {
            RpcSource::Urls(urls) => return Ok(urls.clone()),
            RpcSource::Secret(id) => id,
        };
        let fail = |problem: String| ChainError::Secret {
            secret: id.clone(),
            problem,
        };
        let client = self
            .secrets
            .as_ref()
            .ok_or_else(|| fail("no Secrets Manager client".into()))?;
        // Boxed for the same reason as the RPC requests: the SDK's future type is very deep.
        let request = Box::pin(client.get_secret_value().secret_id(id).send());
        let answer = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
        let value = answer
            .secret_string()
            .ok_or_else(|| fail("the secret has no string value".into()))?;
        parse_rpc_urls(value).map_err(fail)
    }
}

/// The URLs held before a read of the secret that failed (or gave a URL that does not parse):
/// kept in use, since a Secrets Manager outage should not stop settlements, and read again after
/// [`SECRET_RETRY`]. With none held, the read's error is the call's.
fn keep_after_failed_read(
    held: Option<Arc<Urls>>,
    error: ChainError,
) -> Result<Arc<Urls>, ChainError> {
    let held = held.ok_or_else(|| error.clone())?;
    tracing::warn!(%error, retry_s = SECRET_RETRY.as_secs(), "the RPC secret could not be read again; the URLs read before stay in use");
    *lock(&held.read_again_at) = Some(Instant::now() + SECRET_RETRY);
    Ok(held)
}

/// One request to one node within `limit`: its answer (a value, or a verdict the node gave), or
/// why it gave none.
async fn attempt<T>(
    endpoint: &Endpoint,
    limit: Duration,
    request: &impl Fn(RootProvider) -> BoxFuture<TransportResult<T>>,
) -> Result<Result<T, NodeError>, (Miss, ChainError)> {
    let error = match tokio::time::timeout(limit, request(endpoint.provider.clone())).await {
        Err(_) => return Err((Miss::Timeout, ChainError::Timeout(limit))),
        Ok(Ok(value)) => return Ok(Ok(value)),
        Ok(Err(error)) => error,
    };
    if let Some(payload) = error.as_error_resp() {
        let message = payload.message.to_string();
        return match node_answer(payload.code, &message) {
            NodeAnswer::Transient => Err((Miss::Failed, ChainError::Node(message))),
            kind => Ok(Err(NodeError { kind, message })),
        };
    }
    let status = error
        .as_transport_err()
        .and_then(|e| e.as_http_error())
        .map(|e| e.status);
    let miss = match status {
        Some(401 | 403) => Miss::Unauthorized,
        _ => Miss::Failed,
    };
    // HTTP client errors quote the URL, which may hold an API key.
    let shown = error
        .to_string()
        .replace(endpoint.url.as_str(), &redact_url(&endpoint.url));
    Err((miss, ChainError::Transport(shown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_forces_a_secret_read_at_most_once_per_interval() {
        let secret = Rpc::new(RpcSource::Secret("x402/rpc/a".into()), None, SECRET_RETRY);
        assert!(secret.may_force_read());
        assert!(!secret.may_force_read(), "again within the interval");
        // URLs from the configuration have nothing to read again.
        let configured = Rpc::new(RpcSource::url("http://a.example"), None, SECRET_RETRY);
        assert!(!configured.may_force_read());
    }

    /// The secret cannot be read (no Secrets Manager client here): with nothing held that is the
    /// call's error; with URLs held, they stay in use and the read waits for [`SECRET_RETRY`].
    #[tokio::test]
    async fn a_secret_that_cannot_be_read_again_leaves_its_urls_in_use() {
        let rpc = Rpc::new(RpcSource::Secret("x402/rpc/a".into()), None, SECRET_RETRY);
        let error = rpc.urls(false).await.err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("x402/rpc/a")),
            "{error:?}"
        );
        let due_now = Some(Instant::now());
        let held = Arc::new(Urls::new(vec!["http://127.0.0.1:1/KEY".into()], due_now).unwrap());
        *lock(&rpc.current) = Some(held.clone());
        let urls = rpc.urls(false).await.unwrap();
        assert!(Arc::ptr_eq(&urls, &held));
        assert!(!urls.due(Instant::now()), "not read again on every call");
        assert!(urls.due(Instant::now() + SECRET_RETRY));
    }
}
