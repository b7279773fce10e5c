#!/usr/bin/env bash
# What a Lambda memory size does to our latency: the load harness's concurrency-1 verify and settle
# phases, run again with our processes held to the CPU share Lambda gives each memory size (one
# vCPU at 1,769 MB; lib/cpu-limit.sh), on one fresh local stack. The local server stands for the
# verify and settle functions (one request at a time, as one Lambda instance serves them), and each
# settle-worker instance gets a share of its own, as each Lambda instance has. moto, anvil, the
# proxies and the load generator are not limited: they stand for AWS and the chain. Writes the
# "Lambda memory and CPU" section of docs/benchmarks.md (infra/load/memory.mjs). Each measurement has
# a fresh stack of its own.
#
#   sudo bash infra/load/memory.sh        # as root: it writes cgroups; about 15 minutes once built
#
# Env (defaults): LOAD_MEMORY_MB (128 256 512 1024 1769), LOAD_CFS_PERIODS_US (20000 100000: the
#   CFS periods to try, as AWS does not publish its own), LOAD_MEMORY_SIGNS (on off: X402_SETTLE_SIGNS
#   for the settle phases; off sends every payment through the queue and the worker),
#   LOAD_MEMORY_VERIFIES (1000), LOAD_MEMORY_SETTLES (200), LOAD_MEMORY_COLD_RUNS (5: cold starts per
#   function and size, in the first period), LOAD_RENDER (1), LOAD_BUILD (1), and the
#   stack's ports and directory as infra/load/run.sh takes them (the same defaults: not at the same
#   time as run.sh, which the lock enforces).
# Results: $LOAD_STACK_DIR/results/memory/{verify,settle-<signs>,coldstart}-<MB>-<period>.json and
# memory.json (the summary).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
LOAD="$REPO/infra/load"

# shellcheck source=infra/load/lib/common.sh
. "$LOAD/lib/common.sh"
# shellcheck source=infra/load/lib/ours.sh
. "$LOAD/lib/ours.sh"
# shellcheck source=infra/load/lib/cpu-limit.sh
. "$LOAD/lib/cpu-limit.sh"

MEMORY_MB="${LOAD_MEMORY_MB:-128 256 512 1024 1769}"
PERIODS="${LOAD_CFS_PERIODS_US:-20000 100000}"
SIGNS="${LOAD_MEMORY_SIGNS:-on off}"
OUT="$RESULTS/memory"
GROUPS_MADE=()

cleanup() {
  set +e
  stop_settle_worker
  stop_pid load-local-server
  stop_pid load-aws-counter
  stop_pid load-lambda-emulator
  for group in "${GROUPS_MADE[@]}"; do cpu_limit_remove "$group"; done
  bash infra/stack/stack.sh down >/dev/null
  rm -rf "${X402_STACK_DIR:?}/bin"
}
take_lock
# Checked before anything starts: without cgroups there is nothing to measure.
PROBE="$(cpu_limit_create "x402-load-probe-$$")" || exit 1
cpu_limit_remove "$PROBE"
trap cleanup EXIT
trap 'exit 130' INT TERM

step "tools and build"
tools_and_build

rm -rf "$OUT" && mkdir -p "$OUT"
# One cgroup per Lambda instance: the local server, and each settle-worker instance.
SERVER_GROUP="$(cpu_limit_create "x402-load-server-$$")"
GROUPS_MADE+=("$SERVER_GROUP")
for ((i = 1; i <= X402_LANES; i++)); do
  GROUPS_MADE+=("$(cpu_limit_create "x402-load-worker-$i-$$")")
done

# A fresh stack for one measurement ($1 names it), with ours on it in the cgroups: the local
# server with X402_SETTLE_SIGNS=$2, and the settle worker's instances. Fresh each time because
# anvil answers more slowly as its chain grows (the chain floor went from 3 to 15 ms over 20
# phases of one stack), which would make each memory size pay for the ones measured before it.
fresh_stack_in_groups() {
  export X402_SETTLE_SIGNS="$2"
  fresh_stack_with_lanes "$X402_LANES" "memory-$1"
  : >"$X402_POLLER_TRACE"
  cpu_limit_add "$SERVER_GROUP" "$(cat "$RUN/load-local-server.pid")"
  local k=0 pidfile
  for pidfile in "$RUN"/lambda-settle-worker*.pid; do
    k=$((k + 1)) # the worker groups follow the server's
    cpu_limit_add "${GROUPS_MADE[$k]}" "$(cat "$pidfile")"
  done
}

# Every group held to $1 MB's share in periods of $2 µs; prints the quota.
limit_all() {
  local group quota
  for group in "${GROUPS_MADE[@]}"; do quota="$(cpu_limit_set "$group" "$1" "$2")"; done
  echo "$quota"
}

# The settle phase at concurrency 1 into $1, with the server's throttling before and after beside it.
settle_phase() {
  local before
  before="$(cpu_limit_stat "$SERVER_GROUP")"
  LOAD_SETTLE_CONCURRENCY=1 LOAD_SETTLE_REQUESTS="${LOAD_MEMORY_SETTLES:-200}" LOAD_SETTLE_SECONDS=60 \
    run_settle "$1" --target "ours=http://127.0.0.1:$LOCAL_PORT" --floor-sends 20
  echo "{\"before\": \"$before\", \"after\": \"$(cpu_limit_stat "$SERVER_GROUP")\"}" >"${1%.json}.throttle.json"
}

for signs in $SIGNS; do
  for period in $PERIODS; do
    for mb in none $MEMORY_MB; do
      # Unlimited once per mode, as the baseline.
      [[ "$mb" == none && "$period" != "${PERIODS%% *}" ]] && continue
      fresh_stack_in_groups "$signs-$mb-$period" "$signs"
      quota="$(limit_all "$mb" "$period")"
      step "X402_SETTLE_SIGNS=$signs, $mb MB (quota $quota µs per $period µs)"
      if [[ "$signs" == "${SIGNS%% *}" ]]; then
        wait_quiet
        timeout 600 node "$LOAD/harness.mjs" --stack "$X402_STACK_DIR/stack.json" \
          --target "ours=http://127.0.0.1:$LOCAL_PORT" --pid "ours=$(cat "$RUN/load-local-server.pid")" \
          --requests "${LOAD_MEMORY_VERIFIES:-1000}" --seconds 30 --concurrency 1 --permit2-requests 0 \
          --supported-concurrency 1 --out "$OUT/verify-$mb-$period.json"
      fi
      settle_phase "$OUT/settle-$signs-$mb-$period.json"
      stop_ours
    done
  done
done

# Cold starts at each size: each function binary spawned into a cgroup held to that size's share,
# attached to the runtime emulator with its first invoke waiting (coldstart.mjs).
COLD_GROUP="$(cpu_limit_create "x402-load-coldstart-$$")"
GROUPS_MADE+=("$COLD_GROUP")
start_runtime_emulator load-lambda-emulator "$LAMBDA_PORT"
for mb in none $MEMORY_MB; do
  quota="$(cpu_limit_set "$COLD_GROUP" "$mb" "${PERIODS%% *}")"
  step "cold starts, $mb MB (quota $quota µs per ${PERIODS%% *} µs)"
  wait_quiet
  timeout 300 node "$LOAD/coldstart.mjs" --emulator-port "$LAMBDA_PORT" --bin-dir "$SNAPSHOT" \
    --shown-bin-dir "$SHOWN_BIN_DIR" --functions verify,settle,settle-worker --runs "${LOAD_MEMORY_COLD_RUNS:-5}" \
    --events "$REPO/events" --logs "$LOGS" --cgroup "$COLD_GROUP" --memory-mb "${mb/none/1769}" \
    --out "$OUT/coldstart-$mb-${PERIODS%% *}.json"
done
stop_pid load-lambda-emulator
keep_logs ""

step "summary"
RENDER=()
[[ "${LOAD_RENDER:-1}" == 1 ]] && RENDER=(--write "$REPO/docs/benchmarks.md")
node "$LOAD/memory.mjs" --results "$OUT" --commit "$MEASURED" --shown-ours "$SHOWN_BIN_DIR/local-server" "${RENDER[@]}"
