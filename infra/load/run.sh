#!/usr/bin/env bash
# The load harness, end to end, in one command: a fresh local stack on its own ports, our
# facilitator (the local server) and the reference TypeScript facilitator (infra/load/reference)
# on the same anvil through the same counting RPC proxy, the verify/supported load against both,
# the settle load against both (ours: the local server's settle handler plus the settle-worker
# function under cargo-lambda's emulator fed by the SQS poller, every AWS call counted by
# infra/stack/aws_counter.py in front of moto), the Lambda functions' cold start, ours settling again on
# stacks with other lane counts, and the "Load: verify", "Load: settle" and "Cost per payment" sections
# of docs/benchmarks.md rewritten with the figures. Stops everything it started when it exits.
#
#   bash infra/load/run.sh
#
# Takes about 10 minutes once built and installed. Only 127.0.0.1 is ever driven. One run at a time per
# LOAD_STACK_DIR: a second one refuses to start (a lock file there). Env (defaults):
#   LOAD_REQUESTS (3000), LOAD_SECONDS (10)   per facilitator and phase, whichever is reached first
#   LOAD_CONCURRENCY (1,8,32)                 verify concurrency levels; /supported runs at 8
#   LOAD_PERMIT2_REQUESTS (1000)              per verify phase of `exact` Permit2 payments, at the same levels (0 skips them)
#   LOAD_SETTLE_REQUESTS (200), LOAD_SETTLE_SECONDS (20), LOAD_SETTLE_CONCURRENCY (1,8,32)   the same for settle
#   LOAD_SETTLE_POLL_MS (250), LOAD_SETTLE_DEADLINE_MS (25000)   our settle handler's X402_SETTLE_POLL_MS/_DEADLINE_MS
#   LOAD_LANES (2), LOAD_SETTLE_OTHER_LANES (1 4)   the main stack's lanes; lane counts ours settles again with ("" skips)
#   LOAD_NET_LANES (1 2 4), LOAD_NET_CONCURRENCY (8,32), LOAD_NET_RPC_MS (40), LOAD_NET_AWS_MS (15)
#                                             ours settling again per lane count with a deployment's network modelled:
#                                             every chain RPC request and AWS call held that long by the counting proxies ("" skips)
#   X402_LANE_RUNS (unset: off)              passed on to ours as deployed (docs/configuration.md); on to measure a lane's runs
#   X402_SETTLE_SIGNS (unset: on)            as the template deploys it; off measures every payment through the queue
#   LOAD_BIN_DIR ($CARGO_TARGET_DIR or target, /release)   where the built binaries are: release, what
#                                             deploys (a .../debug directory measures debug builds, and the report says so)
#   LOAD_BUILD (1)                            0 measures the binaries as they are, without building first
#   LOAD_RENDER (1)                           0 leaves docs/benchmarks.md alone (a partial or traced run); the
#                                             sections can be rendered later from the JSON (README, "Rendering")
#   LOAD_STACK_DIR (.local/load-stack), LOAD_ANVIL_PORT (28545), LOAD_RPC_PROXY_PORT (28546),
#   LOAD_MOTO_PORT (25000), LOAD_LAMBDA_PORT (29000), LOAD_LOCAL_PORT (24020), LOAD_REFERENCE_PORT (24021),
#   LOAD_AWS_COUNTER_PORT (25001; the worker's is the next one), LOAD_SETTLE_LAMBDA_PORT (29001)
# Results: $LOAD_STACK_DIR/results/{load-verify,load-settle,load-settle-lanes-N,load-settle-net-lanes-N,coldstart}.json; logs in
# $LOAD_STACK_DIR/phase-logs/<phase>, one directory per fresh stack (with the SQS poller's per-batch trace, sqs-poller-trace.jsonl, unless X402_POLLER_TRACE names another file).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

LOAD="$REPO/infra/load"

# shellcheck source=infra/load/lib/common.sh
. "$LOAD/lib/common.sh"
# shellcheck source=infra/load/lib/ours.sh
. "$LOAD/lib/ours.sh"

cleanup() {
  set +e
  stop_settle_worker
  stop_pid load-local-server
  stop_pid load-reference
  stop_pid load-lambda-emulator
  stop_pid load-aws-counter
  bash infra/stack/stack.sh down >/dev/null
  rm -rf "${X402_STACK_DIR:?}/bin" # the binaries' copies: ~300 MB each in a debug build
}
take_lock
trap cleanup EXIT
trap 'exit 130' INT TERM

step "tools and build"
tools_and_build

step "local stack (fresh) in $X402_STACK_DIR"
bash infra/stack/stack.sh down >/dev/null
bash infra/stack/stack.sh up
# shellcheck source=infra/stack/facilitator-env.sh
. infra/stack/facilitator-env.sh
mkdir -p "$RESULTS"
if [[ "$X402_POLLER_TRACE" == "$LOGS/sqs-poller-trace.jsonl" ]]; then : >"$X402_POLLER_TRACE"; fi # this run's only
start_aws_counter

PHASE="verify-settle-coldstart"
step "facilitators: ours on :$LOCAL_PORT, the reference on :$REFERENCE_PORT"
start_local_server
REFERENCE_LISTEN="127.0.0.1:$REFERENCE_PORT" node "$LOAD/reference/server.mjs" >"$LOGS/load-reference.log" 2>&1 &
echo $! >"$RUN/load-reference.pid"
wait_for "http://127.0.0.1:$REFERENCE_PORT/health" "$LOGS/load-reference.log"

step "verify and supported under load"
wait_quiet
# Each phase stops by itself; the timeout only guards against a harness bug.
timeout 900 node "$LOAD/harness.mjs" --stack "$X402_STACK_DIR/stack.json" \
  --target "ours=http://127.0.0.1:$LOCAL_PORT" --target "reference=http://127.0.0.1:$REFERENCE_PORT" \
  --pid "ours=$(cat "$RUN/load-local-server.pid")" --pid "reference=$(cat "$RUN/load-reference.pid")" \
  --chain-pids "$(cat "$RUN/anvil.pid"),$(cat "$RUN/rpc-proxy.pid")" --aws-counter "http://127.0.0.1:$AWS_COUNTER_PORT" \
  --requests "${LOAD_REQUESTS:-3000}" --seconds "${LOAD_SECONDS:-10}" --concurrency "${LOAD_CONCURRENCY:-1,8,32}" \
  --permit2-requests "${LOAD_PERMIT2_REQUESTS:-1000}" \
  --out "$RESULTS/load-verify.json"

step "settle under load ($X402_LANES lanes), ours and the reference"
start_settle_worker
run_settle "$RESULTS/load-settle.json" \
  --target "ours=http://127.0.0.1:$LOCAL_PORT" --target "reference=http://127.0.0.1:$REFERENCE_PORT"
# Nothing else should compete with the cold starts.
stop_settle_worker
stop_pid load-local-server
stop_pid load-reference

step "cold start under cargo-lambda's runtime emulator on :$LAMBDA_PORT"
start_runtime_emulator load-lambda-emulator "$LAMBDA_PORT"
wait_quiet
timeout 300 node "$LOAD/coldstart.mjs" --emulator-port "$LAMBDA_PORT" --bin-dir "$SNAPSHOT" --shown-bin-dir "$SHOWN_BIN_DIR" \
  --functions "$(IFS=,; echo "${FUNCTION_BINS[*]}")" --events "$REPO/events" --logs "$LOGS" --out "$RESULTS/coldstart.json"

stop_pid load-lambda-emulator

# Ours again on a fresh stack with other lane counts: does throughput follow the lanes?
OTHER_SETTLES=()
for lanes in ${LOAD_SETTLE_OTHER_LANES-1 4}; do
  step "settle under load, ours, on a fresh stack with $lanes lane(s)"
  fresh_stack_with_lanes "$lanes" "settle-lanes-$lanes"
  run_settle "$RESULTS/load-settle-lanes-$lanes.json" --target "ours=http://127.0.0.1:$LOCAL_PORT"
  stop_ours
  OTHER_SETTLES+=(--settle-other "$RESULTS/load-settle-lanes-$lanes.json")
done

# And once more per lane count with a deployment's network modelled: on the bare local stack a
# lane's worker is never the limit (moto and the 2 CPUs are), while in AWS a lane is bounded by its
# own round trips. With them held to realistic lengths by the counting proxies, does throughput
# follow the lanes?
NET_SETTLES=()
for lanes in ${LOAD_NET_LANES-1 2 4}; do
  step "settle under load, ours, $lanes lane(s), network modelled (+${LOAD_NET_RPC_MS:-40} ms per RPC, +${LOAD_NET_AWS_MS:-15} ms per AWS call)"
  fresh_stack_with_lanes "$lanes" "settle-net-lanes-$lanes"
  LOAD_SETTLE_CONCURRENCY="${LOAD_NET_CONCURRENCY:-8,32}" run_settle "$RESULTS/load-settle-net-lanes-$lanes.json" \
    --target "ours=http://127.0.0.1:$LOCAL_PORT" --rpc-latency-ms "${LOAD_NET_RPC_MS:-40}" --aws-latency-ms "${LOAD_NET_AWS_MS:-15}"
  stop_ours
  NET_SETTLES+=(--settle-net "$RESULTS/load-settle-net-lanes-$lanes.json")
done

keep_logs ""

if [[ "${LOAD_RENDER:-1}" != 1 ]]; then
  echo "load: LOAD_RENDER=${LOAD_RENDER}: docs/benchmarks.md left as it is; JSON in $RESULTS" >&2
  exit 0
fi
step "docs/benchmarks.md"
node "$LOAD/render.mjs" --verify "$RESULTS/load-verify.json" --coldstart "$RESULTS/coldstart.json" \
  --settle "$RESULTS/load-settle.json" "${OTHER_SETTLES[@]}" "${NET_SETTLES[@]}" \
  --doc "$REPO/docs/benchmarks.md" --ours "$SNAPSHOT/local-server" --shown-ours "$SHOWN_BIN_DIR/local-server" \
  --commit "$MEASURED" --command "bash infra/load/run.sh"
node "$LOAD/cost.mjs" --results "$RESULTS" --write "$REPO/docs/benchmarks.md"
echo "load: wrote docs/benchmarks.md (Load: verify, Load: settle, Cost per payment); JSON in $RESULTS" >&2
