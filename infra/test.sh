#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, the contract checks, and the integration and
# Lambda tests against a fresh local stack (anvil, moto, the facilitator's local server and its
# Lambda functions under cargo-lambda's runtime emulator), then the interop tests with the official
# x402 SDKs (docs/interop.md). Installs what it needs on first run.
#
#   bash infra/test.sh
#
# Uses its own stack directory and ports (below), so it runs beside a stack started by infra/run.sh.
# Everything it starts is stopped when it exits, whether the tests pass or not.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# Where cargo puts binaries: ./target unless CARGO_TARGET_DIR says otherwise (CI shares one across runs).
export TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

export X402_STACK_DIR="${X402_TEST_STACK_DIR:-$REPO/.local/test-stack}"
export ANVIL_PORT="${TEST_ANVIL_PORT:-18545}" RPC_PROXY_PORT="${TEST_RPC_PROXY_PORT:-18546}" MOTO_PORT="${TEST_MOTO_PORT:-15000}"
export LAMBDA_PORT="${TEST_LAMBDA_PORT:-19000}"
LOCAL_PORT="${TEST_LOCAL_PORT:-14020}"
# The route that puts the Lambda functions behind the facilitator's paths, and the first of the six
# ports the interop tests' own servers listen on.
LAMBDA_ROUTE_PORT="${TEST_LAMBDA_ROUTE_PORT:-$((LOCAL_PORT + 1))}"
INTEROP_PORT="${TEST_INTEROP_PORT:-$((LOCAL_PORT + 2))}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

# What the stack's background processes said, when the run fails: the SQS poller's batches and the
# worker's warnings are where a payment that stayed pending shows why, and CI keeps only this output.
show_stack_logs() {
  local log
  for log in "$X402_STACK_DIR"/logs/sqs-poller-*.log; do
    [[ -f "$log" ]] || continue
    echo "-- $log: its failed batches and errors, then its last lines" >&2
    grep -E 'failed|error|WARNING' "$log" | grep -v ', 0 failed, ' | tail -20 | cut -c1-600 >&2
    tail -5 "$log" >&2
  done
  for log in "$X402_STACK_DIR"/logs/lambda-settle-worker*.log "$X402_STACK_DIR"/logs/*local-server*.log; do
    [[ -f "$log" ]] || continue
    echo "-- $log: its last warnings and errors" >&2
    # Less the emulator's own deadline warning, which every invocation under cargo-lambda logs.
    grep -E 'WARN|ERROR' "$log" | grep -v 'deadline has passed at its start' | tail -20 | cut -c1-600 >&2
  done
}

cleanup() {
  local rc=$?
  set +e
  ((rc == 0)) || show_stack_logs
  [[ -f "$X402_STACK_DIR/run/local-server.pid" ]] && kill "$(cat "$X402_STACK_DIR/run/local-server.pid")" 2>/dev/null
  rm -f "$X402_STACK_DIR/run/local-server.pid"
  [[ -f "$X402_STACK_DIR/run/lambda-route.pid" ]] && kill "$(cat "$X402_STACK_DIR/run/lambda-route.pid")" 2>/dev/null
  rm -f "$X402_STACK_DIR/run/lambda-route.pid"
  # The interop tests stop the local-server they start themselves; this is for a run cut short.
  [[ -f "$X402_STACK_DIR/run/interop-local-server.pid" ]] && kill "$(cat "$X402_STACK_DIR/run/interop-local-server.pid")" 2>/dev/null
  rm -f "$X402_STACK_DIR/run/interop-local-server.pid"
  bash infra/lambda/sqs-poller.sh stop >/dev/null 2>&1
  bash infra/lambda/lambda-emulator.sh stop
  bash infra/stack/stack.sh down >/dev/null
}
trap cleanup EXIT

step "tools"
bash infra/install.sh --if-needed --interop
export PATH="$REPO/.local/venv/bin:$PATH" # cargo-lambda (and the zig it brings)

step "template (cfn-lint, sam validate --lint, only the worker and settle may sign, key custody; the check refuses doctored templates; the deploy docs agree with it)"
bash infra/deploy/install-sam.sh --if-needed
bash infra/deploy/template-check.sh
bash infra/checks/template-check-selftest.sh
.local/sam-venv/bin/python infra/checks/deploy-docs-check.py

step "format and lints (no import cycle among the library's modules, no function over 60 lines)"
python3 infra/checks/import-cycles.py
python3 infra/checks/fn-length.py
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

# Every cargo test run's output is kept, to add up the results at the end.
RESULTS="$(mktemp)"
run_tests() { cargo test --locked "$@" 2>&1 | tee -a "$RESULTS"; }

step "unit tests"
run_tests --workspace --lib --bins --benches

step "the local stack's tables and queues are template.yaml's"
.local/venv/bin/python infra/deploy/resource-parity.py

step "local stack (fresh)"
bash infra/stack/stack.sh down >/dev/null
bash infra/stack/stack.sh up
# shellcheck source=infra/stack/facilitator-env.sh
. infra/stack/facilitator-env.sh
# Short enough that the RPC fault tests do not wait long for the facilitator to give up on a hung RPC.
export X402_RPC_TIMEOUT_MS=2000
# anvil mines at once: follow records and receipts briskly, and give up sooner than in production.
export X402_SETTLE_POLL_MS=250 X402_SETTLE_DEADLINE_MS=15000

step "test contracts (the Permit2 ones paid and settled by the official x402 EVM SDK's own code)"
node infra/stack/check-contracts.mjs
# Before anything tests the facilitator against them: a failure here is the chain's, not the facilitator's.
CONTRACTS_TAP="$(mktemp)"
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$CONTRACTS_TAP" tests/interop/permit2-contracts.test.mjs
printf 'test result: permit2 contracts: %s passed; %s failed\n' \
  "$(sed -n 's/^# pass //p' "$CONTRACTS_TAP")" "$(sed -n 's/^# fail //p' "$CONTRACTS_TAP")" >>"$RESULTS"
rm -f "$CONTRACTS_TAP"

step "moto's patches (self-test: KMS digest signing and key state, DynamoDB transactions and concurrency)"
.local/venv/bin/python infra/stack/moto/selftest.py

step "local SQS event source mapping (self-test against moto and the Lambda emulator)"
.local/venv/bin/python infra/lambda/sqs_poller_selftest.py

step "facilitator: local server on :$LOCAL_PORT, Lambda functions on :$LAMBDA_PORT, SQS poller"
X402_LISTEN="127.0.0.1:$LOCAL_PORT" "$TARGET_DIR/debug/local-server" >"$X402_STACK_DIR/logs/local-server.log" 2>&1 &
echo $! >"$X402_STACK_DIR/run/local-server.pid"
bash infra/lambda/lambda-emulator.sh start
# The settlement queue's consumer, fed as Lambda's SQS event source mapping would feed it.
bash infra/lambda/sqs-poller.sh start settle-worker
export X402_BASE_URL="http://127.0.0.1:$LOCAL_PORT" X402_LAMBDA_PORT="$LAMBDA_PORT"
export X402_LOCAL_SERVER_BIN="$TARGET_DIR/debug/local-server" # tests that need a differently configured server
export X402_LANES_BIN="$TARGET_DIR/debug/lanes" # the lanes tool, which the lane lifecycle test drives
for _ in $(seq 100); do
  curl -fsS "$X402_BASE_URL/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$X402_BASE_URL/health" >/dev/null || { tail -20 "$X402_STACK_DIR/logs/local-server.log" >&2; exit 1; }

# The Lambda functions behind the facilitator's paths, as API Gateway would put them: the
# integration tests that run through both front ends and the interop tests use it.
LAMBDA_ROUTE_LISTEN="127.0.0.1:$LAMBDA_ROUTE_PORT" node infra/lambda/lambda-route.mjs >"$X402_STACK_DIR/logs/lambda-route.log" 2>&1 &
echo $! >"$X402_STACK_DIR/run/lambda-route.pid"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$LAMBDA_ROUTE_PORT") 2>/dev/null && break
  sleep 0.1
done
export X402_LAMBDA_ROUTE_URL="http://127.0.0.1:$LAMBDA_ROUTE_PORT"

step "smoke test (infra/smoke.sh) against the local server and the Lambda functions behind their route"
for url in "$X402_BASE_URL" "$X402_LAMBDA_ROUTE_URL"; do
  SMOKE_RPC_URL="$RPC_URL" SMOKE_ASSET="$X402_TOKEN" SMOKE_TOKEN_NAME="$X402_TOKEN_NAME" \
    SMOKE_TOKEN_VERSION="$X402_TOKEN_VERSION" bash infra/smoke.sh "$url"
done

step "integration and Lambda tests"
run_tests --workspace --test '*'

step "interop: the official x402 SDKs through the local server and through the Lambda functions on :$LAMBDA_ROUTE_PORT"
# Their failures are counted below, so the summary is printed before the script fails.
interop_rc=0
X402_INTEROP_PORT="$INTEROP_PORT" bash tests/interop/run.sh 2>&1 | tee -a "$RESULTS" || interop_rc=$?

# cargo's `test result:` lines and tests/interop/run.sh's `interop result:` lines.
passed=$(awk '/^(test|interop) result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed;?$/) s += $i} END {print s + 0}' "$RESULTS")
failed=$(awk '/^(test|interop) result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed;?$/) s += $i} END {print s + 0}' "$RESULTS")
rm -f "$RESULTS"
echo
echo "tests: $passed passed, $failed failed"
exit "$interop_rc"
