#!/usr/bin/env bash
# Runs the Lambda functions under cargo-lambda's runtime emulator, the way Lambda runs them: the
# emulator serves the Lambda runtime API (invoke with `cargo lambda invoke <fn> --data-file events/…`,
# or HTTP at http://127.0.0.1:$LAMBDA_PORT/lambda-url/<fn>/), and each function binary attaches to it
# through AWS_LAMBDA_RUNTIME_API, exactly as in AWS.
#
# We start the binaries ourselves (`--only-lambda-apis`) instead of letting the emulator `cargo run`
# them, because `cargo run -p <fn>` resolves features for that package alone and would rebuild the
# whole dependency tree a second time next to the workspace build.
#
#   infra/lambda/lambda-emulator.sh start | stop
#
# Needs: the facilitator's configuration in the environment (. infra/stack/facilitator-env.sh), cargo-lambda
# on PATH, the functions built. Env: X402_STACK_DIR, LAMBDA_PORT (9000),
# LAMBDA_BIN_DIR (default: the debug directory of CARGO_TARGET_DIR, or of ./target),
# SETTLE_WORKER_INSTANCES (1): settle-worker processes attached at once. Lambda runs one instance per
# batch in flight, and the SQS poller runs one batch per lane at once; with one instance the
# emulator hands the concurrent invokes to it one after the other. Pid files lambda-<fn>.pid, then
# lambda-settle-worker-2.pid, ... (logs likewise).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="${X402_STACK_DIR:?set X402_STACK_DIR}/run"
LOGS="$X402_STACK_DIR/logs"
LAMBDA_PORT="${LAMBDA_PORT:-9000}"
BIN_DIR="${LAMBDA_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}"
FUNCTIONS=()
for dir in "$REPO"/functions/*/; do FUNCTIONS+=("$(basename "$dir")"); done

stop() {
  for pidfile in "$RUN"/lambda-*.pid; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

start() {
  mkdir -p "$RUN" "$LOGS"
  stop
  trap 'stop' ERR
  setsid cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$LAMBDA_PORT" \
    >"$LOGS/lambda-emulator.log" 2>&1 &
  echo $! >"$RUN/lambda-emulator.pid"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LAMBDA_PORT") 2>/dev/null && break
    kill -0 "$(cat "$RUN/lambda-emulator.pid")" 2>/dev/null || { tail -20 "$LOGS/lambda-emulator.log" >&2; exit 1; }
    sleep 0.1
  done
  local instances=() fn i name count
  for fn in "${FUNCTIONS[@]}"; do
    [[ -x "$BIN_DIR/$fn" ]] || { echo "lambda-emulator: $BIN_DIR/$fn is not built (cargo build --workspace)" >&2; exit 1; }
    count=1
    [[ "$fn" == settle-worker ]] && count="${SETTLE_WORKER_INSTANCES:-1}"
    for ((i = 1; i <= count; i++)); do
      name="$fn"
      ((i == 1)) || name="$fn-$i"
      AWS_LAMBDA_FUNCTION_NAME="$fn" AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 \
        AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$LAMBDA_PORT/.rt/$fn" \
        "$BIN_DIR/$fn" >"$LOGS/lambda-$name.log" 2>&1 &
      echo $! >"$RUN/lambda-$name.pid"
      instances+=("$name")
    done
  done
  # A function that cannot start (bad configuration) exits at once; say so now rather than let the
  # first invoke wait for a function that will never poll.
  sleep 0.3
  for name in "${instances[@]}"; do
    kill -0 "$(cat "$RUN/lambda-$name.pid")" 2>/dev/null || { echo "lambda-emulator: $name exited:" >&2; tail -5 "$LOGS/lambda-$name.log" >&2; exit 1; }
  done
  echo "lambda-emulator: ${instances[*]} at http://127.0.0.1:$LAMBDA_PORT (logs in $LOGS)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
