//! What the integration tests share: the local stack's description, payments signed by its test
//! payers, and small clients for the facilitator, the chain and DynamoDB.
//!
//! The stack is started by `infra/test.sh` (or `infra/stack/stack.sh up` plus a running facilitator);
//! these tests fail with a clear message when it is not there, rather than pass without checking.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy::{
    primitives::{Address, Bytes, B256, U256},
    signers::{local::PrivateKeySigner, SignerSync},
    sol,
    sol_types::{eip712_domain, SolCall, SolStruct},
};
use serde::Deserialize;

pub mod own_queue;
pub mod replay;
use serde_json::{json, Value};

/// The local stack as `infra/stack/stack.sh up` describes it in `$X402_STACK_DIR/stack.json`.
#[derive(Debug, Deserialize)]
pub struct Stack {
    #[serde(rename = "ANVIL_URL")]
    pub anvil_url: String,
    #[serde(rename = "RPC_PROXY_URL")]
    pub rpc_proxy_url: String,
    #[serde(rename = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: String,
    #[serde(rename = "X402_TOKEN")]
    pub token: Address,
    #[serde(rename = "X402_OTHER_TOKEN")]
    pub other_token: Address,
    #[serde(rename = "X402_LANE_ADDRESSES")]
    pub lane_addresses: String,
    #[serde(rename = "X402_PAYMENTS_TABLE")]
    pub payments_table: String,
    #[serde(rename = "X402_LANES_TABLE")]
    pub lanes_table: String,
    #[serde(rename = "X402_SETTLE_DLQ_URL")]
    pub settle_dlq_url: String,
    pub payers: Vec<Account>,
    pub payee: Account,
    pub deployer: Account,
    pub lanes: Vec<Lane>,
}

/// A signer lane: its KMS key and the address that key signs for.
#[derive(Debug, Deserialize)]
pub struct Lane {
    #[serde(rename = "keyId")]
    pub key_id: String,
    pub address: Address,
}

#[derive(Debug, Deserialize)]
pub struct Account {
    pub address: Address,
    #[serde(rename = "privateKey", default)]
    pub private_key: Option<B256>,
}

fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the integration tests through infra/test.sh, which starts the local stack")
    })
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let path = format!("{}/stack.json", required_env("X402_STACK_DIR"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} is not the expected stack description: {e}"))
    })
}

/// The facilitator's base URL (the local server), e.g. `http://127.0.0.1:14020`.
pub fn base_url() -> String {
    required_env("X402_BASE_URL")
}

pub const CHAIN_ID: u64 = 84532;
pub const NETWORK: &str = "eip155:84532";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter,
        uint256 validBefore, bytes32 nonce, bytes signature) external;
    function balanceOf(address account) external view returns (uint256);
}

/// A payment under construction: every field can be changed before (or after) signing.
#[derive(Debug, Clone)]
pub struct PaymentBuilder {
    pub signer: PrivateKeySigner,
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    pub asset: Address,
    pub amount: String,
    pub pay_to: Address,
    pub network: String,
    pub scheme: String,
    pub domain_name: String,
    pub domain_version: String,
    pub domain_chain_id: u64,
    pub signature: Option<Bytes>,
}

/// A 32-byte nonce no other test (in this or an earlier run on the same stack) has used.
pub fn random_nonce() -> B256 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!(
        "{}:{}:{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    alloy::primitives::keccak256(seed.as_bytes())
}

impl PaymentBuilder {
    /// 1 USDC (1_000_000 atomic units) from test payer `payer` to the stack's payee, valid now.
    pub fn new(payer: usize) -> Self {
        let key = stack().payers[payer].private_key.expect("payers have keys");
        Self::with_signer(PrivateKeySigner::from_bytes(&key).unwrap())
    }

    pub fn with_signer(signer: PrivateKeySigner) -> Self {
        let s = stack();
        let now = now();
        PaymentBuilder {
            from: signer.address(),
            signer,
            to: s.payee.address,
            value: U256::from(1_000_000u64),
            valid_after: now - 600,
            valid_before: now + 300,
            nonce: random_nonce(),
            asset: s.token,
            amount: "1000000".into(),
            pay_to: s.payee.address,
            network: NETWORK.into(),
            scheme: "exact".into(),
            domain_name: "USDC".into(),
            domain_version: "2".into(),
            domain_chain_id: CHAIN_ID,
            signature: None,
        }
    }

    pub fn edit(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// Signs what the builder says now (EIP-712 over the token's domain).
    pub fn sign(mut self) -> Self {
        let domain = eip712_domain! {
            name: self.domain_name.clone(),
            version: self.domain_version.clone(),
            chain_id: self.domain_chain_id,
            verifying_contract: self.asset,
        };
        let message = TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        let signature = self
            .signer
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .unwrap();
        self.signature = Some(signature.as_bytes().into());
        self
    }

    pub fn requirements(&self) -> Value {
        json!({"scheme":self.scheme,"network":self.network,"amount":self.amount,"asset":self.asset,
               "payTo":self.pay_to,"maxTimeoutSeconds":300,
               "extra":{"name":self.domain_name,"version":self.domain_version}})
    }

    pub fn authorization(&self) -> Value {
        json!({"from":self.from,"to":self.to,"value":self.value.to_string(),
               "validAfter":self.valid_after.to_string(),"validBefore":self.valid_before.to_string(),
               "nonce":self.nonce})
    }

    /// The `/verify` body, as an official v2 client and resource server would send it.
    pub fn body(&self) -> Value {
        let signature = self.signature.clone().expect("call sign() first");
        json!({"x402Version":2,
               "paymentPayload":{"x402Version":2,"resource":{"url":"https://api.example.com/premium"},
                  "accepted":self.requirements(),
                  "payload":{"signature":signature,"authorization":self.authorization()}},
               "paymentRequirements":self.requirements()})
    }

    /// The same payment as an x402 v1 client and resource server send it (`base-sepolia`).
    pub fn body_v1(&self) -> Value {
        let v2 = self.body();
        json!({"x402Version":1,
               "paymentPayload":{"x402Version":1,"scheme":self.scheme,"network":"base-sepolia",
                  "payload":v2["paymentPayload"]["payload"].clone()},
               "paymentRequirements":{"scheme":self.scheme,"network":"base-sepolia",
                  "maxAmountRequired":self.amount,"resource":"https://api.example.com/premium",
                  "description":"premium","mimeType":"application/json","payTo":self.pay_to,
                  "maxTimeoutSeconds":300,"asset":self.asset,
                  "extra":{"name":self.domain_name,"version":self.domain_version}}})
    }

    /// [`PaymentBuilder::body`] with `extensions` in the payment payload (v2).
    pub fn body_with_extensions(&self, extensions: Value) -> Value {
        let mut body = self.body();
        body["paymentPayload"]["extensions"] = extensions;
        body
    }

    /// The id of this payment's record in DynamoDB, as the facilitator builds it.
    pub fn record_id(&self) -> String {
        self.payment_id().to_string()
    }

    /// The id of this payment's record, typed.
    pub fn payment_id(&self) -> facilitator::store::PaymentId {
        facilitator::store::PaymentId::new(NETWORK, self.asset, self.from, self.nonce)
    }

    /// Calldata that makes the authorization happen, for tests that use it up on chain first.
    pub fn transfer_calldata(&self) -> Bytes {
        transferWithAuthorizationCall {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
            signature: self.signature.clone().expect("signed"),
        }
        .abi_encode()
        .into()
    }
}

/// A raw HTTP answer: status and JSON (or the text when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// One client for the whole test binary, without idle connection reuse: each `#[tokio::test]` has
/// its own runtime, and a pooled connection opened on a runtime that has ended is dead when the next
/// test picks it up ("error sending request"). Fresh connections to 127.0.0.1 cost nothing.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    })
}

pub async fn post_raw(url: &str, body: Vec<u8>) -> Answer {
    let response = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, json }
}

pub async fn verify(body: &Value) -> Answer {
    post_raw(
        &format!("{}/verify", base_url()),
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

pub async fn settle(body: &Value) -> Answer {
    post_raw(
        &format!("{}/settle", base_url()),
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// The DynamoDB client for the stack's moto.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack().aws_endpoint_url)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

pub async fn get(path: &str) -> Answer {
    let response = http()
        .get(format!("{}{path}", base_url()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    Answer {
        status,
        json: response.json().await.unwrap_or(Value::Null),
    }
}

/// One JSON-RPC call straight to anvil (not through the counting proxy).
pub async fn rpc(method: &str, params: Value) -> Value {
    let request = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
    let answer: Value = http()
        .post(&stack().anvil_url)
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(error) = answer.get("error") {
        panic!("{method} failed: {error}");
    }
    answer["result"].clone()
}

pub async fn block_number() -> u64 {
    u64::from_str_radix(
        rpc("eth_blockNumber", json!([]))
            .await
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

pub async fn token_balance(token: Address, owner: Address) -> U256 {
    let data: Bytes = balanceOfCall { account: owner }.abi_encode().into();
    let out = rpc("eth_call", json!([{"to":token,"data":data},"latest"])).await;
    U256::from_str_radix(out.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Sends a transaction from one of anvil's unlocked accounts and waits for it to be mined;
/// returns its hash.
pub async fn send_from_anvil_account(from: Address, to: Address, data: Bytes) -> String {
    let hash = rpc(
        "eth_sendTransaction",
        json!([{"from":from,"to":to,"data":data}]),
    )
    .await;
    for _ in 0..100 {
        let receipt = rpc("eth_getTransactionReceipt", json!([hash])).await;
        if !receipt.is_null() {
            assert_eq!(
                receipt["status"], "0x1",
                "setup transaction reverted: {receipt}"
            );
            return hash.as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("setup transaction {hash} was not mined");
}

/// A payment's record as stored (strongly consistent read); panics if there is none.
pub async fn payment_record(
    id: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    dynamodb()
        .await
        .get_item()
        .table_name(&stack().payments_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no record {id}"))
}

/// Item counts of the facilitator's DynamoDB tables, to prove verify writes nothing.
pub async fn table_item_counts() -> Vec<(String, usize)> {
    let client = dynamodb().await;
    let mut counts = Vec::new();
    for table in [&stack().payments_table, &stack().lanes_table] {
        let scan = client
            .scan()
            .table_name(table.as_str())
            .send()
            .await
            .unwrap();
        counts.push((table.clone(), scan.items().len()));
    }
    counts
}

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

/// Sets the RPC proxy's fault (infra/stack/rpc_counter.py): `mode` for requests calling any of `methods`
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

/// The facilitator's front ends under test: the local server, and the Lambda functions behind
/// the local stand-in for the HTTP API (infra/lambda/lambda-route.mjs), when infra/test.sh started it.
pub fn front_ends() -> Vec<(&'static str, String)> {
    let mut ends = vec![("local server", base_url())];
    if let Ok(url) = std::env::var("X402_LAMBDA_ROUTE_URL") {
        ends.push(("Lambda functions", url));
    }
    ends
}

/// POSTs a JSON body to `base` + `path`.
pub async fn post_json(base: &str, path: &str, body: &Value) -> Answer {
    post_raw(&format!("{base}{path}"), serde_json::to_vec(body).unwrap()).await
}

/// Keeps every core of the machine busy until dropped: a race that shows only under load must
/// show in the tests that look for it (DEVELOPERS.md: concurrency tests run on a busy machine).
pub struct BusyMachine {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyMachine {
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyMachine { stop, threads }
    }
}

impl Drop for BusyMachine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sets the RPC proxy's fault (infra/stack/rpc_counter.py); the fault is lifted however the test ends.
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

/// A local server of our own, stopped however the test ends.
pub struct LocalServer(std::process::Child);

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts another local server (the binary infra/test.sh names) with the test environment plus
/// `overrides`, on a free port; returns it and its base URL once it answers.
pub async fn start_local_server(overrides: &[(&str, &str)]) -> (LocalServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = std::env::var("X402_LOCAL_SERVER_BIN")
        .expect("X402_LOCAL_SERVER_BIN is set by infra/test.sh");
    let mut command = std::process::Command::new(binary);
    command
        .env("X402_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn");
    for (name, value) in overrides {
        command.env(name, value);
    }
    let server = LocalServer(command.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http().get(format!("{base}/health")).send().await.is_ok() {
            return (server, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the extra local server did not start");
}

pub fn lambda_port() -> String {
    std::env::var("X402_LAMBDA_PORT")
        .expect("X402_LAMBDA_PORT is not set: run the tests through infra/test.sh, which starts cargo lambda watch")
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `cargo lambda invoke <function> --data-file <event>` against the emulator infra/test.sh started:
/// what the function answered (for an HTTP function, the API Gateway response). Blocking.
pub fn invoke(function: &str, event: &str) -> Value {
    let output = std::process::Command::new("cargo")
        .args([
            "lambda",
            "invoke",
            function,
            "--data-file",
            event,
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(lambda_port())
        .current_dir(repo_root())
        .output()
        .expect("cargo lambda is on PATH (infra/test.sh puts it there)");
    assert!(
        output.status.success(),
        "cargo lambda invoke failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The JSON body of an HTTP function's answer (an API Gateway response) from [`invoke`].
pub fn body_of(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("a body")).expect("a JSON body")
}

/// Runs `work` to the end on a thread of its own, with a runtime of its own: how a `Drop` that
/// puts the stack back (mining on, faults off, keys enabled) does async work, since drop cannot
/// await and the test's runtime may be unwinding.
pub fn finish_detached<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    })
    .join();
}
