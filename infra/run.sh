#!/usr/bin/env bash
# Runs the facilitator on this machine with everything it needs, until Ctrl-C:
#   - the local stack (anvil as Base Sepolia with the test USDC, moto for KMS/DynamoDB/…),
#   - the facilitator at one base URL, http://127.0.0.1:4020 (POST /verify, POST /settle, GET /supported,
#     GET /health), with the settle-worker Lambda fed by a local stand-in for SQS's event source mapping,
#   - the same code as Lambda functions under cargo-lambda's runtime emulator on :9000
#     (cargo lambda invoke verify --data-file events/verify.json -A 127.0.0.1 -P 9000).
# Installs the tools on first run. Everything it starts is stopped when it exits.
#
#   bash infra/run.sh
#
# Env: X402_PORT (4020), LAMBDA_PORT (9000), and the stack's own (infra/README.md).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# Where cargo puts binaries: ./target unless CARGO_TARGET_DIR says otherwise (CI shares one across runs).
export TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export X402_STACK_DIR="${X402_STACK_DIR:-$REPO/.local/stack}"
export LAMBDA_PORT="${LAMBDA_PORT:-9000}"
PORT="${X402_PORT:-4020}"

cleanup() {
  set +e
  bash infra/lambda/sqs-poller.sh stop
  bash infra/lambda/lambda-emulator.sh stop
  bash infra/stack/stack.sh down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash infra/install.sh --if-needed
export PATH="$REPO/.local/venv/bin:$PATH" # cargo-lambda

# --all-targets builds what infra/test.sh builds, so the two share one set of compiled dependencies.
cargo build --workspace --all-targets --locked
bash infra/stack/stack.sh up
# shellcheck source=infra/stack/facilitator-env.sh
. infra/stack/facilitator-env.sh
bash infra/lambda/lambda-emulator.sh start
bash infra/lambda/sqs-poller.sh start settle-worker

cat <<MSG

facilitator: http://127.0.0.1:$PORT   (POST /verify, POST /settle, GET /supported, GET /health)
lambdas:     http://127.0.0.1:$LAMBDA_PORT   (cargo lambda invoke verify --data-file events/verify.json -A 127.0.0.1 -P $LAMBDA_PORT)
try:         curl -s http://127.0.0.1:$PORT/supported
             curl -s http://127.0.0.1:$PORT/verify -H 'content-type: application/json' \\
                  -d "\$(jq -r .body events/verify.json)"
stack:       $X402_STACK_DIR/stack.env (token, payers, lanes); logs in $X402_STACK_DIR/logs
Ctrl-C stops everything.

MSG
X402_LISTEN="127.0.0.1:$PORT" "$TARGET_DIR/debug/local-server"
