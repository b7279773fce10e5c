//! The counting RPC proxy in front of anvil (infra/rpc_counter.py), which the facilitator under test
//! talks to: how many requests it saw, and faults it injects, with [`RpcFault`] lifting a fault
//! however the test ends.

use serde_json::{json, Value};

use super::{http::http, process::finish_detached, stack::stack};

/// Counts of the JSON-RPC requests the counting proxy in front of anvil has seen.
pub async fn rpc_counts() -> Value {
    http()
        .get(format!("{}/__counts", stack().rpc_proxy_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn reset_rpc_counts() {
    let status = http()
        .post(format!("{}/__reset", stack().rpc_proxy_url))
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        status.is_success(),
        "resetting the RPC counts failed: {status}"
    );
}

/// Sets the RPC proxy's fault (infra/rpc_counter.py): `mode` for requests calling any of `methods`
/// (every request when empty); `"none"` lifts it.
pub async fn set_rpc_fault(mode: &str, methods: &[&str]) {
    set_rpc_fault_for(mode, methods, None).await
}

/// [`set_rpc_fault`] that lifts itself after `count` faulted requests (`None`: until changed).
pub async fn set_rpc_fault_for(mode: &str, methods: &[&str], count: Option<u32>) {
    let url = format!("{}/__fault", stack().rpc_proxy_url);
    let answer = http()
        .post(url)
        .json(&json!({"mode": mode, "methods": methods, "count": count}))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "setting the RPC fault {mode} failed: {}",
        answer.status()
    );
}

/// Sets the RPC proxy's fault (infra/rpc_counter.py); the fault is lifted however the test ends.
pub struct RpcFault;

impl RpcFault {
    pub async fn set(mode: &str, methods: &[&str]) -> Self {
        set_rpc_fault(mode, methods).await;
        RpcFault
    }
}

impl Drop for RpcFault {
    fn drop(&mut self) {
        let url = format!("{}/__fault", stack().rpc_proxy_url);
        finish_detached(async move {
            let _ = reqwest::Client::new()
                .post(url)
                .json(&json!({"mode": "none", "methods": []}))
                .send()
                .await;
        });
    }
}
