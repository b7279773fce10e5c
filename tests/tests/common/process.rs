//! Processes and threads the tests start, each stopped however the test ends: a busy machine for
//! the races that show only under load, a local server of the test's own, cargo-lambda invocations,
//! and [`finish_detached`], how a guard's `Drop` puts the stack back.

use std::time::Duration;

use serde_json::Value;

use super::{
    http::http,
    stack::{lambda_port, repo_root},
    wait::eventually,
};

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
    let health = format!("{base}/health");
    eventually(
        "the extra local server answering",
        100,
        Duration::from_millis(50),
        || async { http().get(&health).send().await.map(drop) },
    )
    .await;
    (server, base)
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
