#!/usr/bin/env bash
# Runs the SDK interop tests (docs/interop.md) against facilitator front ends that are already up:
# the node tests (official npm SDKs, v2 and v1) through both front ends, then the Python SDK's
# facilitator client against the local server. Runs every suite even when one fails, prints one
# `interop result: N passed; M failed` line per suite (infra/test.sh adds them into its total), and
# exits non-zero if any test failed or a suite could not run.
#
#   X402_STACK_DIR=... X402_BASE_URL=http://127.0.0.1:4020 X402_LAMBDA_ROUTE_URL=http://127.0.0.1:4021 \
#     X402_INTEROP_PORT=4022 X402_LOCAL_SERVER_BIN=target/debug/local-server bash tests/interop/run.sh
#
# X402_INTEROP_PORT and the five ports after it are where the tests' own servers listen (one of them
# a local-server started from X402_LOCAL_SERVER_BIN with the facilitator configuration in the
# environment: `. infra/stack/facilitator-env.sh`). Needs `bash infra/install.sh --interop` first
# (infra/test.sh does all of this).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
: "${X402_STACK_DIR:?}" "${X402_BASE_URL:?}" "${X402_LAMBDA_ROUTE_URL:?}" "${X402_INTEROP_PORT:?}" "${X402_LOCAL_SERVER_BIN:?}"
export X402_STACK_DIR X402_BASE_URL X402_LAMBDA_ROUTE_URL X402_INTEROP_PORT X402_LOCAL_SERVER_BIN

status=0
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

# node's TAP reporter ends with `# pass N` and `# fail N`. One file at a time: the tests' set-up
# transactions come from one account, and two processes would race for its nonce.
set +e
(cd "$HERE" && node --test --test-reporter=tap --test-concurrency=1 v2.test.mjs v1.test.mjs permit2-verify.test.mjs permit2-express.test.mjs upto-express.test.mjs) 2>&1 | tee "$OUT"
node_rc=${PIPESTATUS[0]}
set -e
passed="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$OUT")"
failed="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$OUT")"
# A suite whose set-up fails (a port taken, say) cancels its tests: they did not pass, so they count as failed.
cancelled="$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$OUT")"
[[ -n "$failed" ]] && failed=$((failed + ${cancelled:-0}))
if [[ -z "$passed" || -z "$failed" ]]; then
  echo "interop: the node tests printed no totals" >&2
  passed=0 failed=1
fi
((node_rc == 0)) || status=1
node_line="interop result: node SDKs: $passed passed; $failed failed"

# unittest ends with `Ran N tests` and `OK` or `FAILED (failures=a, errors=b)`.
set +e
(cd "$HERE/python" && "$REPO/.local/interop-venv/bin/python" -m unittest -v test_facilitator_client) 2>&1 | tee "$OUT"
python_rc=${PIPESTATUS[0]}
set -e
ran="$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$OUT")"
bad="$(awk '/^FAILED \(/ { while (match($0, /(failures|errors)=[0-9]+/)) { split(substr($0, RSTART, RLENGTH), kv, "="); s += kv[2]; $0 = substr($0, RSTART + RLENGTH) } } END { print s + 0 }' "$OUT")"
if [[ -z "$ran" ]]; then
  echo "interop: the Python tests printed no totals" >&2
  ran=1 bad=1
fi
((python_rc == 0)) || status=1
((python_rc == 0 || bad > 0)) || bad=1 # failed without saying which test: count the suite as one failure

echo
echo "$node_line"
echo "interop result: Python SDK: $((ran - bad)) passed; $bad failed"
exit "$status"
