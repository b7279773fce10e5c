# The load harness's set-up of ours, shared by infra/load/run.sh and infra/load/memory.sh (sourced,
# after lib/common.sh, with REPO and LOAD set): the ports and directories from the LOAD_* variables
# (run.sh's header lists them), the run's lock, the tools and the binaries' snapshot, and the helpers
# that start and measure our local server and settle worker. Both scripts use the same ports and
# stack directory, so the lock keeps them from running at once.

export X402_STACK_DIR="${LOAD_STACK_DIR:-$REPO/.local/load-stack}"
export ANVIL_PORT="${LOAD_ANVIL_PORT:-28545}" RPC_PROXY_PORT="${LOAD_RPC_PROXY_PORT:-28546}" MOTO_PORT="${LOAD_MOTO_PORT:-25000}"
LAMBDA_PORT="${LOAD_LAMBDA_PORT:-29000}"
LOCAL_PORT="${LOAD_LOCAL_PORT:-24020}"
REFERENCE_PORT="${LOAD_REFERENCE_PORT:-24021}"
AWS_COUNTER_PORT="${LOAD_AWS_COUNTER_PORT:-25001}" AWS_COUNTER_WORKER_PORT=$(( ${LOAD_AWS_COUNTER_PORT:-25001} + 1 ))
SETTLE_LAMBDA_PORT="${LOAD_SETTLE_LAMBDA_PORT:-29001}"
SETTLE_POLL_MS="${LOAD_SETTLE_POLL_MS:-250}" SETTLE_DEADLINE_MS="${LOAD_SETTLE_DEADLINE_MS:-25000}"
export X402_LANES="${LOAD_LANES:-2}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN_DIR="${LOAD_BIN_DIR:-$TARGET_DIR/release}"
SHOWN_BIN_DIR="${BIN_DIR#"$REPO"/}" # as the report names it
RUN="$X402_STACK_DIR/run" LOGS="$X402_STACK_DIR/logs" RESULTS="$X402_STACK_DIR/results"
# The SQS poller's per-batch trace, always on (one short line per batch): settle.mjs reads the queue
# hop of each phase from it. A traced run (README, "Tracing one settlement") names its own file.
export X402_POLLER_TRACE="${X402_POLLER_TRACE:-$LOGS/sqs-poller-trace.jsonl}"

# One run at a time per stack directory, taken before the caller sets its cleanup trap: a second
# run on the same directory and ports would otherwise tear down the first one's stack as it starts,
# and both would measure nonsense.
take_lock() {
  mkdir -p "$X402_STACK_DIR"
  exec 8>"$X402_STACK_DIR/run.lock"
  if ! flock -n 8; then
    echo "load: another run is using $X402_STACK_DIR; wait for it to finish, or give this one its own" \
      "LOAD_STACK_DIR and LOAD_*_PORT values (a process an earlier run left behind holds it too:" \
      "X402_STACK_DIR=$X402_STACK_DIR bash infra/stack/stack.sh down)" >&2
    exit 1
  fi
}

# The install, the npm packages and the build (release by default), then copies of the binaries to
# measure: SNAPSHOT, FUNCTION_BINS and MEASURED (the commit) are set for the caller.
tools_and_build() {
  bash infra/install.sh --if-needed
  export PATH="$REPO/.local/venv/bin:$PATH" # cargo-lambda
  # The harness's own npm packages (the official SDK and viem), exactly as package-lock.json says.
  if [[ ! -f "$LOAD/node_modules/.package-lock.json" || "$LOAD/package-lock.json" -nt "$LOAD/node_modules/.package-lock.json" ]]; then
    (cd "$LOAD" && npm ci --no-audit --no-fund --ignore-scripts)
  fi
  # Release by default, as deployed (about 7 minutes from a cold target directory on 2 cores); the
  # debug directory gets the same build as infra/run.sh and infra/test.sh (a no-op when they have built it).
  if [[ "${LOAD_BUILD:-1}" == 1 && "$BIN_DIR" == "$TARGET_DIR/release" ]]; then
    cargo build --release --workspace --bins --locked ||
      { echo "load: the release build failed; LOAD_BUILD=0 measures the binaries already built" >&2; exit 1; }
  elif [[ "${LOAD_BUILD:-1}" == 1 && "$BIN_DIR" == "$TARGET_DIR/debug" ]]; then
    cargo build --workspace --all-targets --locked ||
      { echo "load: the build failed; LOAD_BUILD=0 measures the binaries already built" >&2; exit 1; }
  fi
  # Measure copies: the target directory is shared, and a build started by someone else during the
  # run would otherwise swap the binaries between the load phases and the cold starts.
  SNAPSHOT="$X402_STACK_DIR/bin"
  mkdir -p "$SNAPSHOT"
  # The local server and every function (lambda-emulator.sh starts each one under functions/).
  FUNCTION_BINS=()
  for dir in "$REPO"/functions/*/; do FUNCTION_BINS+=("$(basename "$dir")"); done
  for bin in local-server "${FUNCTION_BINS[@]}"; do
    [[ -x "$BIN_DIR/$bin" ]] || { echo "load: $BIN_DIR/$bin is not built" >&2; exit 1; }
    cp -p "$BIN_DIR/$bin" "$SNAPSHOT/$bin"
  done
  # Which code that is, named now: the work tree may move on while the load runs.
  MEASURED="$(git rev-parse --short HEAD)"
  if [[ -n "$(git status --porcelain -- lib functions infra/local-server Cargo.toml Cargo.lock)" ]]; then
    MEASURED="$MEASURED with uncommitted changes to the facilitator's sources"
  fi
}

# The counting proxy in front of moto (infra/stack/aws_counter.py): one port for our local server (the
# settle handler), one for the settle worker, so the counts say who made each call. The SQS poller
# (Lambda's event source mapping, not our code) goes to moto directly.
start_aws_counter() {
  "$REPO/.local/venv/bin/python" -u "$REPO/infra/stack/aws_counter.py" "$AWS_ENDPOINT_URL" \
    "$AWS_COUNTER_PORT=settle" "$AWS_COUNTER_WORKER_PORT=settle-worker" >"$LOGS/load-aws-counter.log" 2>&1 &
  echo $! >"$RUN/load-aws-counter.pid"
  wait_for "http://127.0.0.1:$AWS_COUNTER_PORT/__counts" "$LOGS/load-aws-counter.log"
}

# Our local server: verify and the settle handler, its AWS calls through the counter.
start_local_server() {
  AWS_ENDPOINT_URL="http://127.0.0.1:$AWS_COUNTER_PORT" X402_SETTLE_POLL_MS="$SETTLE_POLL_MS" \
    X402_SETTLE_DEADLINE_MS="$SETTLE_DEADLINE_MS" X402_LISTEN="127.0.0.1:$LOCAL_PORT" \
    "$SNAPSHOT/local-server" >"$LOGS/load-local-server.log" 2>&1 &
  echo $! >"$RUN/load-local-server.pid"
  wait_for "http://127.0.0.1:$LOCAL_PORT/health" "$LOGS/load-local-server.log"
}

# The settle-worker function under the emulator (as infra/test.sh runs it), its AWS calls through
# the counter, fed by the SQS poller as Lambda's event source mapping would feed it: one batch (of up
# to 10) per lane at once, lanes side by side, each batch in its own instance of the function.
start_settle_worker() {
  AWS_ENDPOINT_URL="http://127.0.0.1:$AWS_COUNTER_WORKER_PORT" LAMBDA_PORT="$SETTLE_LAMBDA_PORT" \
    SETTLE_WORKER_INSTANCES="$X402_LANES" LAMBDA_BIN_DIR="$SNAPSHOT" bash infra/lambda/lambda-emulator.sh start
  # On a busy machine the poller (boto3's import) can miss sqs-poller.sh's 10 s readiness limit once.
  LAMBDA_PORT="$SETTLE_LAMBDA_PORT" bash infra/lambda/sqs-poller.sh start settle-worker -- --concurrency "$X402_LANES" ||
    LAMBDA_PORT="$SETTLE_LAMBDA_PORT" bash infra/lambda/sqs-poller.sh start settle-worker -- --concurrency "$X402_LANES"
}
stop_settle_worker() {
  bash infra/lambda/sqs-poller.sh stop settle-worker
  bash infra/lambda/lambda-emulator.sh stop
}

# Each stack's logs, kept before the next fresh stack starts over them, in
# $X402_STACK_DIR/phase-logs/<phase>: a stall seen in one phase can then still be read after the run.
PHASE=""
keep_logs() {
  if [[ -n "$PHASE" && -d "$LOGS" ]]; then
    mkdir -p "$X402_STACK_DIR/phase-logs"
    rm -rf "$X402_STACK_DIR/phase-logs/$PHASE"
    cp -r "$LOGS" "$X402_STACK_DIR/phase-logs/$PHASE"
  fi
  PHASE="$1"
}

# A fresh stack with $1 lanes, and ours on it: the local server, the worker and its poller; $2
# names the phase, for its logs.
fresh_stack_with_lanes() {
  keep_logs "$2"
  stop_pid load-aws-counter
  bash infra/stack/stack.sh down >/dev/null
  export X402_LANES="$1"
  bash infra/stack/stack.sh up
  # shellcheck source=infra/stack/facilitator-env.sh
  . infra/stack/facilitator-env.sh
  start_aws_counter
  start_local_server
  start_settle_worker
}
stop_ours() {
  stop_settle_worker
  stop_pid load-local-server
}

# The settle phases against the targets given; $1 is the JSON to write.
run_settle() {
  local out="$1" pids
  shift
  pids="ours=$(cat "$RUN/load-local-server.pid")"
  for pidfile in "$RUN"/lambda-settle-worker*.pid; do pids="$pids,$(cat "$pidfile")"; done
  [[ -f "$RUN/load-reference.pid" ]] && pids="$pids --pid reference=$(cat "$RUN/load-reference.pid")"
  # Everything else ours runs with, for "CPU per settle by process": the AWS emulator and its
  # counting proxy, the chain and its proxy, the SQS poller and the Lambda emulator.
  local infra=() part
  for part in moto load-aws-counter anvil rpc-proxy sqs-poller-settle-worker lambda-emulator; do
    [[ -f "$RUN/$part.pid" ]] && infra+=(--infra-pid "${part#load-}=$(cat "$RUN/$part.pid")")
  done
  wait_quiet
  # shellcheck disable=SC2086 # $pids is two words on purpose
  timeout 1200 node "$LOAD/settle.mjs" --stack "$X402_STACK_DIR/stack.json" "$@" \
    --aws-counter "http://127.0.0.1:$AWS_COUNTER_PORT" --pid $pids "${infra[@]}" --poller-trace "$X402_POLLER_TRACE" \
    --requests "${LOAD_SETTLE_REQUESTS:-200}" --seconds "${LOAD_SETTLE_SECONDS:-20}" \
    --concurrency "${LOAD_SETTLE_CONCURRENCY:-1,8,32}" \
    --settings "X402_SETTLE_POLL_MS=$SETTLE_POLL_MS, X402_SETTLE_DEADLINE_MS=$SETTLE_DEADLINE_MS, X402_SETTLE_SIGNS=$X402_SETTLE_SIGNS" --out "$out"
}
