#!/usr/bin/env bash
# Fills a freshly started stack with what the facilitator and the tests expect: compiled
# contracts placed on anvil, funded tokens and accounts, KMS lane keys (checked to sign
# digests correctly), DynamoDB tables, SQS queues; then writes $X402_STACK_DIR/stack.env and stack.json.
# stack.sh up runs it; it may be rerun on a running stack and leaves what exists in place.
# Requires: X402_STACK_DIR ANVIL_PORT RPC_PROXY_PORT MOTO_PORT X402_LANES
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
: "${X402_STACK_DIR:?}" "${ANVIL_PORT:?}" "${RPC_PROXY_PORT:?}" "${MOTO_PORT:?}" "${X402_LANES:?}"

# moto accepts any credentials; fixed ones keep a developer's real AWS profile out of it.
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export STACK_DIR="$X402_STACK_DIR"
export ANVIL_URL="http://127.0.0.1:$ANVIL_PORT"
export RPC_URL="http://127.0.0.1:$RPC_PROXY_PORT" RPC_PROXY_URL="http://127.0.0.1:$RPC_PROXY_PORT"
export CONTRACTS_DIR="$REPO/.local/contracts"
export AWS_JSON="$X402_STACK_DIR/run/aws.json"
mkdir -p "$X402_STACK_DIR/run"

node "$INFRA/node/compile.mjs" "$CONTRACTS_DIR" >/dev/null
"$REPO/.local/venv/bin/python" "$INFRA/bootstrap_aws.py" "$X402_LANES" "$INFRA/tables.json" "$INFRA/queues.json" >"$AWS_JSON.tmp"
mv "$AWS_JSON.tmp" "$AWS_JSON"
node "$INFRA/node/bootstrap.mjs"
# bootstrap.mjs knows nothing of the queues; their URLs and ARNs are added to what it wrote.
"$REPO/.local/venv/bin/python" "$INFRA/bootstrap_aws.py" --publish "$AWS_JSON" "$X402_STACK_DIR"
